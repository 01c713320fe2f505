//! The command line: parses arguments, asks the application layer (`crate::app`) for one
//! command, renders the result, and turns every error into one clear message and a documented
//! exit code. The commands live by what they show: `profile_commands` (show, check, list),
//! `vm_commands` (run, status, stop, qmp, recover, logs), `usb_commands` (usb),
//! `host_commands` (rom, iommu), `shell_commands` (completions) and `man_pages` (man).

mod host_commands;
mod libvirt_commands;
mod man_pages;
mod profile_commands;
mod shell_commands;
mod top_commands;
mod topology_commands;
mod usb_commands;
mod vm_commands;

use host_commands::{iommu, rom};
use profile_commands::{check, list, show};
use vm_commands::{logs, qmp, recover, run_vm, status, stop, RunMode};

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::ArgValueCandidates;
use serde::Serialize;
use shell_commands::{profile_candidates, running_candidates, vm_candidates};

use crate::app::{App, AppError};
use crate::exit::ExitCode;
use crate::model;

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

/// The index of the first word that is neither an option nor an option's value: the command,
/// or the profile of `vmrun PROFILE`.
fn first_positional(args: &[std::ffi::OsString]) -> Option<usize> {
    let mut index = 1;
    while index < args.len() {
        let word = args[index].to_string_lossy();
        if word == "--" {
            return None;
        }
        if GLOBAL_VALUE_OPTIONS.contains(&word.as_ref()) {
            index += 2;
            continue;
        }
        if word.starts_with('-') {
            index += 1;
            continue;
        }
        return Some(index);
    }
    None
}

fn is_command(word: &str) -> bool {
    use clap::CommandFactory;
    word == "help"
        || Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == word)
}

/// `vmrun [OPTIONS] PROFILE ...` is `vmrun [OPTIONS] run PROFILE ...`: inserts `run` before the
/// first positional argument when that is not a command.
pub fn with_implicit_run(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(index) = first_positional(&args) else {
        return args;
    };
    if is_command(&args[index].to_string_lossy()) {
        return args;
    }
    let mut args = args;
    args.insert(index, "run".into());
    args
}

