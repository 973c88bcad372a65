//! Event-time arithmetic: tumbling windows and UTC formatting.
//!
//! Timestamps are epoch milliseconds in an `i64`. The window of a reading is
//! `[k*size, (k+1)*size)`; Weir names a window by its end, which is what the
//! output tables store in `time`.

/// Window size of the contract job.
pub const ONE_MINUTE_MS: i64 = 60_000;

/// End (exclusive) of the tumbling window that holds `timestamp_ms`.
#[inline]
pub fn window_end(timestamp_ms: i64, size_ms: i64) -> i64 {
    debug_assert!(size_ms > 0);
    timestamp_ms
        .div_euclid(size_ms)
        .saturating_add(1)
        .saturating_mul(size_ms)
}

/// Seconds in ClickHouse's `DateTime` range (`UInt32` seconds since 1970).
pub const DATETIME_MAX_MS: i64 = (u32::MAX as i64) * 1000;

/// Whether an event time can be stored in a ClickHouse `DateTime` column
/// together with its window end.
pub fn in_datetime_range(timestamp_ms: i64, window_size_ms: i64) -> bool {
    timestamp_ms >= 0 && window_end(timestamp_ms, window_size_ms) <= DATETIME_MAX_MS
}

/// `DateTime` seconds of an epoch-millisecond instant already known to be in
/// range (see [`in_datetime_range`]); saturates otherwise.
pub fn datetime_seconds(ms: i64) -> u32 {
    ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32
}

/// `YYYY-MM-DD hh:mm:ss.mmm` in UTC, for logs and the progress display.
/// `i64::MIN`/`i64::MAX` (no watermark yet / end of input) print as words.
pub fn format_utc_ms(ms: i64) -> String {
    if ms == i64::MIN {
        return "-inf".to_string();
    }
    if ms == i64::MAX {
        return "+inf".to_string();
    }
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02}.{milli:03}")
}

/// Howard Hinnant's `civil_from_days`: proleptic Gregorian date of a day
/// count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
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

/// A duration in whole milliseconds (saturating: a duration too long for a
/// `u64` of milliseconds is not one to report exactly).
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The longest a pace makes anyone wait (see [`pace`]).
pub const PACE_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// When the `count`th item is due after the start, at `rate` items per
/// second: `count / rate`, at most [`PACE_MAX`] (a tiny rate is a wait
/// that is checked again later, never a duration too long to add to an
/// instant). `rate` must be positive (spec validation sees to it).
pub fn pace(count: u64, rate: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(count as f64 / rate)
        .map_or(PACE_MAX, |d| d.min(PACE_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_never_overflows() {
        assert_eq!(pace(3, 2.0), std::time::Duration::from_millis(1500));
        assert_eq!(pace(0, 1e-300), std::time::Duration::ZERO);
        assert_eq!(pace(1, 1e-300), PACE_MAX);
        assert_eq!(pace(u64::MAX, f64::MIN_POSITIVE), PACE_MAX);
        // An instant plus the longest pace is an instant.
        let _ = std::time::Instant::now() + pace(u64::MAX, 1e-300);
    }

    #[test]
    fn window_boundaries_are_half_open() {
        assert_eq!(window_end(0, ONE_MINUTE_MS), 60_000);
        assert_eq!(window_end(59_999, ONE_MINUTE_MS), 60_000);
        assert_eq!(window_end(60_000, ONE_MINUTE_MS), 120_000);
        assert_eq!(window_end(-1, ONE_MINUTE_MS), 0);
        assert_eq!(window_end(i64::MAX, ONE_MINUTE_MS), i64::MAX);
    }

    #[test]
    fn datetime_range() {
        assert!(in_datetime_range(0, ONE_MINUTE_MS));
        assert!(!in_datetime_range(-1, ONE_MINUTE_MS));
        assert!(!in_datetime_range(DATETIME_MAX_MS - 1, ONE_MINUTE_MS));
        assert!(in_datetime_range(1_760_000_000_000, ONE_MINUTE_MS));
        assert_eq!(datetime_seconds(1_760_000_000_999), 1_760_000_000);
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_utc_ms(1_760_111_359_123), "2025-10-10 15:49:19.123");
        assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(format_utc_ms(-1), "1969-12-31 23:59:59.999");
        assert_eq!(format_utc_ms(i64::MIN), "-inf");
    }
}
