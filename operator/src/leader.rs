//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas can run and only one
//! reconciles. kube 5 ships no elector. Kept instead of `kube-lease-manager` 0.13 (maintained, on
//! kube 5): that crate judges expiry by comparing the holder's `renewTime` with this replica's
//! wall clock (safe only while skew stays under its `grace`), and reports only held / not held,
//! while this one needs no clock agreement and tells a lost lease apart (the process exits).
//! `kube-leader-election` is still on kube 4. This is client-go's algorithm, reduced:
//!
//! - Every write is a `replace` carrying the `resourceVersion` that was read (optimistic
//!   concurrency): of two replicas racing for an expired lease, one gets a 409 Conflict.
//! - Expiry is judged on the local monotonic clock: a lease held by someone else is expired when
//!   its record has not changed for `leaseDurationSeconds` since this replica first saw it, so
//!   clock skew between replicas does not matter.
//! - The leader steps down (and the process exits non-zero) when it has not renewed for
//!   `renew_deadline`, which is shorter than the lease duration, so it stops before anyone else
//!   may take over.
//! - On shutdown the leader releases the lease (empty holder, 1s duration) so a standby takes
//!   over at once.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// The Lease's name.
pub const LEASE_NAME: &str = "bpfpin-operator";

/// Timing and identity of the elector.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (`holderIdentity`).
    pub identity: String,
    /// `leaseDurationSeconds` written: how long others wait for a silent leader.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// How often a standby looks at the lease.
    pub retry_period: Duration,
    /// The leader steps down when it could not renew for this long.
    pub renew_deadline: Duration,
}

impl Settings {
    /// The defaults: 15s lease, renew every 5s, give up after 10s without a renewal.
    pub fn new(namespace: String, identity: String) -> Self {
        Self {
            name: LEASE_NAME.into(),
            namespace,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// `POD_NAME` or the hostname, plus a random suffix so a restarted pod with the same name is a
/// new candidate rather than a holder that believes it still leads.
pub fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| hostname::get().ok().and_then(|h| h.into_string().ok()))
        .unwrap_or_else(|| "bpfpin-operator".into());
    // RandomState is seeded from the OS per process: enough randomness for a suffix.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{base}-{:08x}", h.finish() & 0xffff_ffff)
}

/// This replica's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not holding the lease.
    Standby,
    /// Holding the lease: run the controller.
    Leader,
    /// Held the lease and lost it: stop.
    Lost,
}

/// What the lease says, as far as the decision goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    duration_secs: Option<i32>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: Option<&LeaseSpec>) -> Self {
        let spec = spec.cloned().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0),
            duration_secs: spec.lease_duration_seconds,
            transitions: spec.lease_transitions,
        }
    }
}

/// Remembers the last record read and when it was first seen, on the local monotonic clock.
#[derive(Debug, Default)]
struct Observer {
    last: Option<(Record, Instant)>,
}

impl Observer {
    /// Records `record` read at `now`; returns when this record was first seen.
    fn observe(&mut self, record: &Record, now: Instant) -> Instant {
        match &self.last {
            Some((r, since)) if r == record => *since,
            _ => {
                self.last = Some((record.clone(), now));
                now
            }
        }
    }
}

/// What to do after reading the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// There is no lease: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    TakeOver,
    /// Someone else holds it for at least `expires_in`.
    Follow {
        holder: String,
        expires_in: Duration,
    },
}

/// The election decision: pure, on the lease read, the time its record was first seen unchanged,
/// and now.
fn decide(
    lease: Option<&Record>,
    me: &str,
    unchanged_since: Instant,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    let Some(record) = lease else {
        return Decision::Create;
    };
    let Some(holder) = record.holder.as_deref() else {
        return Decision::TakeOver;
    };
    if holder == me {
        return Decision::Renew;
    }
    let duration = record
        .duration_secs
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(default_duration, Duration::from_secs);
    let expires = unchanged_since + duration;
    if now >= expires {
        Decision::TakeOver
    } else {
        Decision::Follow {
            holder: holder.to_owned(),
            expires_in: expires - now,
        }
    }
}

/// The spec to write for a `Create`, `Renew` or `TakeOver` decision.
fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    settings: &Settings,
    now: Timestamp,
) -> LeaseSpec {
    let duration = i32::try_from(settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let mut spec = current.cloned().unwrap_or_default();
    spec.holder_identity = Some(settings.identity.clone());
    spec.lease_duration_seconds = Some(duration);
    spec.renew_time = Some(MicroTime(now));
    match decision {
        Decision::Create => {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(0);
        }
        Decision::TakeOver => {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        Decision::Renew | Decision::Follow { .. } => {}
    }
    spec
}

/// The spec that releases a lease we hold.
fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        acquire_time: None,
        ..current.clone()
    }
}

