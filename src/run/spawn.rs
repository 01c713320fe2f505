//! Starting QEMU: directly (no shell), paused, in its own process group, on the emulator CPUs,
//! with a parent-death signal and its output in `qemu.log`; and QEMU's own words when it
//! refuses to start.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::signal::Signal;

use super::{threads, RunError};
use crate::model::CpuSet;
use crate::plan::Plan;

pub(super) fn setup_error(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Setup {
        path: path.to_path_buf(),
        source,
    }
}

/// Spawns QEMU with the emulator CPU set as its initial affinity.
pub(super) fn spawn_qemu(plan: &Plan, emulator: Option<&CpuSet>) -> Result<Child, RunError> {
    let qemu_log = &plan.paths.qemu_log;
    let log_file = std::fs::File::create(qemu_log).map_err(setup_error(qemu_log))?;
    let log_err = log_file.try_clone().map_err(setup_error(qemu_log))?;
    let mut command = Command::new(&plan.argv[0]);
    command
        .args(&plan.argv[1..])
        .envs(plan.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .process_group(0);
    crate::process::set_parent_death_signal(&mut command, Signal::SIGTERM);
    // Affinity is inherited across fork: QEMU and every thread it creates start on the emulator
    // CPUs; vCPU and iothreads are moved to their own CPUs afterwards.
    let saved = match emulator {
        Some(set) => {
            let saved = threads::own_affinity().ok();
            threads::set_affinity(0, set)?;
            saved
        }
        None => None,
    };
    let spawned = command.spawn().map_err(|source| RunError::Spawn {
        binary: plan.argv[0].clone(),
        source,
    });
    if let Some(saved) = saved {
        let _ = threads::restore_own_affinity(&saved);
    }
    spawned
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(super) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// QEMU ended before the guest ran: its own last words, plus what to do when KVM refused the
/// CPU (the same remedies `check` gives).
pub(super) fn refused(qemu_log: &Path, status: ExitStatus) -> RunError {
    let mut message = tail(qemu_log, 20);
    if crate::qemu_advice::is_kvm_refusal(&message) {
        message.push('\n');
        message.push_str(crate::qemu_advice::KVM_REMEDIES);
    }
    RunError::QemuRefused {
        status: describe_status(status),
        message,
    }
}
