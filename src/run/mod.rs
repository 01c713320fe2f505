//! Stage 4: run the plan. Start QEMU paused, pin every vCPU through QMP, resume, supervise,
//! shut down gracefully on request, and tear everything down on every path.
//!
//! Host preparation (vfio binding, single-GPU sessions) plugs in through `HostSession`:
//! `prepare` runs before QEMU starts, `restore` after it is gone, on every path.

pub mod control;
pub mod pin;
pub mod state;
pub mod threads;

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use crate::firmware::ResolvedFirmware;
use crate::log::Log;
use crate::model::{CpuSet, VmConfig};
use crate::plan::{BootFirmware, Plan};
use crate::qmp::{Qmp, QmpError};
use state::{LastRun, RunState, StateError, StopRequest, VmLock};

/// Exit codes of `run` and `stop`, beyond the general ones in `cli::exit`.
pub mod exit {
    /// The VM is already running (`run`).
    pub const ALREADY_RUNNING: i32 = 4;
    /// The guest did not power off in time and was stopped by force.
    pub const FORCED: i32 = 5;
    /// QEMU failed: it refused to start, crashed, or the guest panicked.
    pub const QEMU_FAILED: i32 = 6;
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot create {}: {source}", .path.display())]
    Setup {
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
    #[error("host preparation failed: {0}")]
    Host(String),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::State(StateError::AlreadyRunning { .. }) => exit::ALREADY_RUNNING,
            RunError::QemuRefused { .. } => exit::QEMU_FAILED,
            _ => 1,
        }
    }
}