/// Runs the election for one replica.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
    observer: Observer,
    role: watch::Sender<Role>,
    last_renewed: Option<Instant>,
}

impl Elector {
    /// An elector using `api` (the Lease namespace's API); `role` is published on the returned
    /// receiver.
    pub fn new(api: Api<Lease>, settings: Settings) -> (Self, watch::Receiver<Role>) {
        let (tx, rx) = watch::channel(Role::Standby);
        (
            Self {
                api,
                settings,
                observer: Observer::default(),
                role: tx,
                last_renewed: None,
            },
            rx,
        )
    }

    fn role(&self) -> Role {
        *self.role.borrow()
    }

    fn set_role(&self, role: Role) {
        if self.role() != role {
            match role {
                Role::Leader => tracing::info!(
                    identity = %self.settings.identity,
                    lease = %format!("{}/{}", self.settings.namespace, self.settings.name),
                    "became leader"
                ),
                Role::Lost => tracing::error!(
                    identity = %self.settings.identity,
                    "lost the leader lease; stopping"
                ),
                Role::Standby => {}
            }
            self.role.send_replace(role);
        }
    }

    /// Campaigns and renews until the lease is lost (returns) or the future is dropped.
    pub async fn run(mut self) {
        loop {
            self.step().await;
            match self.role() {
                Role::Lost => return,
                Role::Leader => tokio::time::sleep(self.settings.renew_period).await,
                Role::Standby => tokio::time::sleep(self.settings.retry_period).await,
            }
        }
    }

    /// A leader that has not renewed for `renew_deadline` has lost the lease.
    fn check_deadline(&self, now: Instant) {
        if self.role() == Role::Leader
            && self
                .last_renewed
                .is_none_or(|t| now.duration_since(t) >= self.settings.renew_deadline)
        {
            self.set_role(Role::Lost);
        }
    }

    async fn step(&mut self) {
        let now = Instant::now();
        let timeout = self.settings.renew_period;
        let name = self.settings.name.clone();
        let current = match tokio::time::timeout(timeout, self.api.get_opt(&name)).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %name, "reading the leader lease");
                self.check_deadline(now);
                return;
            }
            Err(_) => {
                tracing::warn!(lease = %name, "reading the leader lease timed out");
                self.check_deadline(now);
                return;
            }
        };
        let record = current.as_ref().map(|l| Record::of(l.spec.as_ref()));
        let since = record
            .as_ref()
            .map_or(now, |r| self.observer.observe(r, now));
        let decision = decide(
            record.as_ref(),
            &self.settings.identity,
            since,
            now,
            self.settings.lease_duration,
        );
        if let Decision::Follow { holder, expires_in } = &decision {
            if self.role() == Role::Leader {
                tracing::error!(%holder, "another replica holds the leader lease");
                self.set_role(Role::Lost);
            } else {
                tracing::debug!(%holder, ?expires_in, "standing by");
            }
            return;
        }
        let spec = next_spec(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &decision,
            &self.settings,
            Timestamp::now(),
        );
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                resource_version: current
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..current.map(|l| l.metadata).unwrap_or_default()
            },
            spec: Some(spec),
        };
        let pp = PostParams::default();
        let write = async {
            if decision == Decision::Create {
                self.api.create(&pp, &lease).await
            } else {
                self.api.replace(&name, &pp, &lease).await
            }
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(_)) => {
                self.last_renewed = Some(now);
                self.set_role(Role::Leader);
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                tracing::debug!(?decision, "leader lease changed meanwhile");
                self.check_deadline(now);
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, ?decision, lease = %name, "writing the leader lease");
                self.check_deadline(now);
            }
            Err(_) => {
                tracing::warn!(?decision, lease = %name, "writing the leader lease timed out");
                self.check_deadline(now);
            }
        }
    }
}

