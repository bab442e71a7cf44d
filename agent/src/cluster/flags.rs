//! The cluster-mode flag whose value is not a plain string: the metrics address (`0.0.0.0:8081`,
//! or `none` to serve nothing). Durations are [`bpfpin_runtime::duration`]'s.

use std::net::SocketAddr;

/// Where the health and metrics endpoints listen; `None` serves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

/// Parses `host:port` (port 0 picks a free port), or `none` / `off` / `0` to disable.
pub fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    match text.trim() {
        "" | "none" | "off" | "0" => Ok(MetricsAddr(None)),
        addr => addr
            .parse()
            .map(|a| MetricsAddr(Some(a)))
            .map_err(|e| format!("{addr:?} is not an address such as 0.0.0.0:8081 (or none): {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addresses() {
        assert_eq!(parse_metrics_addr("none"), Ok(MetricsAddr(None)));
        assert_eq!(parse_metrics_addr("off"), Ok(MetricsAddr(None)));
        assert_eq!(
            parse_metrics_addr("127.0.0.1:0"),
            Ok(MetricsAddr(Some("127.0.0.1:0".parse().expect("addr"))))
        );
        assert!(parse_metrics_addr("localhost").is_err());
    }
}
