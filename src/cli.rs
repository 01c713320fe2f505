//! The command line: parses arguments, runs one command, and turns every error into one clear
//! message and a documented exit code.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::check::{self, Finding, HostView, Status, Sysroot};
use crate::firmware::{self, ImageFormat};
use crate::log::Log;
use crate::model::{self, VmConfig, VmName};
use crate::plan::{self, BaseDirs, BootFirmware, Plan, PlanError, VmPaths};
use crate::profile::{self, Diagnostic, ProfileError, ProfileSource, SearchPath};
use crate::run::{self, control, state, RunOptions};

/// Exit codes, documented in the README.
pub mod exit {
    /// Success (for `check`: nothing failed).
    pub const OK: i32 = 0;
    /// A runtime failure: the host, QEMU or the firmware did not do what was needed.
    pub const FAILURE: i32 = 1;
    /// Usage error or invalid profile: fix the command line or the profile.
    pub const USAGE: i32 = 2;
    /// `check` (or the preflight before `run`) found at least one failure.
    pub const CHECK_FAILED: i32 = 3;
    /// `run`: the VM is already running.
    pub const ALREADY_RUNNING: i32 = crate::run::exit::ALREADY_RUNNING;
    /// `run`/`stop`: the guest did not power off within the timeout and was stopped by force.
    pub const FORCED: i32 = crate::run::exit::FORCED;
    /// `run`/`stop`: QEMU refused to start, crashed, or the guest panicked.
    pub const QEMU_FAILED: i32 = crate::run::exit::QEMU_FAILED;
    /// `status`/`qmp`: the VM is not running.
    pub const NOT_RUNNING: i32 = 7;
}

const ABOUT: &str = "Start QEMU/KVM GPU-passthrough VMs from one TOML profile, without libvirt.";
const AFTER_HELP: &str = "\
Profiles: PROFILE is a path to a .toml file or a name looked up as NAME.toml in
$VMRUN_PROFILE_PATH, ./vm-profiles, ~/.config/vmrun/profiles, /etc/vmrun/profiles.

Exit codes: 0 success, 1 runtime failure, 2 usage or profile error, 3 check failed,
4 already running, 5 guest stopped by force, 6 QEMU failed or guest panicked, 7 not running.";

#[derive(Debug, Parser)]
#[command(
    name = "vmrun",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    override_usage = "vmrun [OPTIONS] PROFILE     (the same as `vmrun run PROFILE`)\n       vmrun [OPTIONS] <COMMAND>"
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Global options that take a value, so that the value is not mistaken for a profile.
const GLOBAL_VALUE_OPTIONS: &[&str] = &["--state-dir", "--runtime-dir"];

