//! Durations as operators write them: `500ms`, `30s`, `15m`, `4h`, `1d`, or sums
//! such as `1h30m`.

use std::time::Duration;

/// Parses a duration string. Returns a message describing what is wrong.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let bytes = s.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("`{s}` is not a duration"));
        }
        let n: u128 = s[start..i]
            .parse()
            .map_err(|_| format!("`{s}` has a number that is too large"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let millis = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{s}` has a number without a unit")),
            u => return Err(format!("`{s}` has an unknown unit `{u}`")),
        };
        total = total
            .checked_add(n.saturating_mul(millis))
            .ok_or_else(|| format!("`{s}` is too long"))?;
    }
    // Ten years is far beyond any sensible timeout or TTL; it also keeps
    // every later addition to a SystemTime from overflowing.
    if total > 10 * 365 * 86_400_000 {
        return Err(format!("`{s}` is longer than ten years"));
    }
    Ok(Duration::from_millis(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "15",
            "m",
            "15x",
            "1.5s",
            "-3s",
            "15 m",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    proptest! {
        #[test]
        fn roundtrips_seconds(n in 0u64..1_000_000) {
            prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
        }

        #[test]
        fn never_panics(s in "\\PC{0,20}") {
            let _ = parse_duration(&s);
        }
    }
}
