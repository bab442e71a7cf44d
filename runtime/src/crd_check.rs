//! The start-up check that the bpfpin CRDs are installed, so a binary started before them says so
//! in a sentence instead of logging watch errors forever.

use bpfpin_crds::{BpfNodeState, BpfObject};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum CrdCheckError {
    /// The API server answers, without this CRD.
    #[error(
        "the CustomResourceDefinition {crd} is not installed in this cluster; install the bpfpin CRDs with `kubectl apply -f crds/` (or the Helm chart) and start {binary} again"
    )]
    NotInstalled {
        /// The CRD's name, e.g. `bpfobjects.bpfpin.io`.
        crd: String,
        /// The binary that checked.
        binary: &'static str,
    },
    /// The check could not tell (the API server is down or refuses the list).
    #[error("listing {crd} to check that its CustomResourceDefinition is installed")]
    Unknown {
        /// The CRD's name.
        crd: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
}

/// Lists one `BpfObject` and one `BpfNodeState`; a 404 means the CRD is missing.
pub async fn check_crds(client: &Client, binary: &'static str) -> Result<(), CrdCheckError> {
    check::<BpfObject>(client, binary).await?;
    check::<BpfNodeState>(client, binary).await
}

async fn check<K>(client: &Client, binary: &'static str) -> Result<(), CrdCheckError>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let crd = format!("{}.{}", K::plural(&()), K::group(&()));
    match Api::<K>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            Err(CrdCheckError::NotInstalled { crd, binary })
        }
        Err(source) => Err(CrdCheckError::Unknown { crd, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_crd_is_one_sentence_that_says_how_to_install_it() {
        let e = CrdCheckError::NotInstalled {
            crd: "bpfobjects.bpfpin.io".into(),
            binary: "bpfpin-agent",
        };
        assert_eq!(
            e.to_string(),
            "the CustomResourceDefinition bpfobjects.bpfpin.io is not installed in this cluster; install the bpfpin CRDs with `kubectl apply -f crds/` (or the Helm chart) and start bpfpin-agent again"
        );
        assert_eq!(
            format!("{}.{}", BpfNodeState::plural(&()), BpfNodeState::group(&())),
            "bpfnodestates.bpfpin.io"
        );
    }
}