/// Host changes around a run (`host::session::HostPrep`): `prepare` undoes what a crashed run
/// left first, then prepares, rolling back on failure; `restore` gives the host back.
pub trait HostSession {
    fn prepare(&mut self, log: &Log) -> Result<(), String>;
    fn restore(&mut self, log: &Log);
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
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::GuestPoweredOff | Outcome::StoppedGracefully => 0,
            Outcome::Forced { .. } => exit::FORCED,
            Outcome::QemuFailed { .. } => exit::QEMU_FAILED,
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
pub type ReadyCallback = Box<dyn FnOnce(&RunState)>;

/// What the caller of `run` wants besides the plan.
pub struct RunOptions {
    /// Leave the vCPUs paused after pinning (resume with `vmrun qmp NAME cont`).
    pub paused: bool,
    /// Called once the VM runs with every vCPU pinned (the detached parent's signal).
    pub on_ready: Option<ReadyCallback>,
    /// A detached supervisor ignores SIGHUP: there is no terminal to hang up.
    pub ignore_hangup: bool,
}

/// Seconds of patience per passed-through device when forcing QEMU down (as libvirt gives).
const PER_DEVICE_GRACE: Duration = Duration::from_secs(2);
const FORCE_STAGE_GRACE: Duration = Duration::from_secs(5);
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

fn setup_error(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Setup {
        path: path.to_path_buf(),
        source,
    }
}

fn create_private_dir(path: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(setup_error(path))
}

/// Copies the VARS template to the VM's own file if it has none; never overwrites it.
pub fn ensure_vars_copy(
    firmware: &ResolvedFirmware,
    vars: &Path,
    log: &Log,
) -> Result<bool, RunError> {
    if vars.exists() {
        log.debug(&format!("keeping the VM's VARS {}", vars.display()));
        return Ok(false);
    }
    let temporary = vars.with_extension("new");
    std::fs::copy(&firmware.vars_template.path, &temporary).map_err(setup_error(&temporary))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .map_err(setup_error(&temporary))?;
    std::fs::rename(&temporary, vars).map_err(setup_error(vars))?;
    log.info(&format!(
        "created the VM's VARS {} from {}",
        vars.display(),
        firmware.vars_template.path.display()
    ));
    Ok(true)
}

/// The CPUs QEMU's non-vCPU threads run on: the profile's emulator set, else every online CPU
/// that no vCPU is pinned to (all of them when the vCPUs take every CPU).
pub fn emulator_cpus(config: &VmConfig, online: &CpuSet) -> Option<CpuSet> {
    let pinning = config.pinning.as_ref()?;
    if let Some(set) = &pinning.emulator {
        return Some(set.clone());
    }
    let rest = CpuSet::from_cpus(online.iter().filter(|cpu| !pinning.vcpus.contains(cpu)));
    Some(if rest.is_empty() {
        online.clone()
    } else {
        rest
    })
}

/// Spawns QEMU directly (no shell) in its own process group, with the emulator CPU set as its
/// initial affinity and a parent-death signal, its output appended to `qemu.log`.
fn spawn_qemu(plan: &Plan, emulator: Option<&CpuSet>, qemu_log: &Path) -> Result<Child, RunError> {
    let log_file = std::fs::File::create(qemu_log).map_err(setup_error(qemu_log))?;
    let log_err = log_file.try_clone().map_err(setup_error(qemu_log))?;
    let mut command = Command::new(&plan.argv[0]);
    command
        .args(&plan.argv[1..])
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .process_group(0);
    set_parent_death_signal(&mut command, Signal::SIGTERM);
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

impl From<threads::ThreadError> for RunError {
    fn from(error: threads::ThreadError) -> Self {
        RunError::Pin(pin::PinError::Thread(error))
    }
}

/// Makes `signal` reach the child when vmrun dies, so that nothing vmrun started (QEMU, a
/// `modprobe`, a hook) goes on changing the host unseen after a crash.
pub(crate) fn set_parent_death_signal(command: &mut Command, signal: Signal) {
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe syscalls (prctl, getppid); it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid().as_raw() != parent {
                return Err(std::io::Error::other("vmrun exited while starting a child"));
            }
            Ok(())
        });
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

fn refused(qemu_log: &Path, status: ExitStatus) -> RunError {
    RunError::QemuRefused {
        status: describe_status(status),
        message: tail(qemu_log, 20),
    }
}

/// Connects to QMP while watching QEMU: an early exit is reported with QEMU's own message.
/// QEMU opens its QMP socket before it creates devices, so it can accept the connection and
/// then die on a bad `-device`: a failed handshake waits a moment for that exit.
fn connect_qmp(child: &mut Child, plan: &Plan, qemu_log: &Path) -> Result<Qmp, RunError> {
    let deadline = Instant::now() + QMP_TIMEOUT;
    let stream = loop {
        if let Some(status) = child.try_wait().map_err(setup_error(qemu_log))? {
            return Err(refused(qemu_log, status));
        }
        match UnixStream::connect(&plan.paths.qmp_socket) {
            Ok(stream) => break stream,
            Err(error)
                if Instant::now() < deadline
                    && matches!(
                        error.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(QmpError::Connect {
                    path: plan.paths.qmp_socket.clone(),
                    source,
                }
                .into())
            }
        }
    };
    match Qmp::handshake(stream, QMP_TIMEOUT) {
        Ok(qmp) => Ok(qmp),
        Err(error) => {
            let patience = Instant::now() + Duration::from_secs(3);
            while Instant::now() < patience {
                if let Some(status) = child.try_wait().map_err(setup_error(qemu_log))? {
                    return Err(refused(qemu_log, status));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error.into())
        }
    }
}

/// Signals, as the supervisor loop sees them: a wake-up pipe and the list of what arrived.
struct SignalWatch {
    wake: UnixStream,
    signals: signal_hook::iterator::Signals,
}

impl SignalWatch {
    fn new() -> Result<Self, RunError> {
        let (wake, wake_writer) = UnixStream::pair().map_err(RunError::Signals)?;
        wake.set_nonblocking(true).map_err(RunError::Signals)?;
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGCHLD] {
            let writer = wake_writer.try_clone().map_err(RunError::Signals)?;
            signal_hook::low_level::pipe::register(signal, writer).map_err(RunError::Signals)?;
        }
        let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(RunError::Signals)?;
        Ok(SignalWatch { wake, signals })
    }

    fn drain(&mut self) -> Vec<i32> {
        let mut buffer = [0u8; 64];
        while matches!(self.wake.read(&mut buffer), Ok(n) if n > 0) {}
        self.signals.pending().collect()
    }
}

/// The graceful-stop ladder: ACPI power button, then QMP quit, then SIGTERM, then SIGKILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum StopStage {
    Acpi,
    Quit,
    Term,
    Kill,
}

