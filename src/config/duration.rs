//! Durations written as `"90s"`, `"10m"`, `"1h30m"`, read with jiff's friendly format.

use std::time::Duration;

use jiff::SignedDuration;
use jiff::fmt::friendly::SpanParser;
use serde::Deserialize;

/// A duration written as `"90s"`, `"10m"`, `"1h30m"`: whole seconds, longer than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Seconds).map_err(serde::de::Error::custom)
    }
}

/// How every message of [`parse_duration`] starts, so the loader can add the key it was under.
pub(super) const INVALID: &str = "invalid duration";

/// Parses jiff's friendly format: `"90s"`, `"10m"`, `"1h30m"`, also `"1h 30m"` or `"2 hours"`,
/// largest unit first, up to hours. Zero, negative and sub-second values are refused: every
/// duration in the file is a timeout or a window that only makes sense in whole seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    static PARSER: SpanParser = SpanParser::new();
    let parsed: SignedDuration = PARSER
        .parse_duration(text.trim())
        .map_err(|_| format!("{INVALID} `{text}`, expected e.g. \"90s\", \"10m\" or \"1h30m\""))?;
    if parsed.is_zero() || parsed.is_negative() {
        return Err(format!("{INVALID} `{text}`: must be longer than zero"));
    }
    if parsed.subsec_nanos() != 0 {
        return Err(format!("{INVALID} `{text}`: must be a whole number of seconds"));
    }
    Duration::try_from(parsed).map_err(|e| format!("{INVALID} `{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn every_documented_duration_keeps_its_value() {
        // README.md and pipeline.example.toml, plus the old parser's tolerance of padding and zeros.
        for (text, secs) in [
            ("30s", 30),
            ("30m", 1800),
            ("10m", 600),
            ("45m", 2700),
            ("15m", 900),
            ("5m", 300),
            ("60s", 60),
            ("120s", 120),
            ("2m", 120),
            ("2h", 7200),
            ("1h30m", 5400),
            ("1h30m15s", 5415),
            ("1h90m", 9000),
            ("0h5m", 300),
            ("01m", 60),
            (" 90s ", 90),
        ] {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)), "{text:?}");
        }
    }

    #[test]
    fn zero_negative_and_sub_second_durations_say_why() {
        assert_eq!(parse_duration("0s").unwrap_err(), "invalid duration `0s`: must be longer than zero");
        assert_eq!(parse_duration("0h0m").unwrap_err(), "invalid duration `0h0m`: must be longer than zero");
        assert_eq!(parse_duration("-5m").unwrap_err(), "invalid duration `-5m`: must be longer than zero");
        assert_eq!(parse_duration("5m ago").unwrap_err(), "invalid duration `5m ago`: must be longer than zero");
        assert_eq!(parse_duration("1.5s").unwrap_err(), "invalid duration `1.5s`: must be a whole number of seconds");
        assert_eq!(
            parse_duration("bad dur").unwrap_err(),
            "invalid duration `bad dur`, expected e.g. \"90s\", \"10m\" or \"1h30m\""
        );
    }

    /// The hand-written parser jiff replaced, kept as the oracle for the property below.
    fn old_parse_duration(text: &str) -> Option<u64> {
        let mut total: u64 = 0;
        let mut digits = String::new();
        for ch in text.trim().chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            let unit = match ch {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
            let n: u64 = digits.parse().ok()?;
            total = n.checked_mul(unit).and_then(|v| total.checked_add(v))?;
            digits.clear();
        }
        (digits.is_empty() && total != 0).then_some(total)
    }

    proptest::proptest! {
        #[test]
        fn prop_hours_minutes_seconds_parse_as_before(
            h in proptest::option::of(0u64..100_000),
            m in proptest::option::of(0u64..100_000),
            s in proptest::option::of(0u64..100_000),
            zero in proptest::bool::ANY,
            pad in proptest::bool::ANY,
        ) {
            let lead = if zero { "0" } else { "" };
            let mut text = String::new();
            for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
                if let Some(n) = n {
                    text.push_str(&format!("{lead}{n}{unit}"));
                }
            }
            if pad {
                text = format!(" {text}\t");
            }
            let new = parse_duration(&text).ok().map(|d| d.as_secs());
            proptest::prop_assert_eq!(new, old_parse_duration(&text), "{:?}", text);
        }
    }
}
