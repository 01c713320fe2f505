//! `run` (foreground, `--detach` and its background supervisor), `status`, `stop`, `qmp` and
//! `recover`: the commands that start, watch and stop VMs.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RunMode {
    Foreground,
    Detach,
    DetachedChild,
}

/// Validation and the host checks `run` cannot do without; every failure is printed.
pub(super) fn run_preflight(
    loaded: &Loaded,
    firmware: &BootFirmware,
    plan: &Plan,
) -> Result<(), CliError> {
    let host = HostView {
        sysroot: Sysroot::from_env(),
    };
    let mut findings: Vec<Finding> = loaded
        .warnings
        .iter()
        .filter(|w| w.kind == profile::Kind::MissingFile)
        .map(check::diagnostic_finding)
        .collect();
    findings.extend(check::host_findings(&loaded.config, &host, false));
    findings.extend(check::resolved_findings(
        &loaded.config,
        firmware,
        &plan.paths,
        &host_sysfs(),
    ));
    let failures: Vec<String> = findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .map(|f| format!("  {}: {}", f.check, f.message))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Preflight(format!(
            "not starting {}; the host is not ready:\n{}",
            loaded.config.name,
            failures.join("\n")
        )))
    }
}

pub(super) fn run_vm(
    search: &SearchPath,
    base: &BaseDirs,
    profile_arg: &str,
    mode: RunMode,
    paused: bool,
    global: &GlobalArgs,
) -> Result<i32, CliError> {
    if mode == RunMode::Detach {
        return detach(search, base, profile_arg, paused, global);
    }
    let prepared = (|| -> Result<(Loaded, BootFirmware, Plan), CliError> {
        let loaded = load(search, profile_arg)?;
        if !global.quiet && mode == RunMode::Foreground {
            for warning in loaded
                .warnings
                .iter()
                .filter(|w| w.kind == profile::Kind::Profile)
            {
                eprintln!("{warning}");
            }
        }
        let firmware = plan::resolve_firmware(&loaded.config, &firmware::default_descriptor_dirs())
            .map_err(PlanError::from)?;
        let plan = Plan::new(&loaded.config, &firmware, base)?;
        run_preflight(&loaded, &firmware, &plan)?;
        Ok((loaded, firmware, plan))
    })();
    let (loaded, firmware, plan) = match prepared {
        Ok(prepared) => prepared,
        Err(error) if mode == RunMode::DetachedChild => {
            return Ok(report_to_parent(&error.to_string(), error.exit_code()))
        }
        Err(error) => return Err(error),
    };
    let mut log = Log::new(global.verbose, global.quiet);
    if mode == RunMode::DetachedChild {
        log = log.without_stderr();
    }
    let on_ready: Option<run::ReadyCallback> = match mode {
        RunMode::DetachedChild => Some(Box::new(|_: &state::RunState| tell_parent_ready())),
        _ => None,
    };
    let options = RunOptions {
        paused,
        on_ready,
        ignore_hangup: mode == RunMode::DetachedChild,
    };
    let sysfs = host_sysfs();
    let runner = crate::host::runner::SystemRunner;
    let mut host = crate::host::session::HostPrep::new(
        &loaded.config,
        Sysroot::from_env(),
        &sysfs,
        &runner,
        &plan.paths.journal,
    );
    match run::run(&loaded.config, &plan, &firmware, &mut host, options, &log) {
        Ok(outcome) => {
            if mode == RunMode::Foreground && !global.quiet {
                eprintln!("vmrun: {}: {}", loaded.config.name, outcome.describe());
            }
            Ok(outcome.exit_code())
        }
        Err(error) if mode == RunMode::DetachedChild => {
            Ok(report_to_parent(&error.to_string(), error.exit_code()))
        }
        Err(error) => Err(error.into()),
    }
}

/// The detached supervisor's stdout is a pipe to the waiting parent: one line, then silence.
pub(super) fn tell_parent_ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
    silence_stdout();
}

pub(super) fn report_to_parent(message: &str, code: i32) -> i32 {
    let flattened = message.replace('\n', "\u{1f}");
    println!("error\t{code}\t{flattened}");
    let _ = std::io::stdout().flush();
    code
}

pub(super) fn silence_stdout() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // Pointing fd 1 elsewhere closes our end of the parent's pipe, which it reads to EOF.
        let _ = nix::unistd::dup2(null.as_raw_fd(), std::io::stdout().as_raw_fd());
    }
}

