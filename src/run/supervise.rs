//! Supervision: the guest runs until it powers off, panics, or a signal (Ctrl-C, SIGTERM, a
//! `vmrun stop`) starts the graceful-stop ladder: ACPI power-off, after the timeout QMP
//! `quit`, then SIGTERM, then SIGKILL; a second signal skips to the next stage.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use super::spawn::{setup_error, tail};
use super::state::{self, RunState, StopRequest};
use super::{connect, pin, Outcome, RunError, RunOptions};
use crate::host::steps::Companion;
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::Plan;
use crate::process::describe_exit;
use crate::qmp::Qmp;

/// Seconds of patience per passed-through device when forcing QEMU down (as libvirt gives).
const PER_DEVICE_GRACE: Duration = Duration::from_secs(2);
const FORCE_STAGE_GRACE: Duration = Duration::from_secs(5);

/// Signals, as the supervisor loop sees them: a wake-up pipe and the list of what arrived.
pub struct SignalWatch {
    wake: UnixStream,
    signals: signal_hook::iterator::Signals,
}

impl SignalWatch {
    pub fn new() -> Result<Self, RunError> {
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
    /// On a terminal, the seconds the guest has left to power off.
    countdown: Option<crate::progress::Countdown>,
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
        self.countdown = (stage == StopStage::Acpi).then(|| {
            self.log.countdown(
                "waiting for the guest to power off",
                Some(self.acpi_timeout),
            )
        });
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
                        "GUEST_CRASHLOADED" => {
                            self.log
                                .error("the guest panicked and loads a crash kernel");
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
        if self.panicked {
            return Outcome::QemuFailed {
                detail: "the guest panicked".into(),
            };
        }
        if let Some((stage, _)) = self.stage {
            return if stage == StopStage::Acpi {
                Outcome::StoppedGracefully
            } else {
                Outcome::Forced {
                    stage: stage.name(),
                }
            };
        }
        match (status.success(), self.shutdown_reason.as_deref()) {
            (true, Some("guest-shutdown")) => Outcome::GuestPoweredOff,
            (true, Some("guest-panic")) => Outcome::QemuFailed {
                detail: "the guest panicked".into(),
            },
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
                detail: describe_exit(&status),
            },
        }
    }
}

/// Connects, pins, resumes, and supervises QEMU until it exits.
pub(super) fn supervise_child(
    config: &VmConfig,
    plan: &Plan,
    child: &mut Child,
    qmp_stream: UnixStream,
    signals: &mut SignalWatch,
    options: RunOptions,
    log: &Log,
) -> Result<Outcome, RunError> {
    let qemu_log = &plan.paths.qemu_log;
    let emulator = plan.emulator_cpus.as_ref();
    // The processes beside QEMU, by the pid each wrote before QEMU started.
    let companions = &options.companions;
    let mut watched: Vec<(u32, &Companion)> = companions
        .iter()
        .filter_map(|companion| {
            let pid = std::fs::read_to_string(&companion.pidfile).ok()?;
            Some((pid.trim().parse().ok()?, companion))
        })
        .collect();
    let run_state = RunState {
        name: config.name.to_string(),
        profile: plan.profile.clone(),
        vmrun_pid: std::process::id(),
        qemu_pid: child.id(),
        started_unix: state::unix_now(),
        accel: plan.accel.to_string(),
        companions: watched
            .iter()
            .map(|(pid, companion)| state::RunningCompanion {
                role: companion.role.to_string(),
                name: companion.name.to_string(),
                pid: *pid,
            })
            .collect(),
        display: plan.remote.as_ref().map(|remote| remote.uri.clone()),
        realtime_cpus: config
            .pinning
            .as_ref()
            .filter(|p| p.scheduler.is_realtime())
            .map(|p| p.vcpus.clone())
            .unwrap_or_default(),
        pci: config
            .pci
            .iter()
            .map(|device| device.address.to_string())
            .collect(),
    };
    // Written while QEMU starts up: `status` and `stop` find the VM from here on.
    state::write_json(&plan.paths.run_state, &run_state)?;
    let (mut qmp, queries) = connect::handshake(child, plan, qmp_stream, |qmp| {
        config
            .pinning
            .as_ref()
            .map(|pinning| pin::submit_queries(qmp, pinning))
            .transpose()
    })?;
    log.phase("QMP ready");
    let mut pinned = match (&config.pinning, queries) {
        (Some(pinning), Some(queries)) => {
            let pinned = pin::pin_all(&mut qmp, queries, child.id(), pinning, log)?;
            log.phase("pinned");
            log.info(&pinned.summary);
            Some(pinned)
        }
        _ => None,
    };
    if options.paused {
        log.info("vCPUs left paused (--paused): resume with `vmrun qmp NAME cont`");
    } else {
        qmp.execute("cont", None)?;
        log.phase("running");
        log.info("vCPUs resumed: the guest runs");
    }
    if let Some(ready) = options.on_ready {
        ready(&run_state);
    }
    let mut sampler = super::latency::Sampler::new(&plan.paths.sched_samples);
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
        countdown: None,
    };

    // The first turn comes right after `ready`, while the caller of --detach is still on its
    // way out: the /proc sweeps wait for the next one.
    let mut first_turn = true;
    loop {
        if let Some(status) = supervisor.child.try_wait().map_err(setup_error(qemu_log))? {
            supervisor.read_events();
            log.phase("QEMU exited");
            log.info(&format!("QEMU exited ({})", describe_exit(&status)));
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
            let request: Option<StopRequest> = state::read_json(&plan.paths.stop_request);
            let _ = std::fs::remove_file(&plan.paths.stop_request);
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
        if let Some(countdown) = supervisor.countdown.as_mut() {
            countdown.tick();
        }
        supervisor.read_events();
        // A process beside QEMU that QEMU ends itself when it shuts down: only a death before
        // that is news. The guest keeps running without it (stopping a desktop would lose
        // more), but the user learns why (BitLocker or Windows Hello stopped working).
        watched.retain(|(pid, companion)| {
            if state::process_alive(*pid, companion.name) {
                return true;
            }
            let qemu_running = matches!(supervisor.child.try_wait(), Ok(None));
            if qemu_running && supervisor.stage.is_none() && supervisor.shutdown_reason.is_none() {
                log.error(&format!(
                    "{} (pid {pid}) exited while the guest runs: {}; see {}",
                    companion.name,
                    companion.loss,
                    companion.log.display()
                ));
            }
            false
        });
        // QEMU pauses a panicked guest; nothing would ever end the run.
        if supervisor.panicked && supervisor.stage.is_none() {
            supervisor.enter(StopStage::Quit);
        }
        if let (Some(pinned), Some(set), false) = (pinned.as_mut(), emulator, first_turn) {
            pinned.sweep(supervisor.child.id(), set, log);
        }
        if supervisor.stage.is_none() && !first_turn {
            sampler.tick(supervisor.child.id());
        }
        first_turn = false;
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