/// Releases the lease if this replica holds it, so a standby takes over without waiting.
pub async fn release(api: &Api<Lease>, settings: &Settings) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_ref() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return Ok(());
    }
    lease.spec = Some(released_spec(spec, Timestamp::now()));
    api.replace(&settings.name, &PostParams::default(), &lease)
        .await?;
    tracing::info!(identity = %settings.identity, "released the leader lease");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn held_by(holder: &str) -> Record {
        Record {
            holder: Some(holder.into()),
            renew_time: None,
            duration_secs: Some(15),
            transitions: Some(3),
        }
    }

    fn settings() -> Settings {
        Settings::new("kube-system".into(), "me-1".into())
    }

    #[test]
    fn no_lease_is_created() {
        let t = Instant::now();
        assert_eq!(decide(None, "me", t, t, D), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed() {
        let t = Instant::now();
        assert_eq!(
            decide(Some(&held_by("me")), "me", t, t + D * 10, D),
            Decision::Renew
        );
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        let t = Instant::now();
        let released = Record {
            holder: None,
            ..held_by("x")
        };
        assert_eq!(decide(Some(&released), "me", t, t, D), Decision::TakeOver);
    }

    #[test]
    fn others_lease_is_taken_only_after_it_stayed_unchanged_for_its_duration() {
        let t = Instant::now();
        assert_eq!(
            decide(
                Some(&held_by("other")),
                "me",
                t,
                t + Duration::from_secs(5),
                D
            ),
            Decision::Follow {
                holder: "other".into(),
                expires_in: Duration::from_secs(10)
            }
        );
        assert_eq!(
            decide(Some(&held_by("other")), "me", t, t + D, D),
            Decision::TakeOver
        );
        // The lease's own duration wins over the default.
        let short = Record {
            duration_secs: Some(1),
            ..held_by("other")
        };
        assert_eq!(
            decide(Some(&short), "me", t, t + Duration::from_secs(1), D),
            Decision::TakeOver
        );
        let bogus = Record {
            duration_secs: Some(-5),
            ..held_by("other")
        };
        assert!(matches!(
            decide(Some(&bogus), "me", t, t + Duration::from_secs(1), D),
            Decision::Follow { .. }
        ));
    }

    #[test]
    fn observer_restarts_the_clock_when_the_record_changes() {
        let t = Instant::now();
        let mut o = Observer::default();
        let r1 = Record {
            renew_time: Some(Timestamp::UNIX_EPOCH),
            ..held_by("other")
        };
        assert_eq!(o.observe(&r1, t), t);
        assert_eq!(o.observe(&r1, t + Duration::from_secs(5)), t);
        let renewed = Record {
            renew_time: Timestamp::UNIX_EPOCH
                .checked_add(Duration::from_secs(5))
                .ok(),
            ..r1
        };
        let t2 = t + Duration::from_secs(6);
        assert_eq!(o.observe(&renewed, t2), t2);
        // A renewing leader is never taken over.
        assert!(matches!(
            decide(Some(&renewed), "me", t2, t2 + Duration::from_secs(14), D),
            Decision::Follow { .. }
        ));
    }

    #[test]
    fn specs_written() {
        let s = settings();
        let now = Timestamp::UNIX_EPOCH;
        let created = next_spec(None, &Decision::Create, &s, now);
        assert_eq!(created.holder_identity.as_deref(), Some("me-1"));
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.acquire_time, Some(MicroTime(now)));

        let theirs = LeaseSpec {
            holder_identity: Some("other".into()),
            lease_transitions: Some(4),
            acquire_time: Some(MicroTime(now)),
            ..Default::default()
        };
        let later = now.checked_add(Duration::from_secs(60)).expect("time");
        let taken = next_spec(Some(&theirs), &Decision::TakeOver, &s, later);
        assert_eq!(taken.holder_identity.as_deref(), Some("me-1"));
        assert_eq!(taken.lease_transitions, Some(5));
        assert_eq!(taken.acquire_time, Some(MicroTime(later)));

        let renewed = next_spec(
            Some(&taken),
            &Decision::Renew,
            &s,
            later.checked_add(Duration::from_secs(5)).expect("time"),
        );
        assert_eq!(renewed.lease_transitions, Some(5));
        assert_eq!(renewed.acquire_time, Some(MicroTime(later)));
        assert_ne!(renewed.renew_time, taken.renew_time);

        let released = released_spec(&renewed, later);
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, Some(5));
        assert_eq!(Record::of(Some(&released)).holder, None);
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        let a = identity();
        let b = identity();
        assert_ne!(a, b);
        assert!(a.len() > 9, "{a}");
        assert_eq!(
            Record::of(Some(&LeaseSpec {
                holder_identity: Some(String::new()),
                ..Default::default()
            }))
            .holder,
            None,
            "an empty holder is no holder"
        );
    }
}
