//! Parsers for the cluster-mode flags whose values are not plain strings: durations (`30s`) and
//! the metrics address (`0.0.0.0:8081`, or `none` to serve nothing).

use std::net::SocketAddr;

/// Parses `500ms`, `30s`, `5m`, `1h`, `1m30s`, or a bare number of seconds; zero is refused (one
/// parser for the agent's and the operator's flags: [`bpfpin_crds::duration`]).
pub use bpfpin_crds::duration::parse_positive as parse_duration;

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
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10d").is_err());
        assert!(parse_duration("s").is_err());
    }

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
