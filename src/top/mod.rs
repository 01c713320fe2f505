//! `vmrun top`: a live view of why a VM stutters. Each second it samples the host (`probe`,
//! through the host root), turns two samples into rates and findings (`report`), keeps each
//! vCPU's last minute of run delay for its sparkline (`History`), and draws it (`ui`).

pub mod probe;
pub mod report;
pub mod ui;

use std::collections::{BTreeMap, VecDeque};

pub use probe::{Probe, VmTarget};
pub use report::Report;

/// Seconds of run delay a sparkline shows.
pub const HISTORY_SECONDS: usize = 60;

/// The last minute of each vCPU's run delay (ms/s), by QEMU pid and vCPU index.
#[derive(Clone, Debug, Default)]
pub struct History(BTreeMap<(u32, usize), VecDeque<f64>>);

impl History {
    pub fn record(&mut self, report: &Report) {
        // VMs that stopped take their history with them.
        self.0
            .retain(|(pid, _), _| report.vms.iter().any(|vm| vm.pid == *pid));
        for vm in &report.vms {
            for vcpu in &vm.vcpus {
                let values = self.0.entry((vm.pid, vcpu.index)).or_default();
                values.push_back(vcpu.run_delay_ms_per_s.unwrap_or(0.0));
                while values.len() > HISTORY_SECONDS {
                    values.pop_front();
                }
            }
        }
    }

    pub fn of(&self, pid: u32, vcpu: usize) -> Option<&VecDeque<f64>> {
        self.0.get(&(pid, vcpu))
    }
}

/// Samples and remembers: each tick after the first gives one interval's report.
pub struct Monitor {
    probe: Probe,
    last: Option<probe::Raw>,
    pub history: History,
}

impl Monitor {
    pub fn new(probe: Probe) -> Self {
        Monitor {
            probe,
            last: None,
            history: History::default(),
        }
    }

    /// Takes a sample now; the report of the interval since the previous one, if any.
    pub fn tick(&mut self, targets: &[VmTarget]) -> Option<Report> {
        let now = self.probe.sample(targets, crate::run::latency::unix_ms());
        let report = self.last.as_ref().map(|last| report::compute(last, &now));
        self.last = Some(now);
        if let Some(report) = &report {
            self.history.record(report);
        }
        report
    }
}

#[cfg(test)]
mod tests;
