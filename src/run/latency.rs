//! Proof that pinning works: the supervisor samples each vCPU thread's run delay (how long it
//! was runnable but waited for its CPU) every second, and `status` turns the samples into
//! milliseconds of waiting per second, since the vCPUs were pinned and over the last seconds.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::pin;
use super::threads::{self, SchedCounters};

/// Every vCPU's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub unix_ms: u64,
    /// vCPU index → its thread's counters.
    pub vcpus: BTreeMap<usize, SchedCounters>,
}

/// What the supervisor leaves for `status`: its first sample and one from a few seconds ago.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    pub first: Sample,
    pub recent: Sample,
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The vCPU threads' counters now.
pub fn sample(pid: u32) -> Sample {
    let vcpus = pin::vcpu_report(pid, None)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(index, info)| Some((index, threads::sched_counters(pid, info.tid)?)))
        .collect();
    Sample {
        unix_ms: unix_ms(),
        vcpus,
    }
}

/// Milliseconds of run delay per second of wall time between two samples of one vCPU.
pub fn delay_ms_per_second(earlier: &Sample, later: &Sample, vcpu: usize) -> Option<f64> {
    let (before, after) = (earlier.vcpus.get(&vcpu)?, later.vcpus.get(&vcpu)?);
    let wall_ms = later.unix_ms.checked_sub(earlier.unix_ms)?;
    if wall_ms == 0 {
        return None;
    }
    let waited_ms = after.wait_ns.saturating_sub(before.wait_ns) as f64 / 1e6;
    Some(waited_ms * 1000.0 / wall_ms as f64)
}

/// How many seconds "recent" spans.
pub const WINDOW: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_secs(1);

/// The supervisor's sampler: one sample a second, the file rewritten each time.
pub struct Sampler {
    path: PathBuf,
    first: Option<Sample>,
    history: VecDeque<Sample>,
    last: Option<Instant>,
}

impl Sampler {
    pub fn new(path: &Path) -> Self {
        Sampler {
            path: path.to_path_buf(),
            first: None,
            history: VecDeque::new(),
            last: None,
        }
    }

    /// Samples when a second has passed since the last sample; a failed write only costs
    /// `status` its numbers.
    pub fn tick(&mut self, pid: u32) {
        if self.last.is_some_and(|last| last.elapsed() < EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let now = sample(pid);
        if now.vcpus.is_empty() {
            return;
        }
        let first = self.first.get_or_insert_with(|| now.clone()).clone();
        self.history.push_back(now);
        while self.history.len() > WINDOW.as_secs() as usize + 1 {
            self.history.pop_front();
        }
        let recent = self.history.front().cloned().unwrap_or_default();
        let _ = super::state::write_json(&self.path, &Samples { first, recent });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_waiting_per_wall_second() {
        let at = |unix_ms, wait_ns| Sample {
            unix_ms,
            vcpus: [(
                0,
                SchedCounters {
                    wait_ns,
                    ..Default::default()
                },
            )]
            .into(),
        };
        let rate = delay_ms_per_second(&at(1_000, 0), &at(3_000, 500_000_000), 0).unwrap();
        assert!((rate - 250.0).abs() < 1e-9, "{rate}");
        assert_eq!(delay_ms_per_second(&at(1_000, 0), &at(1_000, 5), 0), None);
        assert_eq!(delay_ms_per_second(&at(1_000, 0), &at(2_000, 5), 1), None);
    }
}
