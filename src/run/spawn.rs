//! Starting QEMU: directly (no shell), paused, in its own process group, on the emulator CPUs,
//! with a parent-death signal, its output in `qemu.log` and its two QMP monitors as listening
//! sockets vmrun bound; and QEMU's own words when it refuses to start.

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;

use command_fds::{CommandFdExt, FdMapping};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::signal::Signal;

use super::{threads, RunError};
use crate::model::CpuSet;
use crate::plan::argv::{CTL_FD, QMP_FD};
use crate::plan::{Plan, VmPaths};

pub(super) fn setup_error(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Setup {
        path: path.to_path_buf(),
        source,
    }
}

/// The monitors' listening sockets, bound by vmrun before QEMU starts, and the supervisor's
/// connection to the first, made at once: it waits in the socket's backlog until QEMU accepts.
pub(super) struct Monitors {
    qmp: UnixListener,
    ctl: UnixListener,
    pub(super) supervisor: UnixStream,
}

/// Binds both monitor sockets afresh (a file left by a dead run is replaced, never connected
/// to) and connects the supervisor to the first.
pub(super) fn bind_monitors(paths: &VmPaths) -> Result<Monitors, RunError> {
    let bind = |path: &Path| {
        let _ = std::fs::remove_file(path);
        UnixListener::bind(path).map_err(setup_error(path))
    };
    let qmp = bind(&paths.qmp_socket)?;
    let ctl = bind(&paths.ctl_socket)?;
    let supervisor =
        UnixStream::connect(&paths.qmp_socket).map_err(setup_error(&paths.qmp_socket))?;
    Ok(Monitors {
        qmp,
        ctl,
        supervisor,
    })
}

/// Spawns QEMU with its monitors on the file descriptors its argv names. The supervisor
/// itself moves to the emulator CPUs first and stays there: QEMU and every thread it creates
/// inherit them, and no real-time vCPU can starve the supervisor.
pub(super) fn spawn_qemu(
    plan: &Plan,
    emulator: Option<&CpuSet>,
    monitors: Monitors,
) -> Result<(Child, UnixStream), RunError> {
    let qemu_log = &plan.paths.qemu_log;
    let log_file = std::fs::File::create(qemu_log).map_err(setup_error(qemu_log))?;
    let log_err = log_file.try_clone().map_err(setup_error(qemu_log))?;
    let Monitors {
        qmp,
        ctl,
        supervisor,
    } = monitors;
    let mut command = Command::new(&plan.argv[0]);
    command
        .args(&plan.argv[1..])
        .envs(plan.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .process_group(0);
    command
        .fd_mappings(vec![
            FdMapping {
                parent_fd: OwnedFd::from(qmp),
                child_fd: QMP_FD,
            },
            FdMapping {
                parent_fd: OwnedFd::from(ctl),
                child_fd: CTL_FD,
            },
        ])
        .map_err(|error| RunError::Spawn {
            binary: plan.argv[0].clone(),
            source: std::io::Error::other(error.to_string()),
        })?;
    crate::process::set_parent_death_signal(&mut command, Signal::SIGTERM);
    if let Some(set) = emulator {
        threads::set_affinity(0, set)?;
    }
    let child = command.spawn().map_err(|source| RunError::Spawn {
        binary: plan.argv[0].clone(),
        source,
    })?;
    // Dropping the command closes vmrun's copies of the listeners: only QEMU holds them, so
    // the supervisor's connection breaks at once if QEMU dies before accepting it.
    drop(command);
    Ok((child, supervisor))
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// QEMU ended before the guest ran: its own last words, plus what to do when KVM refused the
/// CPU (the same remedies `check` gives).
pub(super) fn refused(qemu_log: &Path, status: ExitStatus) -> RunError {
    let mut message = tail(qemu_log, 20);
    if crate::qemu_advice::is_kvm_refusal(&message) {
        message.push('\n');
        message.push_str(crate::qemu_advice::remedies_for(&message));
    }
    RunError::QemuRefused {
        status: crate::process::describe_exit(&status),
        message,
    }
}
