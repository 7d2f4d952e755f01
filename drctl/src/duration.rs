//! Durations as people write them in runbooks: `500ms`, `30s`, `15m`, `1h30m`.
//!
//! A bare number is rejected on purpose: `timeout: 30` could mean seconds or
//! milliseconds, and guessing wrong in a DR runbook is expensive.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let (num, after) = rest.split_at(digits);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{num}` is not a number"))?;
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
            "" => return Err(format!("`{num}` has no unit (ms, s, m, h, d)")),
            other => return Err(format!("unknown unit `{other}` (ms, s, m, h, d)")),
        };
        // try_ variant: a typo like `99999999999999h` must be an error, not a panic.
        let part =
            Duration::try_from_secs_f64(secs).map_err(|_| format!("`{num}{unit}` is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| "too large".to_string())?;
        if total > Duration::from_secs(366 * 86400) {
            return Err("longer than a year; that is surely a typo".into());
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
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h2m3s");
    }
}
