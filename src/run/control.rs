//! Watching and stopping a VM from another process: `status`, `stop` and `qmp` talk to the
//! supervisor's state files and to QEMU's second QMP monitor.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::Value;

use super::state::{self, LastRun, RunState, StopRequest};
use super::{latency, threads};
use crate::plan::VmPaths;
use crate::qmp::{Qmp, QmpError};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("VM `{0}` is not running")]
    NotRunning(String),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("cannot signal vmrun (pid {pid}): {errno}")]
    Signal { pid: u32, errno: nix::errno::Errno },
    #[error(
        "vmrun (pid {pid}) did not finish stopping `{name}` within {waited:?}; see its log {log}"
    )]
    StopTimeout {
        name: String,
        pid: u32,
        waited: Duration,
        log: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct VcpuStatus {
    pub index: usize,
    pub thread_id: i32,
    pub affinity: String,
    pub policy: String,
    pub priority: u32,
    /// Total time the thread waited, runnable, for its CPU (the kernel's run delay), in ms.
    pub run_delay_ms: Option<f64>,
    /// Run delay in milliseconds per second, since the supervisor's first sample (the vCPUs
    /// pinned).
    pub run_delay_ms_per_s: Option<f64>,
    /// The same over the last few seconds (`recent_seconds`).
    pub recent_run_delay_ms_per_s: Option<f64>,
    pub recent_seconds: Option<f64>,
    /// Times the thread was preempted.
    pub involuntary_switches: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub name: String,
    pub running: bool,
    /// QEMU's pid.
    pub pid: Option<u32>,
    pub vmrun_pid: Option<u32>,
    pub uptime_seconds: Option<u64>,
    /// QMP's run state: `running`, `paused`, `prelaunch`, `shutdown`...
    pub run_state: Option<String>,
    pub accel: Option<String>,
    pub vcpus: Vec<VcpuStatus>,
    pub last_run: Option<LastRun>,
    /// The processes beside QEMU (the TPM's emulator), for the text view.
    #[serde(skip)]
    pub companions: Vec<state::RunningCompanion>,
    /// Their pids by name, as `NAME_pid` (`swtpm_pid`).
    #[serde(flatten)]
    pub companion_pids: std::collections::BTreeMap<String, u32>,
    /// A URI for remote-viewer, when the VM has a remote display.
    pub display: Option<String>,
    /// KVM's own counters over QMP `query-stats` (QEMU 7.1 and later, under KVM): exits and
    /// halt polling, summed over the vCPUs. None under TCG or an older QEMU.
    pub kvm_stats: Option<KvmStats>,
    /// The passed PCI functions while the VM runs, or those its journal still keeps off
    /// their host driver after it (a device that did not answer): driver and power state.
    pub pci: Vec<crate::host::pci_health::PciFunctionStatus>,
}

/// KVM's counters of all vCPUs together, as the kernel keeps them (binary stats).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvmStats {
    pub vcpus: usize,
    /// Every counter of [`KVM_STATS`] that this kernel reports, by KVM's name.
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// The counters worth showing: how often the guest left the CPU, and what halt polling
/// (the host spinning briefly before it sleeps an idle vCPU) achieved.
const KVM_STATS: &[&str] = &[
    "exits",
    "halt_exits",
    "io_exits",
    "mmio_exits",
    "irq_exits",
    "halt_attempted_poll",
    "halt_successful_poll",
    "halt_poll_invalid",
    "halt_wakeup",
    "halt_poll_success_ns",
    "halt_poll_fail_ns",
    "halt_wait_ns",
];

/// KVM's vCPU counters from a `query-stats` reply (`target: vcpu`), summed; None when QEMU
/// gave none (TCG gives an empty list).
fn kvm_stats(reply: &serde_json::Value) -> Option<KvmStats> {
    let mut stats = KvmStats::default();
    // One entry per vCPU and provider: `provider`, `qom-path`, `stats` of `name` + `value`
    // (histograms are lists and are left out).
    for entry in reply.as_array()?.iter().filter(|e| e["provider"] == "kvm") {
        stats.vcpus += 1;
        for stat in entry["stats"].as_array().into_iter().flatten() {
            let (Some(name), Some(value)) = (stat["name"].as_str(), stat["value"].as_u64()) else {
                continue;
            };
            if KVM_STATS.contains(&name) {
                *stats.counters.entry(name.to_string()).or_default() += value;
            }
        }
    }
    (stats.vcpus > 0).then_some(stats)
}

const CTL_TIMEOUT: Duration = Duration::from_secs(5);

pub fn connect_ctl(paths: &VmPaths) -> Result<Qmp, QmpError> {
    Qmp::connect(&paths.ctl_socket, CTL_TIMEOUT)
}

pub fn status(paths: &VmPaths, name: &str) -> Status {
    let last_run: Option<LastRun> = state::read_last_run(paths);
    let Some(run) = state::running(paths) else {
        return Status {
            name: name.to_string(),
            running: false,
            pid: None,
            vmrun_pid: None,
            uptime_seconds: None,
            run_state: None,
            accel: None,
            vcpus: Vec::new(),
            last_run,
            companions: Vec::new(),
            companion_pids: Default::default(),
            display: None,
            kvm_stats: None,
            pci: Vec::new(),
        };
    };
    let (run_state, cpus, kvm) = match connect_ctl(paths) {
        Ok(mut qmp) => {
            let run_state = qmp
                .execute("query-status", None)
                .ok()
                .and_then(|s| s["status"].as_str().map(str::to_string));
            let cpus = qmp.execute("query-cpus-fast", None).ok();
            // Asked only under KVM; a QEMU before 7.1 answers CommandNotFound: no stats.
            let kvm = (run.accel == "kvm")
                .then(|| {
                    qmp.execute("query-stats", Some(serde_json::json!({"target": "vcpu"})))
                        .ok()
                })
                .flatten()
                .as_ref()
                .and_then(kvm_stats);
            (run_state, cpus, kvm)
        }
        Err(_) => (None, None, None),
    };
    let samples: Option<latency::Samples> = state::read_json(&paths.sched_samples);
    let now = latency::unix_ms();
    let vcpus = super::pin::vcpu_report(run.qemu_pid, cpus.as_ref())
        .unwrap_or_default()
        .into_iter()
        .map(|(index, info)| {
            let counters = threads::sched_counters(run.qemu_pid, info.tid);
            let current = latency::Sample {
                unix_ms: now,
                vcpus: counters.iter().map(|c| (index, *c)).collect(),
            };
            let rate =
                |earlier: &latency::Sample| latency::delay_ms_per_second(earlier, &current, index);
            VcpuStatus {
                index,
                thread_id: info.tid,
                affinity: info.affinity,
                policy: info.policy,
                priority: info.priority,
                run_delay_ms: counters.map(|c| c.wait_ns as f64 / 1e6),
                run_delay_ms_per_s: samples.as_ref().and_then(|s| rate(&s.first)),
                recent_run_delay_ms_per_s: samples.as_ref().and_then(|s| rate(&s.recent)),
                recent_seconds: samples
                    .as_ref()
                    .map(|s| now.saturating_sub(s.recent.unix_ms) as f64 / 1000.0),
                involuntary_switches: counters.map(|c| c.involuntary_switches),
            }
        })
        .collect();
    Status {
        name: name.to_string(),
        running: true,
        pid: Some(run.qemu_pid),
        vmrun_pid: Some(run.vmrun_pid),
        uptime_seconds: Some(state::unix_now().saturating_sub(run.started_unix)),
        run_state,
        accel: Some(run.accel.clone()),
        vcpus,
        last_run,
        companion_pids: run
            .companions
            .iter()
            .map(|companion| (format!("{}_pid", companion.name), companion.pid))
            .collect(),
        companions: run.companions.clone(),
        display: run.display.clone(),
        kvm_stats: kvm,
        pci: Vec::new(),
    }
}

/// Asks the supervisor for the graceful sequence and waits until its teardown is done, calling
/// `waiting` while it waits (a countdown on a terminal). Returns how the run ended.
pub fn stop(
    paths: &VmPaths,
    name: &str,
    timeout: Option<Duration>,
    force: bool,
    patience: Duration,
    waiting: &mut dyn FnMut(),
) -> Result<LastRun, ControlError> {
    let Some(run) = state::running(paths) else {
        return Err(ControlError::NotRunning(name.to_string()));
    };
    // This run, not whatever later holds its pid or recreates its files, is waited for.
    let started = state::start_ticks(run.vmrun_pid);
    state::write_json(
        &paths.stop_request,
        &StopRequest {
            timeout_seconds: timeout.map(|t| t.as_secs()),
            force,
        },
    )?;
    kill(Pid::from_raw(run.vmrun_pid as i32), Signal::SIGTERM).map_err(|errno| {
        ControlError::Signal {
            pid: run.vmrun_pid,
            errno,
        }
    })?;
    wait_for_teardown(paths, &run, started, patience, waiting)?;
    Ok(state::read_last_run(paths).unwrap_or(LastRun {
        exit_code: 1,
        outcome: "vmrun ended without recording how".into(),
        finished_unix: state::unix_now(),
    }))
}

/// Waits until the supervisor that was signalled (the process `run.vmrun_pid` that started at
/// `started` ticks) is gone. Not the lock's path: a new run of the same VM recreates it.
fn wait_for_teardown(
    paths: &VmPaths,
    run: &RunState,
    started: Option<u64>,
    patience: Duration,
    waiting: &mut dyn FnMut(),
) -> Result<(), ControlError> {
    let same_run = || {
        state::process_alive(run.vmrun_pid, "vmrun") && state::start_ticks(run.vmrun_pid) == started
    };
    let begun = Instant::now();
    while same_run() {
        waiting();
        if begun.elapsed() > patience {
            return Err(ControlError::StopTimeout {
                name: run.name.clone(),
                pid: run.vmrun_pid,
                waited: patience,
                log: paths.log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One QMP command on the VM's second monitor; returns QEMU's `return` value.
pub fn qmp_command(
    paths: &VmPaths,
    name: &str,
    command: &str,
    arguments: Option<Value>,
) -> Result<Value, ControlError> {
    if state::running(paths).is_none() {
        return Err(ControlError::NotRunning(name.to_string()));
    }
    let mut qmp = connect_ctl(paths)?;
    Ok(qmp.execute(command, arguments)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BaseDirs;

    #[test]
    fn stop_waits_for_the_run_it_signalled_not_for_the_lock_path() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDirs {
            state: dir.path().join("state"),
            runtime: dir.path().join("run"),
        };
        let paths = VmPaths::new(&base, &"vm".parse().unwrap()).unwrap();
        std::fs::create_dir_all(&paths.runtime_dir).unwrap();
        // A new run of the same VM has made the lock again.
        std::fs::write(&paths.lock, "1\n").unwrap();
        // The signalled supervisor has exited (a child of this test, reaped).
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        let run = RunState {
            name: "vm".into(),
            profile: "vm.toml".into(),
            vmrun_pid: pid,
            qemu_pid: pid,
            started_unix: 0,
            accel: "tcg".into(),
            companions: Default::default(),
            display: None,
            realtime_cpus: Vec::new(),
            pci: Vec::new(),
        };
        let mut waited = 0;
        let result = wait_for_teardown(
            &paths,
            &run,
            Some(1),
            Duration::from_millis(300),
            &mut || waited += 1,
        );
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(waited, 0, "nothing to wait for");
    }

    #[test]
    fn kvm_stats_are_summed_over_the_vcpus_and_tcg_has_none() {
        let reply = serde_json::json!([
            {"provider": "kvm", "qom-path": "/machine/unattached/device[0]",
             "stats": [{"name": "exits", "value": 10}, {"name": "halt_exits", "value": 2},
                       {"name": "halt_poll_fail_hist", "value": [1, 2]}]},
            {"provider": "kvm", "qom-path": "/machine/unattached/device[1]",
             "stats": [{"name": "exits", "value": 5}, {"name": "unknown_counter", "value": 9}]}
        ]);
        let stats = kvm_stats(&reply).unwrap();
        assert_eq!(stats.vcpus, 2);
        assert_eq!(stats.counters["exits"], 15);
        assert_eq!(stats.counters["halt_exits"], 2);
        assert_eq!(stats.counters.len(), 2, "{stats:?}");
        assert_eq!(kvm_stats(&serde_json::json!([])), None);
    }
}
