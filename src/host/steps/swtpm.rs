//! The VM's TPM 2.0: swtpm, a process next to QEMU, serving QEMU's `-tpmdev emulator` on a
//! control socket. Its state (BitLocker keys, Windows Hello) lives in the VM's state directory
//! and is never removed or overwritten; the first run creates it with `swtpm_setup`. The undo
//! record stops swtpm and removes its socket and pidfile, so teardown and `vmrun recover`
//! both end it; a parent-death signal ends it when vmrun is killed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{Companion, LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::libvirt::xml::{Element, Node};
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::VmPaths;

/// The oldest swtpm known to work here: 0.6 made `swtpm_setup` the C rewrite whose options
/// vmrun uses, and added `--print-capabilities` to both programs.
const MIN_VERSION: (u32, u32) = (0, 6);
const INSTALL: &str =
    "install it (Debian/Ubuntu: apt install swtpm swtpm-tools; Fedora, Arch: swtpm)";
/// The file swtpm keeps a TPM 2.0's state in.
pub const STATE_FILE: &str = "tpm2-00.permall";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StartSwtpm {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
}

/// Journaled before swtpm starts: stop the swtpm serving `socket` (its pid in `pidfile`),
/// remove both files. The state directory is not named, so no undo can touch it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSwtpm {
    pub socket: PathBuf,
    pub pidfile: PathBuf,
}

impl StartSwtpm {
    pub fn plan(config: &VmConfig, paths: &VmPaths) -> Option<Self> {
        config.tpm?;
        Some(StartSwtpm {
            state_dir: paths.tpm_state.clone(),
            socket: paths.swtpm_socket.clone(),
            pidfile: paths.swtpm_pidfile.clone(),
            log: paths.swtpm_log.clone(),
        })
    }

    fn initialised(&self) -> bool {
        self.state_dir.join(STATE_FILE).is_file()
    }

