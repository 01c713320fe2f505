//! `run` (foreground, `--detach` and its background supervisor), `status`, `stop`, `qmp` and
//! `recover`: the commands that start, watch and stop VMs.

use super::*;
use crate::app::detach::{self, Detached};
use crate::app::{Recipe, Recovered};
use crate::log::Log;
use crate::profile;
use crate::run::{control, state, RunOptions};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RunMode {
    Foreground,
    Detach,
}

pub(super) fn run_vm(
    app: &App,
    profile_arg: &str,
    mode: RunMode,
    paused: bool,
    global: &GlobalArgs,
) -> Result<ExitCode, CliError> {
    let log = Log::new(global.verbose, global.quiet);
    let loaded = app.load(profile_arg)?;
    log.phase("parse");
    let recipe = app.recipe(loaded)?;
    if !global.quiet {
        for warning in recipe
            .warnings
            .iter()
            .filter(|w| w.kind == profile::Kind::Profile)
        {
            eprintln!("{warning}");
        }
    }
    app.preflight(&recipe)?;
    log.phase("preflight");
    if mode == RunMode::Detach {
        return run_detached(app, &recipe, paused, global, profile_arg, log);
    }
    let options = RunOptions {
        paused,
        on_ready: None,
        ignore_hangup: false,
        ..Default::default()
    };
    let outcome = app.run(&recipe, options, &log)?;
    if !global.quiet {
        eprintln!("vmrun: {}: {}", recipe.config.name, outcome.describe());
    }
    Ok(outcome.exit_code())
}

/// Forks the supervisor with the recipe already made; returns once it reports the VM running
/// and pinned (or why not).
fn run_detached(
    app: &App,
    recipe: &Recipe,
    paused: bool,
    global: &GlobalArgs,
    profile_arg: &str,
    log: Log,
) -> Result<ExitCode, CliError> {
    match detach::fork(recipe.plan.emulator_cpus.as_ref()).map_err(AppError::from)? {
        detach::Role::Caller(waiter) => match waiter
            .wait(&recipe.plan.paths.stop_request)
            .map_err(AppError::from)?
        {
            Detached::Running { supervisor } => {
                if !global.quiet {
                    eprintln!(
                        "vmrun: {} is running, supervised by vmrun pid {supervisor} (stop it with `vmrun stop {profile_arg}`)",
                        recipe.config.name,
                    );
                }
                Ok(ExitCode::Ok)
            }
            Detached::Failed { message, code } => {
                eprintln!("vmrun: {message}");
                Ok(code)
            }
            Detached::Cancelled { signal, outcome } => {
                eprintln!(
                    "vmrun: {signal} received while {} started: the start was cancelled and the host given back ({outcome}); see {}",
                    recipe.config.name,
                    recipe.plan.paths.log.display()
                );
                Ok(ExitCode::Failure)
            }
        },
        detach::Role::Supervisor(reporter) => {
            let reporter = std::rc::Rc::new(reporter);
            let ready = reporter.clone();
            let options = RunOptions {
                paused,
                on_ready: Some(Box::new(move |_: &state::RunState| ready.ready())),
                // There is no terminal to hang up.
                ignore_hangup: true,
                ..Default::default()
            };
            // The same log: what parsing and the preflight said goes to the VM's log file too.
            let log = log.without_stderr();
            // Errors come only before the guest runs, so before `ready` was sent.
            Ok(match app.run(recipe, options, &log) {
                Ok(outcome) => outcome.exit_code(),
                Err(error) => reporter.failed(&error.to_string(), error.exit_code()),
            })
        }
    }
}