/// Starts a background supervisor and returns once it reports the VM running and pinned.
pub(super) fn detach(
    search: &SearchPath,
    base: &BaseDirs,
    profile_arg: &str,
    paused: bool,
    global: &GlobalArgs,
) -> Result<i32, CliError> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let profile_path = search.resolve(profile_arg)?;
    let profile_path = std::path::absolute(&profile_path).unwrap_or(profile_path);
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--state-dir")
        .arg(&base.state)
        .arg("--runtime-dir")
        .arg(&base.runtime)
        .arg("run")
        .arg(&profile_path)
        .arg("--detached-child")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if paused {
        command.arg("--paused");
    }
    for _ in 0..global.verbose {
        command.arg("-v");
    }
    let mut child = command.spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no pipe to the supervisor"))?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let line = line.trim_end();
    if line == "ready" {
        if !global.quiet {
            eprintln!(
                "vmrun: {} is running, supervised by vmrun pid {} (stop it with `vmrun stop {}`)",
                profile_path.display(),
                child.id(),
                profile_arg
            );
        }
        return Ok(exit::OK);
    }
    if let Some(rest) = line.strip_prefix("error\t") {
        let (code, message) = rest.split_once('\t').unwrap_or(("1", rest));
        let _ = child.wait();
        eprintln!("vmrun: {}", message.replace('\u{1f}', "\n"));
        return Ok(code.parse().unwrap_or(exit::FAILURE));
    }
    let status = child.wait()?;
    eprintln!("vmrun: the background supervisor ended before the VM was running ({status})");
    Ok(status.code().filter(|c| *c != 0).unwrap_or(exit::FAILURE))
}

pub(super) fn status(
    search: &SearchPath,
    base: &BaseDirs,
    name: &str,
    json: bool,
) -> Result<i32, CliError> {
    let (name, paths) = vm_paths(search, base, name)?;
    let report = control::status(&paths, &name);
    let code = if report.running {
        exit::OK
    } else {
        exit::NOT_RUNNING
    };
    if json {
        stdout_json(&report)?;
        return Ok(code);
    }
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
    search: &SearchPath,
    base: &BaseDirs,
    name: &str,
    timeout: Option<u64>,
    force: bool,
    global: &GlobalArgs,
) -> Result<i32, CliError> {
    let (name, paths) = vm_paths(search, base, name)?;
    // The supervisor bounds every stage itself; this only guards against a hung supervisor.
    let patience = std::time::Duration::from_secs(timeout.unwrap_or(600) + 120);
    match control::stop(
        &paths,
        &name,
        timeout.map(std::time::Duration::from_secs),
        force,
        patience,
    ) {
        Ok(last) => {
            if !global.quiet {
                eprintln!("vmrun: {name}: {}", last.outcome);
            }
            Ok(last.exit_code)
        }
        Err(control::ControlError::NotRunning(_)) => {
            if !global.quiet {
                eprintln!("vmrun: {name} was not running");
            }
            Ok(exit::OK)
        }
        Err(error) => Err(error.into()),
    }
}

pub(super) fn qmp(
    search: &SearchPath,
    base: &BaseDirs,
    name: &str,
    command: &str,
    arguments: Option<String>,
) -> Result<i32, CliError> {
    let (name, paths) = vm_paths(search, base, name)?;
    let arguments = match arguments {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                CliError::Usage(format!("the QMP arguments are not JSON ({e}): {text}"))
            })?,
        ),
        None => None,
    };
    let reply = control::qmp_command(&paths, &name, command, arguments)?;
    stdout_json(&reply)?;
    Ok(exit::OK)
}

pub(super) fn recover(
    search: &SearchPath,
    base: &BaseDirs,
    profile: &str,
    global: &GlobalArgs,
) -> Result<i32, CliError> {
    let loaded = load(search, profile)?;
    let paths =
        VmPaths::new(base, &loaded.config.name, ImageFormat::Raw).map_err(PlanError::from)?;
    let log = Log::new(global.verbose, global.quiet);
    std::fs::create_dir_all(&paths.runtime_dir)?;
    std::fs::create_dir_all(&paths.state_dir)?;
    let lock =
        state::VmLock::acquire(&paths, loaded.config.name.as_str()).map_err(run::RunError::from)?;
    if let Some(pid) = state::orphaned_qemu(&paths) {
        lock.release();
        return Err(CliError::Preflight(format!(
            "QEMU pid {pid} of {} still runs; stop it first (kill {pid})",
            loaded.config.name
        )));
    }
    log.attach_file(&paths.log);
    let sysfs = host_sysfs();
    let runner = crate::host::runner::SystemRunner;
    let host = crate::host::session::HostPrep::new(
        &loaded.config,
        Sysroot::from_env(),
        &sysfs,
        &runner,
        &paths.journal,
    );
    let result = match host.journal().entries() {
        Err(error) => {
            log.error(&error.to_string());
            exit::FAILURE
        }
        Ok(leftovers) if leftovers.is_empty() => {
            log.info(&format!("{}: nothing to recover", loaded.config.name));
            exit::OK
        }
        Ok(leftovers) => {
            log.info(&format!(
                "{}: undoing {} host change(s) a previous run left",
                loaded.config.name,
                leftovers.len()
            ));
            match host.undo_all(&log) {
                Ok(()) => exit::OK,
                Err(left) => {
                    log.error(&format!("still not restored: {}", left.join("; ")));
                    exit::FAILURE
                }
            }
        }
    };
    state::remove_runtime_files(&paths);
    lock.release();
    Ok(result)
}
