//! Dates in mail headers: RFC 5322 §3.3 date-time in UTC (for `Received:`,
//! `Date:` of DSNs, `Arrival-Date:`) and a compact ISO 8601 form for
//! listings. Input: the host's own clock readings (milliseconds since the
//! Unix epoch).

const WDAY: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MON: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split(unix_ms: u64) -> (i64, i64, (i64, u32, u32)) {
    let secs = (unix_ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    (days, secs.rem_euclid(86_400), civil_from_days(days))
}

/// `Thu, 1 Jan 1970 00:00:00 +0000`
pub fn rfc5322(unix_ms: u64) -> String {
    let (days, rem, (y, m, d)) = split(unix_ms);
    let wday = WDAY
        .get(days.rem_euclid(7) as usize)
        .copied()
        .unwrap_or("Thu");
    let mon = MON
        .get(m.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    format!(
        "{wday}, {d} {mon} {y} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `1970-01-01 00:00:00Z`
pub fn iso(unix_ms: u64) -> String {
    let (_, rem, (y, m, d)) = split(unix_ms);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Milliseconds since the Unix epoch of a `SystemTime` (0 before it).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322(1_700_000_000_000),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(
            rfc5322(1_795_599_679_000),
            "Wed, 25 Nov 2026 09:41:19 +0000"
        );
        assert_eq!(iso(1_700_000_000_999), "2023-11-14 22:13:20Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}
