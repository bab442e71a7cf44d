//! The `usdt` attach kind (issue 13): a program written with libbpf's `<bpf/usdt.bpf.h>`
//! (`SEC("usdt")`, `BPF_USDT(...)`) attached at every site of one USDT probe (`DTRACE_PROBEn` of
//! `<sys/sdt.h>`) of a binary or shared library on the node. The agent reads the probe's sites
//! and argument locations from the file's `.note.stapsdt` notes, fills the object's
//! `__bpf_usdt_specs` map, and attaches one uprobe per site (link
//! `usdt-<file>-<provider>-<name>-<site>`, `site` counting from 0 in note order).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A USDT probe of a binary or shared library on the node (x86-64 nodes only).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsdtAttach {
    /// Absolute path of the ELF binary or shared library that holds the probe, e.g.
    /// `/usr/lib/x86_64-linux-gnu/libc.so.6`. Its `.note.stapsdt` notes name the probe's sites.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute path to an ELF file on the node"))]
    #[schemars(length(min = 1, max = 4096))]
    pub target: String,
    /// The probe's provider (the first argument of `DTRACE_PROBEn`), e.g. `libc`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("must be a C identifier"))]
    #[schemars(length(min = 1, max = 128))]
    pub provider: String,
    /// The probe's name (the second argument of `DTRACE_PROBEn`), e.g. `setjmp`. Every site of
    /// the probe in the file is attached.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("must be a C identifier"))]
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Only fire in this process. Absent: every process that runs the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

#[cfg(test)]
mod tests {
    use crate::BpfObjectSpec;

    fn check(attach: &str) -> Result<(), String> {
        let yaml = format!("bytecode: {{path: x.o}}\nprograms:\n- name: p\n  attach: {attach}\n");
        let spec: BpfObjectSpec = serde_yaml::from_str(&yaml).map_err(|e| e.to_string())?;
        spec.validate("x").map_err(|e| e.to_string())
    }

    #[test]
    fn usdt_specs() {
        assert_eq!(
            check("{usdt: {target: /usr/bin/x, provider: libc, name: setjmp, pid: 7}}"),
            Ok(())
        );
        for (bad, field) in [
            ("{usdt: {target: x, provider: p, name: n}}", "usdt.target"),
            (
                "{usdt: {target: /a/../b, provider: p, name: n}}",
                "usdt.target",
            ),
            (
                "{usdt: {target: /a, provider: 'p-q', name: n}}",
                "usdt.provider",
            ),
            ("{usdt: {target: /a, provider: p, name: 9n}}", "usdt.name"),
            (
                "{usdt: {target: /a, provider: p, name: n}, uprobe: {target: /a, symbol: s}}",
                "attach",
            ),
        ] {
            let err = check(bad).expect_err(bad);
            assert!(err.contains(field), "{bad}: {err}");
        }
    }
}