    /// swtpm's option parser splits at commas and has no escape.
    fn comma_free(&self) -> Result<(), StepError> {
        for path in [&self.state_dir, &self.socket, &self.pidfile, &self.log] {
            if path.to_string_lossy().contains(',') {
                return Err(StepError::Other(format!(
                    "{}: swtpm cannot take a path with a comma; use a --state-dir/--runtime-dir without one",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// The first run's manufacturing: an EK and platform certificate, as a real TPM has.
    /// Done in a scratch directory renamed into place, so an interrupted setup never leaves
    /// a half-made state that later runs would keep.
    fn initialise(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StepError::Io { path, source }
        };
        let target = if self.state_dir.exists() {
            // An existing directory without state: set up in place, never overwriting.
            self.state_dir.clone()
        } else {
            let scratch = self.state_dir.with_extension("new");
            if scratch.exists() {
                std::fs::remove_dir_all(&scratch).map_err(io(&scratch))?;
            }
            private_dir(&scratch).map_err(io(&scratch))?;
            scratch
        };
        log.info(&format!(
            "creating the VM's TPM state in {} (swtpm_setup)",
            self.state_dir.display()
        ));
        let dir = target.to_string_lossy().into_owned();
        let words = [
            "swtpm_setup",
            "--tpm2",
            "--tpmstate",
            &dir,
            "--create-ek-cert",
            "--create-platform-cert",
            "--lock-nvram",
            "--not-overwrite",
        ];
        let output =
            host.run_with_env(&crate::host::runner::argv(&words), &[], SETUP_TIMEOUT, log)?;
        if !output.success {
            return Err(StepError::CommandFailed {
                command: words.join(" "),
                detail: format!("{}{}", output.stdout.trim(), output.stderr.trim()),
            });
        }
        if target != self.state_dir {
            std::fs::rename(&target, &self.state_dir).map_err(io(&self.state_dir))?;
        }
        Ok(())
    }

    fn command(&self) -> Command {
        let mut command = Command::new("swtpm");
        command.arg("socket").arg("--tpm2").args([
            "--tpmstate".to_string(),
            format!("dir={},mode=0600", self.state_dir.display()),
            "--ctrl".to_string(),
            format!("type=unixio,path={},mode=0600", self.socket.display()),
            "--pid".to_string(),
            format!("file={}", self.pidfile.display()),
            "--log".to_string(),
            format!("file={},level=1", self.log.display()),
        ]);
        command
    }
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// `MAJOR.MINOR` from `swtpm --version` ("TPM emulator version 0.7.1, Copyright ...").
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let word = text.split("version ").nth(1)?;
    let number: String = word
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = number.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn program_finding(host: &HostContext, program: &str, log: &Log) -> Finding {
    if crate::host::find_program(program).is_none() {
        return Finding::fail(
            "tpm",
            format!("`{program}` is not on PATH: [tpm] needs swtpm; {INSTALL}"),
        );
    }
    let output = host.run(&[program, "--version"], log);
    let text = match &output {
        Ok(output) => format!("{}{}", output.stdout, output.stderr),
        Err(error) => return Finding::fail("tpm", format!("cannot run {program}: {error}")),
    };
    match parse_version(&text) {
        Some(version) if version >= MIN_VERSION => {
            Finding::pass("tpm", format!("{program} {}.{}", version.0, version.1))
        }
        Some(version) => Finding::fail(
            "tpm",
            format!(
                "{program} {}.{} is too old; vmrun needs {}.{} or newer: {INSTALL}",
                version.0, version.1, MIN_VERSION.0, MIN_VERSION.1
            ),
        ),
        None => Finding::warn(
            "tpm",
            format!(
                "cannot tell the version of {program} from `{}`",
                text.trim()
            ),
        ),
    }
}

impl Step for StartSwtpm {
    /// libvirt runs its own swtpm for `<tpm>`; vmrun's state has to be copied over.
    fn libvirt(&self, _vm: &LibvirtContext) -> LibvirtNotes {
        // vmrun's swtpm keeps its state in the VM's state directory, libvirt's in
        // /var/lib/libvirt/swtpm/<uuid>: copy it over to keep BitLocker's keys.
        let tpm = Element::new("tpm").attr("model", "tpm-crb").child(
            Element::new("backend")
                .attr("type", "emulator")
                .attr("version", "2.0"),
        );
        LibvirtNotes {
            devices: vec![
                Node::Comment(format!(
                    "vmrun's TPM state is in {}; libvirt starts its own swtpm with its state in \
                     /var/lib/libvirt/swtpm/<uuid>/tpm2: copy it there before the first start to keep BitLocker and Windows Hello",
                    self.state_dir.display()
                )),
                Node::Element(tpm),
            ],
            ..Default::default()
        }
    }

    /// QEMU ends swtpm itself when it shuts down; only a death before that is news.
    fn companion(&self) -> Option<Companion> {
        Some(Companion {
            role: "TPM",
            name: "swtpm",
            pidfile: self.pidfile.clone(),
            log: self.log.clone(),
            loss: "the guest lost its TPM",
        })
    }

    fn describe(&self) -> String {
        format!(
            "start swtpm (TPM 2.0 emulator) on {} with the VM's TPM state in {}{}",
            self.socket.display(),
            self.state_dir.display(),
            if self.initialised() {
                ""
            } else {
                " (created by swtpm_setup on first run)"
            }
        )
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let log = Log::new(0, true).without_stderr();
        let mut findings = vec![
            program_finding(host, "swtpm", &log),
            program_finding(host, "swtpm_setup", &log),
        ];
        if findings
            .iter()
            .all(|f| f.status != crate::host::finding::Status::Fail)
        {
            let capabilities = host
                .run(&["swtpm", "socket", "--print-capabilities"], &log)
                .map(|output| output.stdout)
                .unwrap_or_default();
            if !capabilities.contains("\"tpm-2.0\"") {
                findings.push(Finding::fail(
                    "tpm",
                    format!("this swtpm does not offer TPM 2.0 (swtpm socket --print-capabilities: {}); {INSTALL}", capabilities.trim()),
                ));
            }
        }
        findings.push(if self.initialised() {
            Finding::pass(
                "tpm",
                format!(
                    "the VM's TPM state {} is kept from earlier runs (back it up with the VARS copy)",
                    self.state_dir.display()
                ),
            )
        } else {
            Finding::pass(
                "tpm",
                format!(
                    "{} will be created by swtpm_setup on first run",
                    self.state_dir.display()
                ),
            )
        });
        if let Err(error) = self.comma_free() {
            findings.push(Finding::fail("tpm", error.to_string()));
        }
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        self.comma_free()?;
        if !self.initialised() {
            self.initialise(host, log)?;
        }
        record.change(
            StopSwtpm {
                socket: self.socket.clone(),
                pidfile: self.pidfile.clone(),
            },
            || self.start(log),
        )
    }
}

impl StartSwtpm {
    fn start(&self, log: &Log) -> Result<(), StepError> {
        for stale in [&self.socket, &self.pidfile] {
            let _ = std::fs::remove_file(stale);
        }
        // swtpm (root) opens its log by path: a symlink planted there goes first, so that it
        // neither writes through it nor has its target read back into an error message.
        if std::fs::symlink_metadata(&self.log).is_ok_and(|m| !m.is_file()) {
            let _ = std::fs::remove_file(&self.log);
        }
        let mut command = self.command();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C at the terminal reaches vmrun, which stops QEMU
            // first; swtpm must outlive QEMU to take its last state writes.
            .process_group(0);
        // SIGTERM lets swtpm write its state out; it comes when vmrun's main thread (which
        // runs the host steps) dies, however it dies.
        crate::process::set_parent_death_signal(&mut command, Signal::SIGTERM);
        let mut child = crate::process::spawn(&mut command).map_err(|source| StepError::Io {
            path: "swtpm".into(),
            source,
        })?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let tail = crate::fsutil::read_to_string(&self.log).unwrap_or_default();
                let last: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(StepError::Other(format!(
                    "swtpm exited at start ({status}): {}",
                    last.into_iter().rev().collect::<Vec<_>>().join(" / ")
                )));
            }
            // Ready once it accepts a control connection; closing it is harmless (no
            // --terminate), and QEMU could not connect any earlier.
            if self.pidfile.is_file()
                && std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
            {
                log.info(&format!(
                    "swtpm started, pid {}, socket {}",
                    child.id(),
                    self.socket.display()
                ));
                // Reaped by the undo (waitpid), or by init once vmrun is gone.
                drop(child);
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StepError::Other(format!(
                    "swtpm did not open {} within {} s; see {}",
                    self.socket.display(),
                    READY_TIMEOUT.as_secs(),
                    self.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether `pid` is a swtpm serving `socket` (pids are reused: never signal a stranger).
fn serves(host: &HostContext, pid: i32, socket: &Path) -> bool {
    let cmdline = std::fs::read(host.root.path(&format!("/proc/{pid}/cmdline")))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    cmdline.contains("swtpm") && cmdline.contains(&*socket.to_string_lossy())
}

/// Gone, or a zombie that waitpid reaped (ours) or that is no longer running (not ours).
fn ended(host: &HostContext, pid: i32) -> bool {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(_) => {
            let stat = std::fs::read_to_string(host.root.path(&format!("/proc/{pid}/stat")))
                .unwrap_or_default();
            stat.is_empty()
                || stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
    }
}

impl Undoable for StopSwtpm {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let pid = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        // QEMU ends swtpm as it exits; the zombie of our own child is reaped here (a pid that
        // is not our child gives ECHILD and is left alone).
        let pid = pid.filter(|pid| !ended(host, *pid) && serves(host, *pid, &self.socket));
        if let Some(pid) = pid {
            log.info(&format!("stopping swtpm (pid {pid})"));
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while !ended(host, pid) {
                if Instant::now() >= deadline {
                    log.warn(&format!("swtpm (pid {pid}) ignored SIGTERM; killing it"));
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    std::thread::sleep(Duration::from_millis(100));
                    if !ended(host, pid) {
                        return Err(StepError::Other(format!(
                            "swtpm (pid {pid}) is still running after SIGKILL"
                        )));
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for file in [&self.socket, &self.pidfile] {
            match std::fs::remove_file(file) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StepError::Io {
                        path: file.display().to_string(),
                        source: error,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::context::{Timing, VmIdentity};
    use crate::host::runner::SystemRunner;
    use crate::host::{RealSysfs, Sysroot};

    fn with_host(test: impl FnOnce(&HostContext)) {
        let sysfs = RealSysfs {
            root: Sysroot::new("/"),
        };
        let host = HostContext {
            root: Sysroot::new("/"),
            sysfs: &sysfs,
            runner: &SystemRunner,
            timing: Timing::default(),
            vm: VmIdentity {
                name: "t".into(),
                profile: PathBuf::new(),
            },
        };
        test(&host);
    }

    #[test]
    fn the_undo_stops_only_the_swtpm_of_its_socket_and_never_touches_the_state() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("swtpm.sock");
        let pidfile = dir.path().join("swtpm.pid");
        let state = dir.path().join("tpm");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join(STATE_FILE), b"keys").unwrap();
        // A stand-in whose command line looks like swtpm's for this socket.
        let fake = dir.path().join("swtpm");
        // Bounded, so that a failing run of this test leaves nothing behind for long.
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor i in $(seq 200); do sleep 0.1; done\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = Command::new(&fake)
            .arg(format!("type=unixio,path={}", socket.display()))
            .spawn()
            .unwrap();
        let pid = child.id();
        // Whatever the assertions say, the stand-in does not outlive the test.
        struct Reaper(i32);
        impl Drop for Reaper {
            fn drop(&mut self) {
                let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(self.0), Some(WaitPidFlag::WNOHANG));
            }
        }
        let _reaper = Reaper(pid as i32);
        // The parent returns from spawn while the kernel still sets up the new program; its
        // command line (what the undo checks) exists a moment later.
        let started = Instant::now();
        while !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .contains("swtpm.sock")
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the stand-in never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::fs::write(&socket, b"").unwrap();
        let undo = StopSwtpm {
            socket: socket.clone(),
            pidfile: pidfile.clone(),
        };
        let log = Log::new(0, true).without_stderr();
        with_host(|host| {
            // A pidfile naming another process (here: this test) is not obeyed.
            std::fs::write(&pidfile, std::process::id().to_string()).unwrap();
            undo.undo(host, &log).unwrap();
            assert!(
                child.try_wait().unwrap().is_none(),
                "a stranger was signalled"
            );
            assert!(!socket.exists() && !pidfile.exists());

            std::fs::write(&pidfile, child.id().to_string()).unwrap();
            undo.undo(host, &log).unwrap();
            assert!(!pidfile.exists());
        });
        // Stopped and reaped by the undo itself (it is this process's child here, as swtpm is
        // vmrun's).
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the swtpm was not stopped and reaped"
        );
        assert_eq!(std::fs::read(state.join(STATE_FILE)).unwrap(), b"keys");
    }

    #[test]
    fn versions_are_read_from_swtpms_banner() {
        assert_eq!(
            parse_version("TPM emulator version 0.7.1, Copyright (c) 2014-2021 IBM Corp."),
            Some((0, 7))
        );
        assert_eq!(
            parse_version("TPM emulator setup tool version 0.10.0"),
            Some((0, 10))
        );
        assert_eq!(parse_version("swtpm"), None);
        assert!((0, 5) < MIN_VERSION && (0, 10) > MIN_VERSION);
    }
}