pub(super) fn status(app: &App, name: &str, json: bool) -> Result<ExitCode, CliError> {
    let report = app.status(name)?;
    let code = if report.running {
        ExitCode::Ok
    } else {
        ExitCode::NotRunning
    };
    if json {
        stdout_json(&report)?;
        return Ok(code);
    }
    let name = &report.name;
    let mut out = std::io::stdout().lock();
    if !report.running {
        write!(out, "{name}: not running")?;
        if let Some(last) = &report.last_run {
            write!(
                out,
                " (last run: {}, exit code {})",
                last.outcome, last.exit_code
            )?;
        }
        writeln!(out)?;
        for function in &report.pci {
            writeln!(
                out,
                "  pci {}: not given back yet (driver {}, power_state {}): `vmrun recover {name}` returns it to its driver once it answers",
                function.address,
                function.driver.as_deref().unwrap_or("none"),
                function.power_state.as_deref().unwrap_or("unknown"),
            )?;
        }
        return Ok(code);
    }
    writeln!(
        out,
        "{name}: running, QEMU pid {}, vmrun pid {}, up {} s, state {}, accelerator {}",
        report.pid.unwrap_or_default(),
        report.vmrun_pid.unwrap_or_default(),
        report.uptime_seconds.unwrap_or_default(),
        report.run_state.as_deref().unwrap_or("unknown"),
        report.accel.as_deref().unwrap_or("unknown"),
    )?;
    let rate = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.1}"));
    for vcpu in &report.vcpus {
        writeln!(
            out,
            "  vCPU {:<3} thread {:<8} CPUs {:<8} {} {:<3} waited {} ms/s since start, {} ms/s over the last {} s, {} preemptions",
            vcpu.index,
            vcpu.thread_id,
            vcpu.affinity,
            vcpu.policy,
            vcpu.priority,
            rate(vcpu.run_delay_ms_per_s),
            rate(vcpu.recent_run_delay_ms_per_s),
            vcpu.recent_seconds.map_or("-".to_string(), |s| format!("{s:.0}")),
            vcpu.involuntary_switches
                .map_or("-".to_string(), |n| n.to_string()),
        )?;
    }
    for function in &report.pci {
        writeln!(
            out,
            "  pci {}: driver {}, power_state {}",
            function.address,
            function.driver.as_deref().unwrap_or("none"),
            function.power_state.as_deref().unwrap_or("unknown"),
        )?;
    }
    for companion in &report.companions {
        writeln!(
            out,
            "  {}: {} pid {}",
            companion.role, companion.name, companion.pid
        )?;
    }
    if let Some(uri) = &report.display {
        writeln!(out, "  display: remote-viewer {uri}")?;
        if let Some(socket) = uri.split_once("+unix://").map(|(_, path)| path) {
            writeln!(
                out,
                "  from another machine: ssh -L /tmp/{name}-display.sock:{socket} HOST, then \
                 remote-viewer {}+unix:///tmp/{name}-display.sock",
                uri.split('+').next().unwrap_or("spice")
            )?;
        }
    }
    Ok(code)
}

pub(super) fn stop(
    app: &App,
    name: &str,
    timeout: Option<u64>,
    force: bool,
    global: &GlobalArgs,
) -> Result<ExitCode, CliError> {
    let target = app.known_target(name)?;
    let name = &target.name;
    // The supervisor bounds every stage itself; this only guards against a hung supervisor.
    let patience = std::time::Duration::from_secs(timeout.unwrap_or(600) + 120);
    // Without --timeout the supervisor applies the timeout of the profile it runs: read from
    // that same file, so the countdown shows what the supervisor will do.
    let timeout = timeout.map(std::time::Duration::from_secs);
    let profile_timeout = || {
        let run = state::running(&target.paths)?;
        let loaded = app.load(&run.profile.to_string_lossy()).ok()?;
        Some(loaded.config.shutdown.timeout)
    };
    let graceful = if force {
        None
    } else {
        timeout.or_else(profile_timeout)
    };
    let log = Log::new(global.verbose, global.quiet);
    let (label, overdue) = (
        format!("stopping {name}: waiting for the guest to power off (ACPI)"),
        format!("stopping {name}: the guest did not power off; forcing QEMU off (QMP quit, then SIGTERM, SIGKILL)"),
    );
    let mut countdown = if force {
        log.debug(&format!(
            "stopping {name}: --force, quitting QEMU without asking the guest"
        ));
        crate::progress::Countdown::new(
            format!("stopping {name}: quitting QEMU (--force)"),
            None,
            !global.quiet,
        )
    } else {
        match graceful {
            Some(limit) => log.debug(&format!(
                "stopping {name}: waiting up to {} s for the guest to power off (ACPI), then QMP quit, SIGTERM, SIGKILL",
                limit.as_secs()
            )),
            None => log.debug(&format!(
                "stopping {name}: waiting for the guest to power off (ACPI) for the profile's shutdown.timeout"
            )),
        }
        crate::progress::Countdown::new(label, graceful, !global.quiet)
            .at_deadline("then QEMU is forced off", overdue)
    };
    let mut said_overdue = false;
    let stopped = control::stop(&target.paths, name, timeout, force, patience, &mut || {
        if !said_overdue && countdown.overdue() {
            said_overdue = true;
            log.debug(&format!(
                "stopping {name}: the guest did not power off in time; vmrun forces QEMU off"
            ));
        }
        countdown.tick()
    });
    // Teardown can end between two ticks once the deadline has passed: the log still says
    // that the guest was forced.
    if !said_overdue && countdown.overdue() {
        log.debug(&format!(
            "stopping {name}: the guest did not power off in time; vmrun forces QEMU off"
        ));
    }
    // Erases the countdown's line before the outcome is printed.
    drop(countdown);
    match stopped {
        Ok(last) => {
            if !global.quiet {
                eprintln!("vmrun: {name}: {}", last.outcome);
            }
            Ok(ExitCode::from_code(last.exit_code))
        }
        Err(control::ControlError::NotRunning(_)) => {
            if !global.quiet {
                eprintln!("vmrun: {name} was not running");
            }
            Ok(ExitCode::Ok)
        }
        Err(error) => Err(AppError::from(error).into()),
    }
}

