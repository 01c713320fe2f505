//! Stage 4: run the plan. Start QEMU paused, pin every vCPU through QMP, resume, supervise,
//! shut down gracefully on request. The host around the run (preparation, restore, the lock)
//! is the application layer's: this module only knows QEMU.
//!
//! By job: `spawn` (QEMU's process), `connect` (QMP while watching QEMU), `pin` (+ `threads`),
//! `supervise` (events, signals, the stop ladder), `state` (lock and state files), `control`
//! (status, stop and qmp from other processes).

pub mod connect;
pub mod control;
pub mod latency;
pub mod pin;
pub mod spawn;
pub mod state;
pub mod supervise;
pub mod threads;
pub mod usb;

use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::exit::ExitCode;
use crate::firmware::ResolvedFirmware;
use crate::host::steps::Companion;
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::Plan;
use crate::qmp::QmpError;
use state::{RunState, StateError};
pub use supervise::SignalWatch;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot create {}: {source}", .path.display())]
    Setup {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {} for QEMU: {source}", .path.display())]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("QEMU refused to start ({status}):\n{message}")]
    QemuRefused { status: String, message: String },
    #[error("QMP: {0}")]
    Qmp(#[from] QmpError),
    #[error("pinning failed: {0}")]
    Pin(#[from] pin::PinError),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
}

impl RunError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RunError::State(StateError::AlreadyRunning { .. }) => ExitCode::AlreadyRunning,
            RunError::QemuRefused { .. } => ExitCode::QemuFailed,
            _ => ExitCode::Failure,
        }
    }
}

impl From<threads::ThreadError> for RunError {
    fn from(error: threads::ThreadError) -> Self {
        RunError::Pin(pin::PinError::Thread(error))
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered itself off (or rebooted into power-off).
    GuestPoweredOff,
    /// A stop was asked for and the guest powered off through ACPI within the timeout.
    StoppedGracefully,
    /// The guest did not power off in time: `stage` is what ended QEMU.
    Forced { stage: &'static str },
    /// QEMU ended on its own with an error, or the guest panicked.
    QemuFailed { detail: String },
}

impl Outcome {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::GuestPoweredOff | Outcome::StoppedGracefully => ExitCode::Ok,
            Outcome::Forced { .. } => ExitCode::Forced,
            Outcome::QemuFailed { .. } => ExitCode::QemuFailed,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::GuestPoweredOff => "the guest powered off".into(),
            Outcome::StoppedGracefully => "the guest shut down on request (ACPI)".into(),
            Outcome::Forced { stage } => {
                format!("the guest did not shut down in time; stopped by {stage}")
            }
            Outcome::QemuFailed { detail } => format!("QEMU failed: {detail}"),
        }
    }
}

/// Told once the VM runs with every vCPU pinned.
pub type ReadyCallback<'a> = Box<dyn FnOnce(&RunState) + 'a>;

/// What the caller of `run` wants besides the plan.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Leave the vCPUs paused after pinning (resume with `vmrun qmp NAME cont`).
    pub paused: bool,
    /// Called once the VM runs with every vCPU pinned (the detached parent's signal).
    pub on_ready: Option<ReadyCallback<'a>>,
    /// A detached supervisor ignores SIGHUP: there is no terminal to hang up.
    pub ignore_hangup: bool,
    /// The processes the host steps keep beside QEMU, watched while the guest runs.
    pub companions: Vec<Companion>,
}

/// Creates a directory only its owner can enter (sockets and logs live there).
pub fn create_private_dir(path: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(spawn::setup_error(path))?;
    check_private_dir(path)?;
    match path.parent() {
        Some(base) if !base.as_os_str().is_empty() => check_private_dir(base),
        _ => Ok(()),
    }
}

/// A directory vmrun keeps its state, lock and journal in must be the caller's (or root's)
/// and writable by nobody else, and not a symlink: another local user who made it first (the
/// default `/tmp/vmrun-UID` of a non-root user) could otherwise plant or replace the files
/// that say whether a VM runs and how to restore the host.
pub fn check_private_dir(path: &Path) -> Result<(), RunError> {
    let refuse = |why: String| {
        spawn::setup_error(path)(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{why}; refusing to use it (remove it, or choose another with --state-dir/--runtime-dir)"),
        ))
    };
    let meta = std::fs::symlink_metadata(path).map_err(spawn::setup_error(path))?;
    if meta.file_type().is_symlink() {
        // Symlinks in the base directories themselves are the administrator's choice; the
        // test below runs on what they point to.
        let target = std::fs::metadata(path).map_err(spawn::setup_error(path))?;
        return check_owner_and_mode(&target, &refuse);
    }
    if !meta.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    check_owner_and_mode(&meta, &refuse)
}