/// The command a mistyped word most likely meant (`stpo` → `stop`), when the word is no
/// command and `profile_exists` finds no profile of that name either (`vmrun NAME` runs one).
pub fn mistyped_command(
    args: &[std::ffi::OsString],
    profile_exists: impl Fn(&str) -> bool,
) -> Option<String> {
    use clap::CommandFactory;
    let word = args.get(first_positional(args)?)?.to_string_lossy();
    if is_command(&word) || profile_exists(&word) {
        return None;
    }
    let command = Cli::command();
    let (score, name) = command
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| (strsim::jaro_winkler(&word, c.get_name()), c.get_name()))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    (score > 0.8).then(|| {
        format!(
            "`{word}` is not a command, nor a profile on the search path; did you mean \
             `vmrun {name}`? (`vmrun --help` lists the commands)"
        )
    })
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
        /// Profile: a path to a .toml file, or a NAME looked up as NAME.toml on the search path.
        #[arg(add = ArgValueCandidates::new(profile_candidates))]
        profile: String,
        /// Return (exit 0) once the VM runs with every vCPU pinned; supervision and teardown go
        /// on in the background. For scripts and cron.
        #[arg(long)]
        detach: bool,
        /// Leave the vCPUs paused after pinning; resume with `vmrun qmp NAME cont`.
        #[arg(long)]
        paused: bool,
    },
    /// Whether a VM runs: pid, uptime, QMP run state, and each vCPU's thread, CPU affinity,
    /// policy and priority as /proc reports them, and how long it waited for its CPU (run delay,
    /// ms per second) and how often it was preempted. Exit 0 when running, 7 when not, 2 when
    /// NAME is neither a profile nor a VM that ran here.
    Status {
        /// VM name or profile.
        #[arg(add = ArgValueCandidates::new(vm_candidates))]
        name: String,
        /// Print a JSON object instead of text (fields in docs/commands.md).
        #[arg(long)]
        json: bool,
    },
    /// Stop a running VM gracefully from another process: ACPI power-off, then after the
    /// timeout QMP quit, SIGTERM, SIGKILL. Waits until teardown is finished; exits with the
    /// run's exit code (0 clean, 5 forced, 8 a passed device did not answer afterwards). A VM that is not running is not an error; a NAME
    /// that is neither a profile nor a VM that ran here is (exit 2).
    Stop {
        /// VM name or profile.
        #[arg(add = ArgValueCandidates::new(running_candidates))]
        name: String,
        /// Seconds the guest gets to power off [default: the profile's shutdown.timeout].
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Skip the ACPI stage: quit QEMU at once.
        #[arg(long)]
        force: bool,
    },
    /// Undo the host changes a run left behind (vmrun was killed, the machine lost power):
    /// drivers, modules, consoles, display manager, hugepages, files,
    /// slices, workqueues, interrupts, governors. Refuses while the VM runs. Exits 8 while a
    /// passed device the run left on vfio-pci still does not answer.
    Recover {
        /// VM name or profile (the VM need not be on the search path any more).
        #[arg(add = ArgValueCandidates::new(vm_candidates))]
        profile: String,
    },
    /// Send one QMP command to a running VM and print the reply as JSON.
    Qmp {
        /// VM name or profile.
        #[arg(add = ArgValueCandidates::new(running_candidates))]
        name: String,
        /// QMP command, e.g. query-status.
        command: String,
        /// The command's arguments as a JSON object, e.g. '{"device": "net0"}'.
        arguments: Option<String>,
    },
    /// Print the host steps and the QEMU command line a profile produces, one argument per
    /// line, quoted for a shell (QEMU gets its monitors from vmrun as fds 3 and 4). Changes nothing and needs no root.
    Show {
        /// Profile: a path to a .toml file, or a NAME looked up as NAME.toml on the search path.
        #[arg(add = ArgValueCandidates::new(profile_candidates))]
        profile: String,
        /// Print a JSON object with `argv` (QEMU binary first), paths, firmware and warnings.
        #[arg(long)]
        json: bool,
    },
    /// Validate a profile, then check this host read-only (QEMU, /dev/kvm, firmware, files,
    /// pinned CPUs, CAP_SYS_NICE). Exit 0 only when nothing failed.
    Check {
        /// Profile: a path to a .toml file, or a NAME looked up as NAME.toml on the search path.
        #[arg(add = ArgValueCandidates::new(profile_candidates))]
        profile: String,
        /// Print the findings as JSON: `{"name", "ok", "findings": [{"status", "check", "message"}]}`.
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
        /// Print the groups as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// This host's CPUs as a picture: packages, L3 domains (CCX/CCD), cores and their threads,
    /// P/E core types, NUMA nodes. Given a profile, which vCPU sits on each CPU and where QEMU's
    /// other threads and the host run (`pinning.vcpus = "auto"` resolved).
    Topology {
        /// A profile whose vCPUs, emulator and host CPUs to show on the picture.
        profile: Option<String>,
        /// Print the topology (and the VM's placement) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A live view of why a VM stutters, every second: per vCPU its CPU, policy, run delay
    /// (ms per s, with the last minute as a sparkline), preemptions, the CPU's frequency and
    /// governor, interrupts and softirqs on that CPU; per VM QEMU's other threads, RAM,
    /// hugepages and KVM's exits; findings in words. All running VMs without NAME. `q` quits.
    Top {
        /// VM name or profile [default: every running VM].
        #[arg(add = ArgValueCandidates::new(running_candidates))]
        name: Option<String>,
        /// One JSON object per second on stdout (one line each), for scripts and graphs.
        #[arg(long)]
        json: bool,
        /// One interval (a second) and exit: as text, or one object with --json.
        #[arg(long)]
        once: bool,
    },
    /// List the profiles on the search path.
    List {
        /// Print the profiles as JSON: name, path, shadowed paths, running, pid.
        #[arg(long)]
        json: bool,
    },
    /// Print one of a VM's logs: vmrun's own (every run, with times), QEMU's stderr, or the
    /// guest's serial console (`[console] serial = "log"`).
    Logs {
        /// VM name or profile.
        #[arg(add = ArgValueCandidates::new(vm_candidates))]
        name: String,
        /// Keep printing what is appended (also across the next runs) until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// QEMU's stderr instead of vmrun's log.
        #[arg(long, conflicts_with = "console")]
        qemu: bool,
        /// The guest's serial console instead of vmrun's log, without its escape sequences
        /// (colors, cursor moves, screen clears) and control characters.
        #[arg(long)]
        console: bool,
        /// With --console: the bytes as the guest wrote them, escape sequences included.
        #[arg(long)]
        raw: bool,
    },
    /// Attach to the guest's serial console (`[console] serial = "log"`), interactive, as
    /// `virsh console`: what you type goes to the guest, Ctrl-] detaches and the VM runs on.
    /// One client at a time; the console is logged to console.log all along.
    Console {
        /// VM name or profile.
        #[arg(add = ArgValueCandidates::new(running_candidates))]
        name: String,
    },
    /// Open a running VM's display for the desktop user: looking-glass-client on its Looking
    /// Glass file, or remote-viewer on its SPICE/VNC display. Says what to install when the
    /// viewer is missing.
    View {
        /// The VM's profile (or its name on the search path).
        #[arg(add = ArgValueCandidates::new(running_candidates))]
        name: String,
        /// Print the viewer's command line instead of starting it.
        #[arg(long)]
        print: bool,
    },
    /// Hot-plug host USB devices into a running VM (onto its xHCI controller), unplug them, or
    /// list what the guest has and what the host offers. DEVICE is VENDOR:PRODUCT as lsusb
    /// prints it (046d:c52b) or the host port as sysfs names it (1-4.2). Devices attached here
    /// are not attached again on the next start; put them in the profile's [[usb]] for that.
    Usb {
        /// VM name or profile.
        #[arg(add = ArgValueCandidates::new(running_candidates))]
        name: String,
        #[command(subcommand)]
        action: usb_commands::UsbAction,
    },
    /// Print the shell completion script (completes commands, options, profile names and
    /// running VMs). docs/commands.md says where to put it.
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: shell_commands::Shell,
    },
    /// Print a manual page as roff: vmrun(1), or with `vmrun.toml` the profile reference
    /// vmrun.toml(5). Read it with `vmrun man | man -l -`, or install it with
    /// `vmrun man > /usr/local/share/man/man1/vmrun.1` and
    /// `vmrun man vmrun.toml > /usr/local/share/man/man5/vmrun.toml.5`.
    Man {
        /// The page: `vmrun` (the commands) or `vmrun.toml` (the profile's keys).
        #[arg(value_enum, default_value = "vmrun")]
        page: man_pages::Page,
    },
    /// Write a first profile from this host's facts: the GPU's whole IOMMU group, vCPUs on
    /// whole host cores (`vcpus = "auto"`), memory and hugepages that fit, firmware and TPM for
    /// Windows 11, a single-GPU session when the GPU is the host's only one. Prints what it
    /// chose and what to check next. Never overwrites a file.
    New(NewArgs),
    /// Translate another tool's VM definition into a profile.
    Import {
        #[command(subcommand)]
        source: libvirt_commands::ImportSource,
    },
    /// Translate a profile into another tool's VM definition.
    Export {
        #[command(subcommand)]
        target: libvirt_commands::ExportTarget,
    },
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The VM's name (also the profile's file name, NAME.toml).
    name: String,
    /// The PCI address of the GPU to pass (`vmrun iommu` lists them) [default: the host's only
    /// GPU, or the only one whose IOMMU group holds nothing else and that the host did not boot on].
    #[arg(long, value_name = "ADDR")]
    gpu: Option<String>,
    /// Guest memory, e.g. 16G [default: half the host's RAM, 4G to 16G for Windows, 2G to 16G for Linux].
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// The guest OS the profile is made for.
    #[arg(long, value_enum, default_value = "windows11")]
    template: NewTemplate,
    /// The guest's disk image [default: /var/lib/vmrun/images/NAME.qcow2 as root,
    /// $XDG_DATA_HOME/vmrun/images/NAME.qcow2 otherwise].
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Where to write the profile (`-`: print it) [default: /etc/vmrun/profiles/NAME.toml as
    /// root, $XDG_CONFIG_HOME/vmrun/profiles/NAME.toml otherwise].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum NewTemplate {
    Windows11,
    Windows10,
    Linux,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct RomArgs {
    #[command(subcommand)]
    action: Option<RomAction>,
    /// The ROM file.
    file: Option<PathBuf>,
    /// Print the images and problems as JSON (fields in docs/commands.md).
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
        /// The file to write the ROM to.
        out: PathBuf,
    },
}