pub(super) fn qmp(
    app: &App,
    name: &str,
    command: &str,
    arguments: Option<String>,
) -> Result<ExitCode, CliError> {
    let target = app.target(name)?;
    let arguments = match arguments {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                CliError::Usage(format!("the QMP arguments are not JSON ({e}): {text}"))
            })?,
        ),
        None => None,
    };
    let reply = control::qmp_command(&target.paths, &target.name, command, arguments)
        .map_err(AppError::from)?;
    stdout_json(&reply)?;
    Ok(ExitCode::Ok)
}

pub(super) fn recover(app: &App, target: &str, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let log = Log::new(global.verbose, global.quiet);
    match app.recover(target, &log) {
        Ok(Recovered::Nothing | Recovered::Restored { .. }) => Ok(ExitCode::Ok),
        // Already logged (stderr and the VM's log) with every detail.
        Err(AppError::Host(message)) => {
            log.error(&message);
            Ok(ExitCode::Failure)
        }
        Err(error) => Err(error.into()),
    }
}

pub(super) fn logs(
    app: &App,
    name: &str,
    kind: crate::app::logs::LogKind,
    follow: bool,
    raw: bool,
) -> Result<ExitCode, CliError> {
    use crate::app::logs::{copy_log, empty_reason, LogKind, StripControls};
    let path = app.log_file(name, kind, follow)?;
    let mut out = std::io::stdout().lock();
    // Followed until the reader goes away or a signal ends vmrun (the default action).
    if kind == LogKind::Console && !raw {
        copy_log(&path, &mut StripControls::new(&mut out), follow, &|| true)?;
    } else {
        copy_log(&path, &mut out, follow, &|| true)?;
    }
    // An empty log printed as nothing would look like a broken command.
    if !follow && std::fs::metadata(&path).is_ok_and(|meta| meta.len() == 0) {
        eprintln!("vmrun: {} is empty: {}", path.display(), empty_reason(kind));
    }
    Ok(ExitCode::Ok)
}

pub(super) fn console(app: &App, name: &str, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    use crate::app::console::{attach, is_terminal, Ended, RawTerminal};
    use std::os::fd::AsFd;
    let socket_path = app.console_socket(name)?;
    let mut socket = std::os::unix::net::UnixStream::connect(&socket_path).map_err(|error| {
        CliError::App(AppError::Host(format!(
            "cannot connect to {}: {error}",
            socket_path.display()
        )))
    })?;
    // Read through an unbuffered copy of stdin: what poll reports must be all there is.
    let stdin = std::io::stdin();
    let mut input = std::fs::File::from(stdin.as_fd().try_clone_to_owned()?);
    let terminal = is_terminal(&input);
    if terminal && !global.quiet {
        eprint!("vmrun: connected to {name}'s serial console; detach with Ctrl-]\r\n");
    }
    let ended = {
        let _raw = if terminal {
            RawTerminal::enter(stdin.as_fd())
        } else {
            None
        };
        let mut out = std::io::stdout().lock();
        attach(&mut socket, &mut input, &mut out)?
    };
    if !global.quiet {
        match ended {
            Ended::Detached => eprintln!("\r\nvmrun: detached from {name}'s console"),
            Ended::InputClosed => {}
            Ended::VmStopped => eprintln!("\r\nvmrun: {name}'s console closed: the VM stopped"),
        }
    }
    Ok(ExitCode::Ok)
}

pub(super) fn view(app: &App, name: &str, print: bool) -> Result<ExitCode, CliError> {
    let viewer = app.viewer(name)?;
    if print {
        let words: Vec<String> = viewer
            .argv
            .iter()
            .map(|w| {
                shlex::try_quote(w)
                    .map(|q| q.into_owned())
                    .unwrap_or_else(|_| w.clone())
            })
            .collect();
        writeln!(std::io::stdout().lock(), "{}", words.join(" "))?;
        return Ok(ExitCode::Ok);
    }
    let program = crate::app::view::find(&viewer)?;
    Err(crate::app::view::exec(&viewer, program).into())
}