impl StopStage {
    fn name(self) -> &'static str {
        match self {
            StopStage::Acpi => "ACPI power-off",
            StopStage::Quit => "QMP quit",
            StopStage::Term => "SIGTERM",
            StopStage::Kill => "SIGKILL",
        }
    }
}

struct Supervisor<'a> {
    log: &'a Log,
    child: &'a mut Child,
    qmp: Option<Qmp>,
    stage: Option<(StopStage, Instant)>,
    acpi_timeout: Duration,
    force_grace: Duration,
    shutdown_reason: Option<String>,
    panicked: bool,
}

impl Supervisor<'_> {
    fn enter(&mut self, stage: StopStage) {
        let now = Instant::now();
        let deadline = match stage {
            StopStage::Acpi => now + self.acpi_timeout,
            StopStage::Quit | StopStage::Term => now + self.force_grace,
            StopStage::Kill => now + Duration::from_secs(3600),
        };
        self.log.info(&format!("stop: {}", stage.name()));
        let pid = Pid::from_raw(self.child.id() as i32);
        let qmp_result = match (stage, self.qmp.as_mut()) {
            (StopStage::Acpi, Some(qmp)) => Some(qmp.execute("system_powerdown", None).map(|_| ())),
            (StopStage::Quit, Some(qmp)) => Some(qmp.quit()),
            (StopStage::Acpi | StopStage::Quit, None) => None,
            (StopStage::Term, _) => {
                let _ = kill(pid, Signal::SIGTERM);
                Some(Ok(()))
            }
            (StopStage::Kill, _) => {
                let _ = kill(pid, Signal::SIGKILL);
                Some(Ok(()))
            }
        };
        match qmp_result {
            Some(Ok(())) => self.stage = Some((stage, deadline)),
            Some(Err(error)) => {
                self.log
                    .warn(&format!("{} failed ({error}); escalating", stage.name()));
                self.qmp = None;
                self.stage = Some((stage, now));
            }
            None => self.stage = Some((stage, now)),
        }
    }

    fn escalate(&mut self) {
        let next = match self.stage.map(|(stage, _)| stage) {
            None => StopStage::Acpi,
            Some(StopStage::Acpi) => StopStage::Quit,
            Some(StopStage::Quit) => StopStage::Term,
            Some(StopStage::Term | StopStage::Kill) => StopStage::Kill,
        };
        self.enter(next);
    }

    fn read_events(&mut self) {
        let Some(qmp) = self.qmp.as_mut() else { return };
        loop {
            match qmp.next_event(Instant::now() + Duration::from_millis(1)) {
                Ok(Some(event)) => {
                    self.log
                        .debug(&format!("QMP event {} {}", event.event, event.data));
                    match event.event.as_str() {
                        "SHUTDOWN" => {
                            let reason = event.data["reason"]
                                .as_str()
                                .unwrap_or("unknown")
                                .to_string();
                            self.log
                                .info(&format!("QEMU reports SHUTDOWN, reason: {reason}"));
                            self.shutdown_reason = Some(reason);
                        }
                        "GUEST_PANICKED" => {
                            self.log
                                .error(&format!("the guest panicked: {}", event.data));
                            self.panicked = true;
                        }
                        "RESET" => self.log.info("the guest reset"),
                        _ => {}
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    self.log.debug("QMP connection closed");
                    self.qmp = None;
                    return;
                }
            }
        }
    }

    fn outcome(&self, status: ExitStatus) -> Outcome {
        if let Some((stage, _)) = self.stage {
            return if stage == StopStage::Acpi {
                Outcome::StoppedGracefully
            } else {
                Outcome::Forced {
                    stage: stage.name(),
                }
            };
        }
        if self.panicked {
            return Outcome::QemuFailed {
                detail: "the guest panicked".into(),
            };
        }
        match (status.success(), self.shutdown_reason.as_deref()) {
            (true, Some("guest-shutdown")) => Outcome::GuestPoweredOff,
            (true, Some(reason @ ("host-qmp-quit" | "host-signal" | "host-qmp-system-reset"))) => {
                Outcome::Forced {
                    stage: if reason == "host-signal" {
                        "a signal to QEMU from outside vmrun"
                    } else {
                        "a QMP command from outside vmrun"
                    },
                }
            }
            (true, _) => Outcome::GuestPoweredOff,
            (false, _) => Outcome::QemuFailed {
                detail: describe_status(status),
            },
        }
    }
}

