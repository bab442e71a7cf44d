//! Durations as the agent's and the operator's flags (and the chart's values) spell them: a
//! number of seconds (`90`, `1.5`), or numbers with units `ms`, `s`, `m`, `h`, possibly several
//! (`500ms`, `30s`, `1m30s`, `1.5h`): the subset of Go's `time.ParseDuration` that Kubernetes
//! users know. One parser, so that both binaries accept the same words.

use std::time::Duration;

/// Parses a duration; zero is allowed (see [`parse_positive`]).
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let example = "such as 500ms, 30s, 1m30s or 1h";
    if s.is_empty() {
        return Err(format!("empty duration: use a duration {example}"));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(s, secs);
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration {example}"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += number
            * match &rest[..unit_len] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                unit => {
                    return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h"));
                }
            };
        rest = &rest[unit_len..];
    }
    seconds(s, total)
}

/// Parses a duration that must be more than zero (an interval).
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err(format!("{:?} must be a positive duration", text.trim()));
    }
    Ok(d)
}

fn seconds(s: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a duration that fits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, want) in [
            ("90", 90_000),
            ("90s", 90_000),
            ("1.5s", 1_500),
            ("500ms", 500),
            ("2m", 120_000),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
            ("1.5h", 5_400_000),
            ("0s", 0),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_millis(want)), "{text}");
        }
        for bad in ["", "s", "-1s", "1.2.3s", "10d", "1m30"] {
            assert!(parse(bad).is_err(), "{bad:?} is refused");
        }
        assert!(parse("5d").expect_err("days").contains("unknown unit"));
        assert!(parse_positive("0s").is_err());
        assert_eq!(parse_positive("30s"), Ok(Duration::from_secs(30)));
    }

    /// The agent's intervals (`--heartbeat-interval`, `--fetch-timeout`): zero is refused.
    #[test]
    fn positive_durations() {
        assert_eq!(parse_positive("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_positive("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_positive("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_positive("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_positive("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_positive("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_positive("0s").is_err());
        assert!(parse_positive("10d").is_err());
        assert!(parse_positive("s").is_err());
    }

    /// The operator's `--stale-after` and `--debounce` (where `0s` is allowed).
    #[test]
    fn operator_durations() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
        assert!(parse("5d").expect_err("days").contains("unknown unit"));
    }
}
