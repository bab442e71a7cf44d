//! A docker `config.json` (`--registry-auth`, or an `imagePullSecret`'s `.dockerconfigjson`,
//! which any user who can create a Secret writes): `RegistryAuth::from_docker_config` never
//! panics, and its `Debug` form names registries, never a secret.
#![no_main]

use bpfpin_agent::bytecode::image::RegistryAuth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(auth) = RegistryAuth::from_docker_config(data) else {
        return;
    };
    let debug = format!("{auth:?}");
    assert!(debug.starts_with("RegistryAuth"), "{debug}");
    for registry in auth.registries() {
        assert_eq!(
            registry,
            registry.to_ascii_lowercase(),
            "registry keys are normalized"
        );
        assert!(!registry.contains('/'), "{registry:?} is a host, not a URL");
    }
});