/// Runs the VM until it ends. `Err` only for failures before the guest ran; once it runs,
/// every ending is an `Outcome`. Teardown has happened when this returns.
pub fn run(
    config: &VmConfig,
    plan: &Plan,
    firmware: &BootFirmware,
    host: &mut dyn HostSession,
    options: RunOptions,
    log: &Log,
) -> Result<Outcome, RunError> {
    let paths = &plan.paths;
    create_private_dir(&paths.runtime_dir)?;
    create_private_dir(&paths.state_dir)?;
    log.attach_file(&paths.log);
    let lock = VmLock::acquire(paths, config.name.as_str())?;
    log.info(&format!(
        "starting {} ({}, accelerator {})",
        config.name,
        plan.profile.display(),
        plan.accel
    ));
    let result = run_locked(config, plan, firmware, host, options, log);
    let (code, outcome) = match &result {
        Ok(outcome) => (outcome.exit_code(), outcome.describe()),
        Err(error) => (error.exit_code(), error.to_string()),
    };
    let _ = state::write_json(
        &state::last_run_file(paths),
        &LastRun {
            exit_code: code,
            outcome: outcome.clone(),
            finished_unix: state::unix_now(),
        },
    );
    log.info(&format!("finished: {outcome} (exit code {code})"));
    lock.release();
    result
}

fn run_locked(
    config: &VmConfig,
    plan: &Plan,
    firmware: &BootFirmware,
    host: &mut dyn HostSession,
    options: RunOptions,
    log: &Log,
) -> Result<Outcome, RunError> {
    // A vmrun that died leaves its state file; its QEMU must be gone before the host is touched.
    if let Some(pid) = state::orphaned_qemu(&plan.paths) {
        return Err(RunError::Host(format!(
            "QEMU pid {pid} of this VM still runs without its vmrun; stop it (kill {pid}) first"
        )));
    }
    // Left over from a vmrun that died: the lock is ours, so nothing else uses them.
    state::remove_runtime_files(&plan.paths);
    if let BootFirmware::Ovmf(resolved) = firmware {
        ensure_vars_copy(resolved, &plan.paths.vars, log)?;
    }
    let mut signals = SignalWatch::new()?;
    host.prepare(log).map_err(RunError::Host)?;
    let result = start_and_supervise(config, plan, &mut signals, options, log);
    host.restore(log);
    state::remove_runtime_files(&plan.paths);
    result
}

