//! One-line countdowns for long waits (a guest powering off, a device changing driver, the
//! kernel compacting memory for hugepages). Only on a terminal: scripts, cron and logs read
//! stderr line by line, and a line rewritten with `\r` every second would be noise there.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Waits shorter than this show nothing: most kernel waits take milliseconds, and a line that
/// flashes and vanishes only distracts.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Whether a countdown's line is on stderr now, unfinished: any other message must erase it
/// first, or would be glued to its end.
static LINE_SHOWN: AtomicBool = AtomicBool::new(false);

/// Erases a countdown's line, if one is shown; the countdown draws itself again on its next tick.
pub fn clear_line() {
    if LINE_SHOWN.swap(false, Ordering::SeqCst) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

/// A countdown (or, without a deadline, elapsed time) rewritten in place on stderr, and erased
/// when dropped so that the next message starts on a clean line.
pub struct Countdown {
    enabled: bool,
    label: String,
    started: Instant,
    deadline: Option<Instant>,
    shown: Option<u64>,
    /// Said after the seconds left: what happens at the deadline (`then QEMU is forced off`).
    then: Option<String>,
    /// The label once the deadline has passed (`forcing QEMU off`), counting up from it.
    overdue: Option<String>,
}

impl Countdown {
    /// Counts down to `total` from now, or counts up when `total` is `None`. `enabled` is the
    /// caller's verdict on whether progress may be shown at all (not quiet); stderr must also be
    /// a terminal.
    pub fn new(label: impl Into<String>, total: Option<Duration>, enabled: bool) -> Self {
        let started = Instant::now();
        Countdown {
            enabled: enabled && std::io::stderr().is_terminal(),
            label: label.into(),
            started,
            deadline: total.map(|total| started + total),
            shown: None,
            then: None,
            overdue: None,
        }
    }

    /// What the line says happens at the deadline, and its label once the deadline passed.
    pub fn at_deadline(mut self, then: impl Into<String>, overdue: impl Into<String>) -> Self {
        self.then = Some(then.into());
        self.overdue = Some(overdue.into());
        self
    }

    /// Whether the deadline has passed.
    pub fn overdue(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Moves the deadline (a `vmrun stop --timeout` can change it while the guest is asked).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// Redraws the line when the number of seconds it shows has changed.
    pub fn tick(&mut self) {
        if !self.enabled || self.started.elapsed() < SHOW_AFTER {
            return;
        }
        let now = Instant::now();
        let (seconds, text) = match (self.deadline, &self.overdue) {
            (Some(deadline), Some(overdue)) if now >= deadline => {
                let seconds = now.duration_since(deadline).as_secs();
                (seconds, format!("vmrun: {overdue}: {seconds} s"))
            }
            (Some(deadline), _) => {
                let left = deadline.saturating_duration_since(now);
                // Rounded up: "0 s left" while time is still left would read as a hang.
                let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                let then = self
                    .then
                    .as_deref()
                    .map(|then| format!(", {then}"))
                    .unwrap_or_default();
                (
                    seconds,
                    format!("vmrun: {}: {seconds} s left{then}", self.label),
                )
            }
            (None, _) => {
                let seconds = self.started.elapsed().as_secs();
                (seconds, format!("vmrun: {}: {seconds} s", self.label))
            }
        };
        if self.shown == Some(seconds) && LINE_SHOWN.load(Ordering::SeqCst) {
            return;
        }
        self.shown = Some(seconds);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
        LINE_SHOWN.store(true, Ordering::SeqCst);
    }
}

impl Drop for Countdown {
    fn drop(&mut self) {
        if self.shown.is_some() {
            clear_line();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_countdown_never_draws() {
        let mut countdown = Countdown::new("waiting", Some(Duration::from_secs(5)), false);
        countdown.started -= Duration::from_secs(3);
        countdown.tick();
        assert_eq!(countdown.shown, None);
    }
}
