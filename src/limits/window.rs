//! Fixed windows: time is cut into back-to-back windows of `window_ms`, aligned to the Unix
//! epoch (a window starts where `now_ms % window_ms == 0`). Every worker and every Envoy with
//! a synchronised clock agrees on the current window without talking to the others, and a
//! budget is fully restored when a window ends.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: u64,
    pub len_ms: u64,
}

impl Window {
    /// The window that holds `now_ms`. A zero length (refused at configure time) is taken as 1.
    pub fn at(now_ms: u64, len_ms: u64) -> Window {
        let len_ms = len_ms.max(1);
        Window {
            start_ms: now_ms - now_ms % len_ms,
            len_ms,
        }
    }

    pub fn end_ms(&self) -> u64 {
        self.start_ms.saturating_add(self.len_ms)
    }

    /// Milliseconds from `now_ms` until this window ends (at least 1).
    pub fn reset_after_ms(&self, now_ms: u64) -> u64 {
        self.end_ms().saturating_sub(now_ms).max(1)
    }
}

/// Whole seconds for `retry-after` and `x-ratelimit-reset-tokens`: rounded up, at least 1,
/// so a client that waits that long finds the window over.
pub fn seconds_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let w = Window::at(1_700_000_012_345, 60_000);
        assert_eq!(w.start_ms, 1_699_999_980_000);
        assert_eq!(w.end_ms(), 1_700_000_040_000);
        assert_eq!(w.start_ms % 60_000, 0);
        assert_eq!(w.reset_after_ms(1_700_000_012_345), 27_655);
    }

    #[test]
    fn consecutive_instants_share_a_window_until_its_end() {
        let a = Window::at(10_000, 1_000);
        assert_eq!(Window::at(10_999, 1_000), a);
        assert_ne!(Window::at(11_000, 1_000), a);
        assert_eq!(Window::at(11_000, 1_000).start_ms, a.end_ms());
    }

    #[test]
    fn reset_is_never_zero() {
        let w = Window::at(5_000, 1_000);
        assert_eq!(w.reset_after_ms(6_000), 1);
        assert_eq!(w.reset_after_ms(7_000), 1);
        assert_eq!(Window::at(5, 0).len_ms, 1);
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds_ceil(1), 1);
        assert_eq!(seconds_ceil(1000), 1);
        assert_eq!(seconds_ceil(1001), 2);
        assert_eq!(seconds_ceil(0), 1);
    }
}
