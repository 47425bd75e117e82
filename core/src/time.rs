//! Civil (proleptic Gregorian) dates and days since 1970-01-01, for formatting and
//! parsing timestamps without a date library (Howard Hinnant's algorithms), and
//! the one RFC 3339 form Spine writes timestamps in.

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A instant (microseconds since 1970-01-01 UTC) as RFC 3339 in UTC with exactly
/// six fractional digits: `2026-11-25T11:54:27.058096Z`. Fixed precision keeps the
/// text order of timestamps their time order; the envelope's `time` is written
/// this way by every process.
pub fn rfc3339_micros(unix_micros: i64) -> String {
    const DAY: i64 = 86_400_000_000;
    let micros = unix_micros.rem_euclid(DAY);
    let (year, month, day) = civil_from_days(unix_micros.div_euclid(DAY));
    let secs = micros / 1_000_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        micros % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_fixed_precision() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_764_071_667_058_096),
            "2025-11-25T11:54:27.058096Z"
        );
        assert_eq!(rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            rfc3339_micros(PG_EPOCH_UNIX_MICROS),
            "2000-01-01T00:00:00.000000Z"
        );
        // 2000 is a leap year: day 59 after Postgres's epoch is February 29.
        assert_eq!(
            rfc3339_micros(PG_EPOCH_UNIX_MICROS + 59 * 86_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for d in [-1_000_000, -1, 0, 59, 10_957, 20_000, 1_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
