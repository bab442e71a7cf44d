//! Parsers for the cluster-mode flags whose values are not plain strings: durations (`30s`) and
//! the metrics address (`0.0.0.0:8081`, or `none` to serve nothing).

use std::net::SocketAddr;
use std::time::Duration;

/// Parses `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 30s, 5m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

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