/// A failure that ends the command; each maps to one exit code.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("{0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Rom(#[from] crate::rom::RomError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::App(error) => error.exit_code(),
            CliError::Usage(_) => ExitCode::Usage,
            CliError::Output(_) | CliError::Rom(_) | CliError::Host(_) => ExitCode::Failure,
        }
    }
}

impl From<crate::profile::ProfileError> for CliError {
    fn from(error: crate::profile::ProfileError) -> Self {
        CliError::App(error.into())
    }
}

pub fn main() -> i32 {
    crate::log::mark_start();
    shell_commands::answer_completion_request();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let search = crate::profile::SearchPath::from_env();
    if let Some(message) = mistyped_command(&args, |word| search.resolve(word).is_ok()) {
        eprintln!("vmrun: {message}");
        return ExitCode::Usage.code();
    }
    let cli = match Cli::try_parse_from(with_implicit_run(args)) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return error.exit_code();
        }
    };
    match run(cli) {
        Ok(code) => code.code(),
        Err(CliError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(error) => {
            eprintln!("vmrun: {error}");
            error.exit_code().code()
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let app = App::from_env(cli.global.state_dir.clone(), cli.global.runtime_dir.clone());
    let global = &cli.global;
    match cli.command {
        Some(Command::Show { profile, json }) => show(&app, &profile, json, global.quiet),
        Some(Command::Check { profile, json }) => check(&app, &profile, json),
        Some(Command::List { json }) => list(&app, json),
        Some(Command::Top { name, json, once }) => {
            top_commands::top(&app, name.as_deref(), json, once)
        }
        Some(Command::Topology { profile, json }) => {
            topology_commands::topology(&app, profile.as_deref(), json, global.quiet)
        }
        Some(Command::New(args)) => profile_commands::new(&app, args, global.quiet),
        Some(Command::Import { source }) => libvirt_commands::import(&app, source, global.quiet),
        Some(Command::Export { target }) => libvirt_commands::export(&app, target, global.quiet),
        Some(Command::Rom(args)) => rom(&app, args),
        Some(Command::Iommu { json }) => iommu(&app, json),
        Some(Command::Recover { profile }) => recover(&app, &profile, global),
        Some(Command::Run {
            profile,
            detach,
            paused,
        }) => {
            let mode = if detach {
                RunMode::Detach
            } else {
                RunMode::Foreground
            };
            run_vm(&app, &profile, mode, paused, global)
        }
        Some(Command::Status { name, json }) => status(&app, &name, json),
        Some(Command::Logs {
            name,
            follow,
            qemu,
            console,
            raw,
        }) => {
            if raw && !console {
                return Err(CliError::Usage(
                    "--raw goes with --console: the other logs have no escape sequences to keep"
                        .into(),
                ));
            }
            let kind = match (qemu, console) {
                (true, _) => crate::app::logs::LogKind::Qemu,
                (_, true) => crate::app::logs::LogKind::Console,
                _ => crate::app::logs::LogKind::Vmrun,
            };
            logs(&app, &name, kind, follow, raw)
        }
        Some(Command::View { name, print }) => vm_commands::view(&app, &name, print),
        Some(Command::Console { name }) => vm_commands::console(&app, &name, global),
        Some(Command::Usb { name, action }) => usb_commands::usb(&app, &name, action, global),
        Some(Command::Completions { shell }) => shell_commands::completions(shell),
        Some(Command::Man { page }) => man_pages::man(page),
        Some(Command::Stop {
            name,
            timeout,
            force,
        }) => stop(&app, &name, timeout, force, global),
        Some(Command::Qmp {
            name,
            command,
            arguments,
        }) => qmp(&app, &name, &command, arguments),
        None => Err(CliError::Usage(
            "give a profile to run, or a command; see `vmrun --help`".to_string(),
        )),
    }
}

fn stdout_json(value: &impl Serialize) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

fn parse_address(text: &str) -> Result<model::PciAddress, CliError> {
    text.parse()
        .map_err(|e: String| CliError::Usage(format!("`{text}` is not a PCI address: {e}")))
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

    /// Every argument of every command says what it is in `--help` and the manual page.
    #[test]
    fn every_argument_has_help() {
        use clap::CommandFactory;
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut command = Cli::command();
        command.build();
        walk(&command, "vmrun", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn a_mistyped_command_is_named() {
        let args =
            |words: &[&str]| -> Vec<std::ffi::OsString> { words.iter().map(Into::into).collect() };
        let none = |_: &str| false;
        let said = mistyped_command(&args(&["vmrun", "stpo", "demo"]), none).unwrap();
        assert!(said.contains("did you mean `vmrun stop`?"), "{said}");
        let said = mistyped_command(&args(&["vmrun", "-v", "stauts", "demo"]), none).unwrap();
        assert!(said.contains("`vmrun status`"), "{said}");
        // A profile of that name is run, as `vmrun PROFILE` promises; commands are left alone.
        assert_eq!(mistyped_command(&args(&["vmrun", "stpo"]), |_| true), None);
        assert_eq!(mistyped_command(&args(&["vmrun", "stop", "x"]), none), None);
        assert_eq!(mistyped_command(&args(&["vmrun", "win10"]), none), None);
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
