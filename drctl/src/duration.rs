//! Durations as people write them in runbooks: `500ms`, `30s`, `15m`, `1h30m`.
//!
//! A bare number is rejected on purpose: `timeout: 30` could mean seconds or
//! milliseconds, and guessing wrong in a DR runbook is expensive.

use std::time::Duration;

use thiserror::Error;

/// Why a duration did not parse; shown after the offending text, e.g.
/// "invalid duration `30`: `30` has no unit (ms, s, m, h, d)".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("empty")]
    Empty,
    #[error("expected a number at `{0}`")]
    ExpectedNumber(String),
    #[error("`{0}` is not a number")]
    NotANumber(String),
    #[error("`{0}` has no unit (ms, s, m, h, d)")]
    NoUnit(String),
    #[error("unknown unit `{0}` (ms, s, m, h, d)")]
    UnknownUnit(String),
    /// One part (`99999999999999h`) does not fit a duration.
    #[error("`{0}` is too large")]
    PartTooLarge(String),
    /// The parts together overflow.
    #[error("too large")]
    TooLarge,
    #[error("longer than a year; that is surely a typo")]
    OverAYear,
}

pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError::ExpectedNumber(rest.to_string()));
        }
        let (num, after) = rest.split_at(digits);
        let value: f64 = num
            .parse()
            .map_err(|_| DurationError::NotANumber(num.to_string()))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            "" => return Err(DurationError::NoUnit(num.to_string())),
            other => return Err(DurationError::UnknownUnit(other.to_string())),
        };
        // try_ variant: a typo like `99999999999999h` must be an error, not a panic.
        let part = Duration::try_from_secs_f64(secs)
            .map_err(|_| DurationError::PartTooLarge(format!("{num}{unit}")))?;
        total = total.checked_add(part).ok_or(DurationError::TooLarge)?;
        if total > Duration::from_secs(366 * 86400) {
            return Err(DurationError::OverAYear);
        }
        rest = next;
    }
    Ok(total)
}

/// Formats compactly for plans and reports: `1.234s`, `15m`, `1h2m3s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        return format!("{:.3}s", d.as_secs_f64());
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(
            parse_duration("30").map_err(|e| e.to_string()),
            Err("`30` has no unit (ms, s, m, h, d)".to_string())
        );
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h2m3s");
    }
}