fn check_owner_and_mode(
    meta: &std::fs::Metadata,
    refuse: &dyn Fn(String) -> RunError,
) -> Result<(), RunError> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(refuse(format!(
            "is owned by uid {}, not by you (uid {me}) or root",
            meta.uid()
        )));
    }
    // Sticky directories such as /tmp are no VM's directory; group/other write is refused.
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "is writable by others (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Copies the VARS template to the VM's own file if it has none; never overwrites it.
pub fn ensure_vars_copy(
    firmware: &ResolvedFirmware,
    vars: &Path,
    log: &Log,
) -> Result<bool, RunError> {
    // QEMU gets it read-write: a symlink planted in the state directory would hand it any
    // file root can write.
    match std::fs::symlink_metadata(vars) {
        Ok(meta) if !meta.is_file() => {
            return Err(spawn::setup_error(vars)(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a symlink?); remove it and vmrun makes a fresh copy",
            )))
        }
        _ => {}
    }
    if vars.exists() {
        log.debug(&format!("keeping the VM's VARS {}", vars.display()));
        return Ok(false);
    }
    // Written beside it without following a planted symlink, 0600, renamed into place; the
    // temporary file is removed when the disk is full.
    let template = std::fs::read(&firmware.vars_template.path)
        .map_err(spawn::setup_error(&firmware.vars_template.path))?;
    crate::fsutil::write_replace(vars, &template, 0o600).map_err(spawn::setup_error(vars))?;
    log.info(&format!(
        "created the VM's VARS {} from {}",
        vars.display(),
        firmware.vars_template.path.display()
    ));
    Ok(true)
}

/// Starts QEMU, pins, resumes and supervises it until it exits. `Err` only for failures
/// before the guest ran; once it runs, every ending is an `Outcome`. No QEMU outlives this.
pub fn run_qemu(
    config: &VmConfig,
    plan: &Plan,
    signals: &mut SignalWatch,
    options: RunOptions,
    log: &Log,
) -> Result<Outcome, RunError> {
    if let Some(set) = &plan.emulator_cpus {
        log.debug(&format!("QEMU starts on the emulator CPUs {set}"));
    }
    let base_mode = spawn::prepare_qemu_dir(&plan.paths, plan.qemu_user.as_ref())?;
    let outcome = run_prepared(config, plan, signals, options, log);
    // The base directory's own mode is lent to QEMU for the run only.
    if let Some((base, mode)) = base_mode {
        use std::os::unix::fs::PermissionsExt;
        if let Err(error) = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(mode)) {
            log.warn(&format!(
                "could not give {} its mode {mode:04o} back: {error}",
                base.display()
            ));
        }
    }
    outcome
}

fn run_prepared(
    config: &VmConfig,
    plan: &Plan,
    signals: &mut SignalWatch,
    options: RunOptions,
    log: &Log,
) -> Result<Outcome, RunError> {
    let memlock = match spawn::grantable_memlock(plan.memlock_bytes) {
        Ok(memlock) => memlock,
        Err((wanted, hard)) => {
            log.warn(&format!(
                "QEMU may lock only {} MiB of memory and vmrun cannot raise that (no \
                 CAP_SYS_RESOURCE); VFIO needs {} MiB and may fail to map the guest's RAM",
                hard >> 20,
                wanted >> 20
            ));
            None
        }
    };
    let monitors = spawn::bind_monitors(&plan.paths)?;
    let (mut child, qmp_stream) =
        spawn::spawn_qemu(plan, plan.emulator_cpus.as_ref(), memlock, monitors)?;
    log.phase("spawn");
    // For scripts; vmrun itself finds QEMU through its run state.
    let _ = crate::fsutil::write_replace(
        &plan.paths.pidfile,
        format!("{}\n", child.id()).as_bytes(),
        0o644,
    );
    match &plan.qemu_user {
        Some(user) => log.info(&format!(
            "QEMU started paused, pid {}, as {} (uid {}, gid {})",
            child.id(),
            user.name,
            user.uid,
            user.gid
        )),
        None => log.info(&format!("QEMU started paused, pid {}, as root", child.id())),
    }
    let outcome =
        supervise::supervise_child(config, plan, &mut child, qmp_stream, signals, options, log);
    if child.try_wait().ok().flatten().is_none() {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }
    outcome
}