fn start_and_supervise(
    config: &VmConfig,
    plan: &Plan,
    signals: &mut SignalWatch,
    options: RunOptions,
    log: &Log,
) -> Result<Outcome, RunError> {
    let online = crate::check::online_cpus(&crate::check::Sysroot::new("/"));
    let emulator = online
        .as_ref()
        .and_then(|online| emulator_cpus(config, online));
    if let Some(set) = &emulator {
        log.debug(&format!("QEMU starts on the emulator CPUs {set}"));
    }
    let qemu_log = plan.paths.state_dir.join("qemu.log");
    let mut child = spawn_qemu(plan, emulator.as_ref(), &qemu_log)?;
    log.info(&format!("QEMU started paused, pid {}", child.id()));
    let outcome = supervise_child(
        config,
        plan,
        emulator.as_ref(),
        &mut child,
        signals,
        options,
        log,
        &qemu_log,
    );
    // Whatever happened, no QEMU outlives its supervisor.
    if child.try_wait().ok().flatten().is_none() {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
fn supervise_child(
    config: &VmConfig,
    plan: &Plan,
    emulator: Option<&CpuSet>,
    child: &mut Child,
    signals: &mut SignalWatch,
    options: RunOptions,
    log: &Log,
    qemu_log: &Path,
) -> Result<Outcome, RunError> {
    let run_state = RunState {
        name: config.name.to_string(),
        profile: plan.profile.clone(),
        vmrun_pid: std::process::id(),
        qemu_pid: child.id(),
        started_unix: state::unix_now(),
        accel: plan.accel.to_string(),
    };
    state::write_json(&state::state_file(&plan.paths), &run_state)?;
    let mut qmp = connect_qmp(child, plan, qemu_log)?;
    log.debug("QMP connected");
    let mut pinned = match &config.pinning {
        Some(pinning) => {
            let pinned = pin::pin_all(&mut qmp, child.id(), pinning, log)?;
            log.info(&pinned.summary);
            Some(pinned)
        }
        None => None,
    };
    if options.paused {
        log.info("vCPUs left paused (--paused): resume with `vmrun qmp NAME cont`");
    } else {
        qmp.execute("cont", None)?;
        log.info("vCPUs resumed: the guest runs");
    }
    if let Some(ready) = options.on_ready {
        ready(&run_state);
    }
    let devices = config.pci.len() as u32;
    let mut supervisor = Supervisor {
        log,
        child,
        qmp: Some(qmp),
        stage: None,
        acpi_timeout: config.shutdown.timeout,
        force_grace: FORCE_STAGE_GRACE + PER_DEVICE_GRACE * devices,
        shutdown_reason: None,
        panicked: false,
    };
    loop {
        if let Some(status) = supervisor.child.try_wait().map_err(setup_error(qemu_log))? {
            supervisor.read_events();
            log.info(&format!("QEMU exited ({})", describe_status(status)));
            if !status.success() {
                let last = tail(qemu_log, 5);
                if !last.is_empty() {
                    log.warn(&format!("QEMU's last words:\n{last}"));
                }
            }
            return Ok(supervisor.outcome(status));
        }
        for signal in signals.drain() {
            if signal == SIGHUP && options.ignore_hangup {
                continue;
            }
            let name = match signal {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            log.info(&format!("{name} received"));
            let request: Option<StopRequest> =
                state::read_json(&state::stop_request_file(&plan.paths));
            let _ = std::fs::remove_file(state::stop_request_file(&plan.paths));
            if let Some(request) = &request {
                if let Some(seconds) = request.timeout_seconds {
                    supervisor.acpi_timeout = Duration::from_secs(seconds);
                }
                if request.force && supervisor.stage.is_none() {
                    supervisor.enter(StopStage::Quit);
                    continue;
                }
            }
            supervisor.escalate();
        }
        if let Some((stage, deadline)) = supervisor.stage {
            if Instant::now() >= deadline && stage != StopStage::Kill {
                log.warn(&format!("{} did not stop QEMU in time", stage.name()));
                supervisor.escalate();
            }
        }
        supervisor.read_events();
        if let (Some(pinned), Some(set)) = (pinned.as_mut(), emulator) {
            pinned.sweep(supervisor.child.id(), set, log);
        }
        let timeout = supervisor
            .stage
            .map(|(_, deadline)| deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        let wake = signals.wake.as_fd();
        let mut fds = vec![PollFd::new(wake, PollFlags::POLLIN)];
        if let Some(qmp) = supervisor.qmp.as_ref() {
            fds.push(PollFd::new(qmp.socket().as_fd(), PollFlags::POLLIN));
        }
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(1000).max(1);
        let _ = poll(&mut fds, PollTimeout::from(millis));
    }
}
