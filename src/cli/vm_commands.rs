//! `run` (foreground, `--detach` and its background supervisor), `status`, `stop`, `qmp` and
//! `recover`: the commands that start, watch and stop VMs.

use super::*;
use crate::app::detach::{self, Detached};
use crate::app::{Recipe, Recovered};
use crate::log::Log;
use crate::profile;
use crate::run::{control, state, ReadyCallback, RunOptions};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RunMode {
    Foreground,
    Detach,
    DetachedChild,
}

pub(super) fn run_vm(
    app: &App,
    profile_arg: &str,
    mode: RunMode,
    paused: bool,
    global: &GlobalArgs,
) -> Result<ExitCode, CliError> {
    if mode == RunMode::Detach {
        return run_detached(app, profile_arg, paused, global);
    }
    let recipe = (|| -> Result<Recipe, AppError> {
        let loaded = app.load(profile_arg)?;
        if !global.quiet && mode == RunMode::Foreground {
            for warning in loaded
                .warnings
                .iter()
                .filter(|w| w.kind == profile::Kind::Profile)
            {
                eprintln!("{warning}");
            }
        }
        let recipe = app.recipe(loaded)?;
        app.preflight(&recipe)?;
        Ok(recipe)
    })();
    let recipe = match recipe {
        Ok(recipe) => recipe,
        Err(error) if mode == RunMode::DetachedChild => {
            return Ok(detach::report_to_parent(
                &error.to_string(),
                error.exit_code(),
            ))
        }
        Err(error) => return Err(error.into()),
    };
    let mut log = Log::new(global.verbose, global.quiet);
    if mode == RunMode::DetachedChild {
        log = log.without_stderr();
    }
    let on_ready: Option<ReadyCallback> = match mode {
        RunMode::DetachedChild => Some(Box::new(|_: &state::RunState| detach::tell_parent_ready())),
        _ => None,
    };
    let options = RunOptions {
        paused,
        on_ready,
        ignore_hangup: mode == RunMode::DetachedChild,
    };
    match app.run(&recipe, options, &log) {
        Ok(outcome) => {
            if mode == RunMode::Foreground && !global.quiet {
                eprintln!("vmrun: {}: {}", recipe.config.name, outcome.describe());
            }
            Ok(outcome.exit_code())
        }
        Err(error) if mode == RunMode::DetachedChild => Ok(detach::report_to_parent(
            &error.to_string(),
            error.exit_code(),
        )),
        Err(error) => Err(error.into()),
    }
}

/// Starts a background supervisor and returns once it reports the VM running and pinned.
fn run_detached(
    app: &App,
    profile_arg: &str,
    paused: bool,
    global: &GlobalArgs,
) -> Result<ExitCode, CliError> {
    let profile_path = app.search.resolve(profile_arg)?;
    let profile_path = std::path::absolute(&profile_path).unwrap_or(profile_path);
    match detach::start(&app.base, &profile_path, paused, global.verbose)? {
        Detached::Running { supervisor } => {
            if !global.quiet {
                eprintln!(
                    "vmrun: {} is running, supervised by vmrun pid {supervisor} (stop it with `vmrun stop {profile_arg}`)",
                    profile_path.display(),
                );
            }
            Ok(ExitCode::Ok)
        }
        Detached::Failed { message, code } => {
            eprintln!("vmrun: {message}");
            Ok(code)
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
    for vcpu in &report.vcpus {
        writeln!(
            out,
            "  vCPU {:<3} thread {:<8} CPUs {:<8} {} {}",
            vcpu.index, vcpu.thread_id, vcpu.affinity, vcpu.policy, vcpu.priority
        )?;
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
    let target = app.target(name)?;
    let name = &target.name;
    // The supervisor bounds every stage itself; this only guards against a hung supervisor.
    let patience = std::time::Duration::from_secs(timeout.unwrap_or(600) + 120);
    let timeout = timeout.map(std::time::Duration::from_secs);
    // Without --timeout the profile's (the supervisor's) applies: count up instead of down.
    let mut countdown = crate::progress::Countdown::new(
        format!("stopping {name}"),
        timeout.filter(|_| !force),
        !global.quiet,
    );
    let stopped = control::stop(&target.paths, name, timeout, force, patience, &mut || {
        countdown.tick()
    });
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
) -> Result<ExitCode, CliError> {
    let path = app.log_file(name, kind, follow)?;
    let mut out = std::io::stdout().lock();
    // Followed until the reader goes away or a signal ends vmrun (the default action).
    crate::app::logs::copy_log(&path, &mut out, follow, &|| true)?;
    Ok(ExitCode::Ok)
}
