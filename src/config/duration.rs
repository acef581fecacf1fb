//! Durations written as `"90s"`, `"10m"`, `"1h30m"`.

use std::time::Duration;

use serde::Deserialize;

/// A duration written as `"90s"`, `"10m"`, `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Seconds).map_err(serde::de::Error::custom)
    }
}

/// Parses `"90s"`, `"10m"`, `"1h30m"`, `"2h"`: whole numbers, each followed by `h`, `m` or `s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = || format!("invalid duration `{text}`, expected e.g. \"90s\", \"10m\" or \"1h30m\"");
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
            _ => return Err(expected()),
        };
        let n: u64 = digits.parse().map_err(|_| expected())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(expected)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(expected());
    }
    Ok(Duration::from_secs(total))
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
}