/// `vmrun [OPTIONS] PROFILE ...` is `vmrun [OPTIONS] run PROFILE ...`: inserts `run` before the
/// first positional argument when that is not a command.
pub fn with_implicit_run(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let command = Cli::command();
    let is_command =
        |word: &str| word == "help" || command.get_subcommands().any(|c| c.get_name() == word);
    let mut index = 1;
    while index < args.len() {
        let word = args[index].to_string_lossy();
        if word == "--" {
            return args;
        }
        if GLOBAL_VALUE_OPTIONS.contains(&word.as_ref()) {
            index += 2;
            continue;
        }
        if word.starts_with('-') {
            index += 1;
            continue;
        }
        if is_command(&word) {
            return args;
        }
        let mut args = args;
        args.insert(index, "run".into());
        return args;
    }
    args
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Where each VM keeps its VARS copy, logs and journal [default: /var/lib/vmrun as root, $XDG_STATE_HOME/vmrun otherwise]
    #[arg(long, global = true, env = "VMRUN_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where each VM's QMP socket, pidfile and lock live while it runs [default: /run/vmrun as root, $XDG_RUNTIME_DIR/vmrun otherwise]
    #[arg(long, global = true, env = "VMRUN_RUNTIME_DIR", value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// More detail on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the VM: QEMU paused, every vCPU pinned through QMP, then resumed and supervised
    /// until the guest powers off, or SIGINT/SIGTERM/SIGHUP asks for a graceful stop.
    Run {
        profile: String,
        /// Return (exit 0) once the VM runs with every vCPU pinned; supervision and teardown go
        /// on in the background. For scripts and cron.
        #[arg(long)]
        detach: bool,
        /// Leave the vCPUs paused after pinning; resume with `vmrun qmp NAME cont`.
        #[arg(long)]
        paused: bool,
        /// Internal: this process is the background supervisor of `--detach`.
        #[arg(long, hide = true)]
        detached_child: bool,
    },
    /// Whether a VM runs: pid, uptime, QMP run state, and each vCPU's thread, CPU affinity,
    /// policy and priority as /proc reports them. Exit 0 when running, 7 when not.
    Status {
        /// VM name or profile.
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop a running VM gracefully from another process: ACPI power-off, then after the
    /// timeout QMP quit, SIGTERM, SIGKILL. Waits until teardown is finished; exits with the
    /// run's exit code (0 clean, 5 forced). A VM that is not running is not an error.
    Stop {
        /// VM name or profile.
        name: String,
        /// Seconds the guest gets to power off [default: the profile's shutdown.timeout].
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Skip the ACPI stage: quit QEMU at once.
        #[arg(long)]
        force: bool,
    },
    /// Undo the host changes a run left behind (vmrun was killed, the machine lost power):
    /// drivers, modules, consoles, display manager, hugepages, files. Refuses while the VM runs.
    Recover {
        /// Profile (or VM name whose profile is on the search path).
        profile: String,
    },
    /// Send one QMP command to a running VM and print the reply as JSON.
    Qmp {
        /// VM name or profile.
        name: String,
        /// QMP command, e.g. query-status.
        command: String,
        /// The command's arguments as a JSON object, e.g. '{"device": "net0"}'.
        arguments: Option<String>,
    },
    /// Print the QEMU command line a profile produces, one argument per line, ready to paste
    /// into a shell. Changes nothing and needs no root.
    Show {
        profile: String,
        /// Print a JSON object with `argv` (QEMU binary first), paths, firmware and warnings.
        #[arg(long)]
        json: bool,
    },
    /// Validate a profile, then check this host read-only (QEMU, /dev/kvm, firmware, files,
    /// pinned CPUs, CAP_SYS_NICE). Exit 0 only when nothing failed.
    Check {
        profile: String,
        #[arg(long)]
        json: bool,
    },
    /// Inspect a GPU ROM file: its images (offset, code type, vendor:device, class, length,
    /// last flag, checksum; subsystem and machine type of EFI images), whether it has an EFI (GOP)
    /// image OVMF can use, and a dump header before the first image. Exit 0 when nothing is wrong,
    /// 3 when something is (header, truncation, no image, --device mismatch).
    Rom(RomArgs),
    /// Every IOMMU group of this host with its devices: address, class, vendor:device, driver,
    /// whether it can be reset, and which GPU the firmware booted on.
    Iommu {
        #[arg(long)]
        json: bool,
    },
    /// List the profiles on the search path.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct RomArgs {
    #[command(subcommand)]
    action: Option<RomAction>,
    /// The ROM file.
    file: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    /// Check that the ROM is made for this host device (its vendor:device, read from sysfs).
    #[arg(long, value_name = "ADDR")]
    device: Option<String>,
    /// Write a copy that starts at the first image, without the dump header; FILE is not changed.
    #[arg(long, value_name = "OUT")]
    strip: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum RomAction {
    /// Read a device's ROM through sysfs (enable `rom`, read, disable) into OUT.
    Dump {
        /// PCI address, e.g. 0000:01:00.0 or 01:00.0.
        address: String,
        out: PathBuf,
    },
}

/// A failure that ends the command; each maps to one exit code.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("{0}")]
    Preflight(String),
    #[error(transparent)]
    Rom(#[from] crate::rom::RomError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Profile(_) | CliError::Usage(_) => exit::USAGE,
            CliError::Plan(_) | CliError::Output(_) => exit::FAILURE,
            CliError::Run(error) => error.exit_code(),
            CliError::Control(control::ControlError::NotRunning(_)) => exit::NOT_RUNNING,
            CliError::Control(_) => exit::FAILURE,
            CliError::Preflight(_) => exit::CHECK_FAILED,
            CliError::Rom(_) | CliError::Host(_) => exit::FAILURE,
        }
    }
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse_from(with_implicit_run(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return error.exit_code();
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(CliError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(error) => {
            eprintln!("vmrun: {error}");
            error.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<i32, CliError> {
    let base = BaseDirs::resolve(cli.global.state_dir.clone(), cli.global.runtime_dir.clone());
    let search = SearchPath::from_env();
    let global = &cli.global;
    match cli.command {
        Some(Command::Show { profile, json }) => show(&search, &base, &profile, json, global.quiet),
        Some(Command::Check { profile, json }) => check(&search, &base, &profile, json),
        Some(Command::List { json }) => list(&search, &base, json),
        Some(Command::Rom(args)) => rom(args),
        Some(Command::Iommu { json }) => iommu(json),
        Some(Command::Recover { profile }) => recover(&search, &base, &profile, global),
        Some(Command::Run {
            profile,
            detach,
            paused,
            detached_child,
        }) => {
            let mode = match (detached_child, detach) {
                (true, _) => RunMode::DetachedChild,
                (false, true) => RunMode::Detach,
                (false, false) => RunMode::Foreground,
            };
            run_vm(&search, &base, &profile, mode, paused, global)
        }
        Some(Command::Status { name, json }) => status(&search, &base, &name, json),
        Some(Command::Stop {
            name,
            timeout,
            force,
        }) => stop(&search, &base, &name, timeout, force, global),
        Some(Command::Qmp {
            name,
            command,
            arguments,
        }) => qmp(&search, &base, &name, &command, arguments),
        None => Err(CliError::Usage(
            "give a profile to run, or a command; see `vmrun --help`".to_string(),
        )),
    }
}

/// A profile read and validated, with the warnings validation produced.
struct Loaded {
    config: VmConfig,
    warnings: Vec<Diagnostic>,
}

fn load(search: &SearchPath, profile: &str) -> Result<Loaded, ProfileError> {
    let path = search.resolve(profile)?;
    let source = ProfileSource::read(&path)?;
    let raw = profile::parse(&source).map_err(ProfileError::Invalid)?;
    let (config, warnings) = model::validate(&source, &raw).map_err(ProfileError::Invalid)?;
    Ok(Loaded { config, warnings })
}

fn stdout_json(value: &impl Serialize) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

#[derive(Serialize)]
struct ShowOutput<'a> {
    #[serde(flatten)]
    plan: &'a Plan,
    /// What the host layer does before QEMU starts (and undoes after), in order.
    host_plan: Vec<String>,
    warnings: Vec<String>,
}

fn show(
    search: &SearchPath,
    base: &BaseDirs,
    profile: &str,
    json: bool,
    quiet: bool,
) -> Result<i32, CliError> {
    let loaded = load(search, profile)?;
    let firmware = plan::resolve_firmware(&loaded.config, &firmware::default_descriptor_dirs())
        .map_err(PlanError::from)?;
    let plan = Plan::new(&loaded.config, &firmware, base)?;
    if json {
        stdout_json(&ShowOutput {
            plan: &plan,
            host_plan: crate::host::plan::describe(&loaded.config),
            warnings: loaded.warnings.iter().map(ToString::to_string).collect(),
        })?;
    } else {
        if !quiet {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
        }
        let mut out = std::io::stdout().lock();
        let host_plan = crate::host::plan::describe(&loaded.config);
        if !host_plan.is_empty() {
            writeln!(out, "# host preparation, in order:")?;
            for step in host_plan {
                writeln!(out, "#   {step}")?;
            }
        }
        writeln!(out, "{}", shell_lines(&plan.argv))?;
    }
    Ok(exit::OK)
}

/// One argument per line, quoted for POSIX shells, joined with line continuations.
pub fn shell_lines(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            shlex::try_quote(arg)
                .map(|quoted| quoted.into_owned())
                // Only a NUL byte cannot be quoted, and no argv can carry one anyway.
                .unwrap_or_else(|_| format!("'{}'", arg.replace('\0', "")))
        })
        .collect::<Vec<_>>()
        .join(" \\\n  ")
}

#[derive(Serialize)]
struct CheckOutput {
    profile: String,
    name: Option<String>,
    ok: bool,
    findings: Vec<Finding>,
}

fn check(search: &SearchPath, base: &BaseDirs, profile: &str, json: bool) -> Result<i32, CliError> {
    let mut findings = Vec::new();
    let mut name = None;
    let mut code = exit::OK;
    match load(search, profile) {
        Err(ProfileError::Invalid(diagnostics)) => {
            for diagnostic in diagnostics {
                let status = match diagnostic.severity {
                    profile::Severity::Error => Status::Fail,
                    profile::Severity::Warning => Status::Warn,
                };
                findings.push(Finding::new(status, "profile", diagnostic.to_string()));
            }
            code = exit::USAGE;
        }
        Err(other) => return Err(other.into()),
        Ok(loaded) => {
            name = Some(loaded.config.name.to_string());
            findings.push(Finding::new(
                Status::Pass,
                "profile",
                format!("{} is valid", loaded.config.profile_path.display()),
            ));
            for warning in &loaded.warnings {
                let (status, check) = match warning.kind {
                    profile::Kind::MissingFile => (Status::Fail, "files"),
                    profile::Kind::Profile => (Status::Warn, "profile"),
                };
                let text = match warning.kind {
                    profile::Kind::MissingFile => warning.located(),
                    profile::Kind::Profile => warning.to_string(),
                };
                findings.push(Finding::new(status, check, text));
            }
            let host = HostView {
                sysroot: Sysroot::from_env(),
            };
            findings.extend(check::host_findings(&loaded.config, &host, true));
            findings.extend(check::pci_findings(&loaded.config, &host.sysroot));
            match plan::resolve_firmware(&loaded.config, &firmware::default_descriptor_dirs()) {
                Err(error) => {
                    findings.push(Finding::new(Status::Fail, "firmware", error.to_string()))
                }
                Ok(firmware) => match Plan::new(&loaded.config, &firmware, base) {
                    Ok(plan) => {
                        findings.extend(check::firmware_findings(&firmware, &plan.paths));
                        findings.extend(check::rom_findings(
                            &loaded.config,
                            &firmware,
                            &host_sysfs(),
                        ));
                    }
                    Err(error) => {
                        findings.push(Finding::new(Status::Fail, "paths", error.to_string()))
                    }
                },
            }
        }
    }
    let ok = findings.iter().all(|f| f.status != Status::Fail);
    if code == exit::OK && !ok {
        code = exit::CHECK_FAILED;
    }
    if json {
        stdout_json(&CheckOutput {
            profile: profile.to_string(),
            name,
            ok,
            findings,
        })?;
    } else {
        let mut out = std::io::stdout().lock();
        for finding in &findings {
            writeln!(
                out,
                "{}  {:<13} {}",
                finding.status.label(),
                finding.check,
                finding.message
            )?;
        }
    }
    Ok(code)
}

#[derive(Serialize)]
struct ListEntry {
    name: String,
    path: PathBuf,
    shadows: Vec<PathBuf>,
    running: bool,
    pid: Option<u32>,
}

fn list(search: &SearchPath, base: &BaseDirs, json: bool) -> Result<i32, CliError> {
    let entries: Vec<ListEntry> = search
        .entries()
        .into_iter()
        .map(|entry| {
            let name = vm_name_of(&entry.path).unwrap_or_else(|| entry.name.clone());
            let running = name
                .parse::<VmName>()
                .ok()
                .and_then(|vm| VmPaths::new(base, &vm, ImageFormat::Raw).ok())
                .and_then(|paths| state::running(&paths));
            ListEntry {
                name,
                path: entry.path,
                shadows: entry.shadows,
                running: running.is_some(),
                pid: running.map(|r| r.qemu_pid),
            }
        })
        .collect();
    if json {
        stdout_json(&entries)?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    if entries.is_empty() {
        let dirs: Vec<String> = search
            .dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        writeln!(out, "no profiles found in: {}", dirs.join(", "))?;
    }
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for entry in &entries {
        let state = match entry.pid {
            Some(pid) => format!("running (pid {pid})"),
            None => "stopped".to_string(),
        };
        write!(
            out,
            "{:<width$}  {:<20}  {}",
            entry.name,
            state,
            entry.path.display()
        )?;
        for hidden in &entry.shadows {
            write!(out, "  (hides {})", hidden.display())?;
        }
        writeln!(out)?;
    }
    Ok(exit::OK)
}

/// The VM name a profile declares (its `name`, else its file stem), without full validation.
fn vm_name_of(path: &std::path::Path) -> Option<String> {
    let source = ProfileSource::read(path).ok()?;
    let raw = profile::parse(&source).ok()?;
    Some(
        raw.name
            .map(|n| n.into_inner())
            .unwrap_or_else(|| source.stem()),
    )
}

/// `status`/`stop`/`qmp` take a VM name or a profile: a profile gives its declared name.
fn vm_paths(
    search: &SearchPath,
    base: &BaseDirs,
    name_or_profile: &str,
) -> Result<(String, VmPaths), CliError> {
    let name = search
        .resolve(name_or_profile)
        .ok()
        .filter(|path| path.is_file())
        .and_then(|path| vm_name_of(&path))
        .unwrap_or_else(|| name_or_profile.to_string());
    let vm: VmName = name.parse().map_err(|e: String| {
        CliError::Usage(format!(
            "`{name_or_profile}` is neither a profile nor a VM name: {e}"
        ))
    })?;
    let paths = VmPaths::new(base, &vm, ImageFormat::Raw).map_err(PlanError::from)?;
    Ok((name, paths))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RunMode {
    Foreground,
    Detach,
    DetachedChild,
}

/// Validation and the host checks `run` cannot do without; every failure is printed.
fn run_preflight(loaded: &Loaded, firmware: &BootFirmware, plan: &Plan) -> Result<(), CliError> {
    let host = HostView {
        sysroot: Sysroot::from_env(),
    };
    let mut findings: Vec<Finding> = loaded
        .warnings
        .iter()
        .filter(|w| w.kind == profile::Kind::MissingFile)
        .map(|w| Finding::new(Status::Fail, "files", w.located()))
        .collect();
    findings.extend(check::host_findings(&loaded.config, &host, false));
    findings.extend(check::pci_findings(&loaded.config, &host.sysroot));
    findings.extend(check::firmware_findings(firmware, &plan.paths));
    findings.extend(check::rom_findings(&loaded.config, firmware, &host_sysfs()));
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

fn run_vm(
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
        if global.quiet {
            // Warnings are still in the log file.
        } else if mode == RunMode::Foreground {
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
fn tell_parent_ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
    silence_stdout();
}

fn report_to_parent(message: &str, code: i32) -> i32 {
    let flattened = message.replace('\n', "\u{1f}");
    println!("error\t{code}\t{flattened}");
    let _ = std::io::stdout().flush();
    code
}

fn silence_stdout() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // Pointing fd 1 elsewhere closes our end of the parent's pipe, which it reads to EOF.
        let _ = nix::unistd::dup2(null.as_raw_fd(), std::io::stdout().as_raw_fd());
    }
}

/// Starts a background supervisor and returns once it reports the VM running and pinned.
fn detach(
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

fn status(search: &SearchPath, base: &BaseDirs, name: &str, json: bool) -> Result<i32, CliError> {
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

fn stop(
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

fn qmp(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[&str]) -> Vec<String> {
        with_implicit_run(args.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_bare_profile_means_run() {
        assert_eq!(words(&["vmrun", "win10"]), ["vmrun", "run", "win10"]);
        assert_eq!(
            words(&["vmrun", "--state-dir", "/s", "-v", "win10", "--detach"]),
            [
                "vmrun",
                "--state-dir",
                "/s",
                "-v",
                "run",
                "win10",
                "--detach"
            ]
        );
        assert_eq!(
            words(&["vmrun", "status", "win10"]),
            ["vmrun", "status", "win10"]
        );
        assert_eq!(words(&["vmrun", "--help"]), ["vmrun", "--help"]);
        assert_eq!(words(&["vmrun", "help", "run"]), ["vmrun", "help", "run"]);
    }
}

fn host_sysfs() -> crate::host::RealSysfs {
    crate::host::RealSysfs {
        root: Sysroot::from_env(),
    }
}

fn parse_address(text: &str) -> Result<model::PciAddress, CliError> {
    text.parse()
        .map_err(|e: String| CliError::Usage(format!("`{text}` is not a PCI address: {e}")))
}

#[derive(Serialize)]
struct RomOutput<'a> {
    file: &'a std::path::Path,
    #[serde(flatten)]
    report: &'a crate::rom::RomReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<RomDeviceMatch>,
}

#[derive(Serialize)]
struct RomDeviceMatch {
    address: String,
    vendor_id: String,
    device_id: String,
    matches: bool,
}

fn rom(args: RomArgs) -> Result<i32, CliError> {
    if let Some(RomAction::Dump { address, out }) = args.action {
        let address = parse_address(&address)?;
        let data = crate::host::read_rom(&host_sysfs(), address)?;
        std::fs::write(&out, &data).map_err(|source| crate::rom::RomError::Write {
            path: out.clone(),
            source,
        })?;
        let report = crate::rom::parse(&data);
        eprintln!(
            "vmrun: wrote {} ({} bytes) from {address}: {} image(s), EFI image: {}",
            out.display(),
            data.len(),
            report.images.len(),
            if report.has_efi { "yes" } else { "no" }
        );
        return Ok(exit::OK);
    }
    let Some(file) = args.file else {
        return Err(CliError::Usage(
            "give a ROM file, or `vmrun rom dump ADDR OUT`".into(),
        ));
    };
    if let Some(out) = &args.strip {
        let stripped = crate::rom::strip(&file, out)?;
        eprintln!(
            "vmrun: wrote {} without the {}-byte header: {} image(s)",
            out.display(),
            crate::rom::inspect(&file)?.header_bytes,
            stripped.images.len()
        );
    }
    let report = crate::rom::inspect(&file)?;
    let device = match &args.device {
        Some(text) => {
            let address = parse_address(text)?;
            let (vendor, device) = crate::host::pci_ids(&host_sysfs(), address)?;
            let matches = report
                .first_image()
                .is_some_and(|image| (image.vendor, image.device) == (vendor, device));
            Some(RomDeviceMatch {
                address: address.to_string(),
                vendor_id: format!("{vendor:04x}"),
                device_id: format!("{device:04x}"),
                matches,
            })
        }
        None => None,
    };
    let ok = !report.images.is_empty()
        && report.problems.is_empty()
        && device.as_ref().is_none_or(|d| d.matches);
    if args.json {
        stdout_json(&RomOutput {
            file: &file,
            report: &report,
            device,
        })?;
    } else {
        print_rom(&file, &report, device.as_ref())?;
    }
    Ok(if ok { exit::OK } else { exit::CHECK_FAILED })
}

fn print_rom(
    file: &std::path::Path,
    report: &crate::rom::RomReport,
    device: Option<&RomDeviceMatch>,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} bytes, {} image(s){}",
        file.display(),
        report.size,
        report.images.len(),
        if report.header_bytes > 0 {
            format!(
                ", {}-byte header before the first image",
                report.header_bytes
            )
        } else {
            String::new()
        }
    )?;
    for (index, image) in report.images.iter().enumerate() {
        write!(
            out,
            "  #{index} at 0x{:06x}  {:<6} {}:{}  class {}  {:>7} bytes  checksum {}{}{}",
            image.offset,
            image.code_type.to_string(),
            image.vendor_id,
            image.device_id,
            image.class,
            image.length,
            if image.checksum_ok { "ok" } else { "BAD" },
            if image.last { "  last" } else { "" },
            if image.data_structure != "PCIR" {
                format!("  ({})", image.data_structure)
            } else {
                String::new()
            },
        )?;
        if let Some(npde) = &image.npde {
            write!(
                out,
                "  NPDE: {} bytes{}",
                npde.length,
                if npde.last { " last" } else { "" }
            )?;
        }
        if let Some(efi) = &image.efi {
            write!(
                out,
                "  EFI {} {}{}",
                efi.machine_type,
                efi.subsystem_name,
                if efi.compressed { ", compressed" } else { "" }
            )?;
        }
        writeln!(out)?;
    }
    if report.has_efi {
        writeln!(out, "EFI (GOP) image: yes, OVMF can use this ROM")?;
    } else if !report.images.is_empty() {
        writeln!(out, "EFI (GOP) image: no, only a legacy BIOS (SeaBIOS) can use this ROM; OVMF shows nothing until the guest driver loads")?;
    }
    if let Some(device) = device {
        writeln!(
            out,
            "device {}: {}:{}, {}",
            device.address,
            device.vendor_id,
            device.device_id,
            if device.matches {
                "the ROM matches"
            } else {
                "the ROM is NOT for this device"
            }
        )?;
    }
    for problem in &report.problems {
        writeln!(out, "problem: {problem}")?;
    }
    if report.header_bytes > 0 {
        writeln!(
            out,
            "fix: vmrun rom {} --strip {}",
            shlex::try_quote(&file.to_string_lossy()).unwrap_or_default(),
            shlex::try_quote(&file.with_extension("stripped.rom").to_string_lossy())
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct IommuGroupOutput {
    group: u32,
    devices: Vec<crate::host::pci::PciDeviceInfo>,
}

fn iommu(json: bool) -> Result<i32, CliError> {
    use crate::host::pci;
    let root = Sysroot::from_env();
    let groups = pci::iommu_groups(&root);
    if json {
        let list: Vec<IommuGroupOutput> = groups
            .into_iter()
            .map(|(group, devices)| IommuGroupOutput { group, devices })
            .collect();
        stdout_json(&list)?;
        return Ok(if list.is_empty() {
            exit::FAILURE
        } else {
            exit::OK
        });
    }
    if groups.is_empty() {
        eprintln!("vmrun: {}", pci::ENABLE_IOMMU_HINT);
        return Ok(exit::FAILURE);
    }
    let mut out = std::io::stdout().lock();
    for (group, devices) in groups {
        writeln!(out, "IOMMU group {group}")?;
        for device in devices {
            writeln!(
                out,
                "  {}  {}  {}  {:<14} reset: {}{}",
                device.address,
                device.class,
                device.vendor_device,
                device.driver.as_deref().unwrap_or("(no driver)"),
                if device.resettable { "yes" } else { "no" },
                if device.boot_vga { "  boot VGA" } else { "" }
            )?;
        }
    }
    Ok(exit::OK)
}

fn recover(
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
    if let Some(stale) = state::read_json::<state::RunState>(&state::state_file(&paths)) {
        if state::process_alive(stale.qemu_pid, "qemu") {
            lock.release();
            return Err(CliError::Preflight(format!(
                "QEMU pid {} of {} still runs; stop it first (kill {})",
                stale.qemu_pid, loaded.config.name, stale.qemu_pid
            )));
        }
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
    for file in [
        state::state_file(&paths),
        state::stop_request_file(&paths),
        paths.qmp_socket.clone(),
        paths.ctl_socket.clone(),
        paths.pidfile.clone(),
    ] {
        let _ = std::fs::remove_file(file);
    }
    lock.release();
    Ok(result)
}
