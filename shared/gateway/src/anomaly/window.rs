//! Window arithmetic in Unix seconds: which bucket an event falls in, which buckets a window
//! covers, and which buckets and counters can be dropped.

use std::time::Duration;

/// Number of sub-buckets that a sliding window is split into.
pub(super) const SUB_BUCKETS: i64 = 12;

/// A sliding window counted in sub-buckets of `width` seconds.
///
/// The width is `window / 12` rounded down, and at least 1 s. An event at time `t` falls in
/// bucket `floor(t / width)`, and the window that ends at bucket `b` is the `ceil(window / width)`
/// buckets up to and including `b`. When the width divides the window, as with the default
/// windows, the window of an event at the last second of a bucket covers exactly the `window`
/// seconds ending at it. For an event at the first second of a bucket it covers
/// `window - width + 1` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlidingWindow {
    window: i64,
    width: i64,
    buckets: i64,
}

impl SlidingWindow {
    pub(super) fn new(window: Duration) -> Self {
        let window = whole_seconds(window);
        let width = (window / SUB_BUCKETS).max(1);
        let buckets = window / width + i64::from(window % width != 0);
        Self { window, width, buckets }
    }

    /// Returns the length of the window in seconds.
    pub(super) fn seconds(self) -> u64 {
        self.window.unsigned_abs()
    }

    pub(super) fn bucket(self, time: i64) -> i64 {
        time.div_euclid(self.width)
    }

    /// Returns the first bucket of the window that ends at `bucket`.
    pub(super) fn first_bucket(self, bucket: i64) -> i64 {
        bucket.saturating_sub(self.buckets - 1)
    }

    /// Returns the oldest bucket to keep when the newest event is in `bucket`. One window more
    /// than the judgement needs is kept, so that an event that arrives late from another
    /// stream shard still finds most of its window.
    pub(super) fn oldest_kept(self, bucket: i64) -> i64 {
        bucket.saturating_sub(2 * self.buckets - 1)
    }

    /// Returns the time after which a counter last updated at `time` contains no bucket that
    /// [`Self::oldest_kept`] would keep.
    pub(super) fn expires_at(self, time: i64) -> i64 {
        time.saturating_add(2 * self.buckets * self.width)
    }

    /// Returns the start of the fixed window of length `window` that contains `time`: the
    /// window that an anomaly is raised once for.
    pub(super) fn window_start(self, time: i64) -> i64 {
        time.div_euclid(self.window) * self.window
    }
}

/// Consecutive fixed windows aligned to multiples of their length since the Unix epoch, with
/// a baseline of the `baseline` windows before the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FixedWindows {
    width: i64,
    baseline: i64,
}

impl FixedWindows {
    pub(super) fn new(window: Duration, baseline: u32) -> Self {
        Self { width: whole_seconds(window), baseline: i64::from(baseline) }
    }

    /// Returns the length of one window in seconds.
    pub(super) fn seconds(self) -> u64 {
        self.width.unsigned_abs()
    }

    /// Returns the number of windows in the baseline.
    pub(super) fn baseline_windows(self) -> i64 {
        self.baseline
    }

    pub(super) fn bucket(self, time: i64) -> i64 {
        time.div_euclid(self.width)
    }

    /// Returns the oldest bucket to keep when the newest event is in `bucket`: the baseline
    /// and one window more, for events that arrive late from another stream shard.
    pub(super) fn oldest_kept(self, bucket: i64) -> i64 {
        bucket.saturating_sub(self.baseline + 1)
    }

    /// Returns the time after which a counter last updated at `time` contains no bucket that
    /// [`Self::oldest_kept`] would keep.
    pub(super) fn expires_at(self, time: i64) -> i64 {
        time.saturating_add((self.baseline + 2).saturating_mul(self.width))
    }

    /// Returns the start of window `bucket` in Unix seconds.
    pub(super) fn start(self, bucket: i64) -> i64 {
        bucket.saturating_mul(self.width)
    }
}

/// Returns the duration in whole seconds, at least 1 and at most a year. The policy allows
/// windows of 1 s to 7 days; the upper clamp only keeps the arithmetic from overflowing for
/// settings built in code.
fn whole_seconds(duration: Duration) -> i64 {
    const YEAR: u64 = 366 * 24 * 3600;
    let seconds = duration.as_secs().clamp(1, YEAR);
    i64::try_from(seconds).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_of_two_minutes_has_twelve_buckets_of_ten_seconds() {
        let window = SlidingWindow::new(Duration::from_secs(120));
        assert_eq!(window.bucket(1_000_009), 100_000);
        assert_eq!(window.first_bucket(100_000), 99_989);
        assert_eq!(window.oldest_kept(100_000), 99_977);
        assert_eq!(window.window_start(1_000_009), 999_960);
    }

    #[test]
    fn sliding_window_shorter_than_twelve_seconds_uses_one_second_buckets() {
        let window = SlidingWindow::new(Duration::from_secs(5));
        assert_eq!(window.bucket(17), 17);
        assert_eq!(window.first_bucket(17), 13);
    }

    #[test]
    fn sliding_window_rounds_the_bucket_count_up() {
        let window = SlidingWindow::new(Duration::from_secs(125));
        assert_eq!(window.bucket(109), 10);
        assert_eq!(window.first_bucket(13), 1);
    }

    #[test]
    fn fixed_windows_keep_the_baseline_and_one_more() {
        let windows = FixedWindows::new(Duration::from_secs(60), 30);
        assert_eq!(windows.bucket(600), 10);
        assert_eq!(windows.oldest_kept(100), 69);
        assert_eq!(windows.start(10), 600);
        assert_eq!(windows.expires_at(0), 32 * 60);
    }
}
