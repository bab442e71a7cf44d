//! What the bpfpin agent (cluster mode) and the operator share at run time, written once: the
//! admin HTTP server with `/healthz`, `/readyz` and a Prometheus `/metrics` ([`admin`]), shutdown
//! on SIGTERM/SIGINT ([`shutdown`]), log setup ([`logs`]), the check that the bpfpin CRDs are
//! installed ([`crd_check`]), and the duration syntax of their flags ([`duration`]). The API
//! contract itself lives in `bpfpin-crds`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod crd_check;
pub mod duration;
pub mod logs;
pub mod shutdown;
