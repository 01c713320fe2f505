//! The command line: parses arguments, runs one command, and turns every error into one clear
//! message and a documented exit code.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::check::{self, Finding, HostView, Status, Sysroot};
use crate::firmware;
use crate::model::{self, VmConfig};
use crate::plan::{self, BaseDirs, Plan, PlanError};
use crate::profile::{self, Diagnostic, ProfileError, ProfileSource, SearchPath};

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
}

const ABOUT: &str = "Start QEMU/KVM GPU-passthrough VMs from one TOML profile, without libvirt.";
const AFTER_HELP: &str = "\
Profiles: PROFILE is a path to a .toml file or a name looked up as NAME.toml in
$VMRUN_PROFILE_PATH, ./vm-profiles, ~/.config/vmrun/profiles, /etc/vmrun/profiles.

Exit codes: 0 success, 1 runtime failure, 2 usage or profile error, 3 check failed.";

#[derive(Debug, Parser)]
#[command(name = "vmrun", version, about = ABOUT, after_help = AFTER_HELP, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Option<Command>,
    /// Profile to run: `vmrun PROFILE` is `vmrun run PROFILE`.
    profile: Option<String>,
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
    /// List the profiles on the search path.
    List {
        #[arg(long)]
        json: bool,
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
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Profile(_) | CliError::Usage(_) => exit::USAGE,
            CliError::Plan(_) | CliError::Output(_) => exit::FAILURE,
        }
    }
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
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
    match (cli.command, cli.profile) {
        (Some(Command::Show { profile, json }), _) => {
            show(&search, &base, &profile, json, cli.global.quiet)
        }
        (Some(Command::Check { profile, json }), _) => check(&search, &base, &profile, json),
        (Some(Command::List { json }), _) => list(&search, json),
        (None, Some(profile)) => Err(CliError::Usage(format!(
            "running `{profile}` needs `vmrun run`, which this build does not have yet; \
             `vmrun show {profile}` prints the QEMU command line"
        ))),
        (None, None) => Err(CliError::Usage(
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
            warnings: loaded.warnings.iter().map(ToString::to_string).collect(),
        })?;
    } else {
        if !quiet {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
        }
        let mut out = std::io::stdout().lock();
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
            findings.extend(check::host_findings(&loaded.config, &host));
            match plan::resolve_firmware(&loaded.config, &firmware::default_descriptor_dirs()) {
                Err(error) => {
                    findings.push(Finding::new(Status::Fail, "firmware", error.to_string()))
                }
                Ok(firmware) => match Plan::new(&loaded.config, &firmware, base) {
                    Ok(plan) => findings.extend(check::firmware_findings(&firmware, &plan.paths)),
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

fn list(search: &SearchPath, json: bool) -> Result<i32, CliError> {
    let entries = search.entries();
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
        write!(out, "{:<width$}  {}", entry.name, entry.path.display())?;
        for hidden in &entry.shadows {
            write!(out, "  (hides {})", hidden.display())?;
        }
        writeln!(out)?;
    }
    Ok(exit::OK)
}
