//! The profile's hooks: `pre_start` commands run before any other host change (a failure, or
//! one still running at `hooks.timeout`, aborts the start and undoes what was done), and the
//! `post_stop` commands are armed first so that running them is the last undo. The `started`
//! hooks change nothing while the host is prepared: the run starts them once the guest runs,
//! alongside it, and ends them at teardown before any host change is undone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::libvirt::xml::Element;
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreStartHook {
    pub command: Vec<String>,
    pub timeout_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PostStopHooks {
    pub commands: Vec<Vec<String>>,
    pub timeout_seconds: u64,
}

/// Journaled by `PostStopHooks`: runs the hooks at teardown (or in `recover`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPostStop {
    pub commands: Vec<Vec<String>>,
    /// Absent in round-1 journals: then the default timeout.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// The profile the run used, for `VMRUN_PROFILE` when `recover` runs by VM name.
    #[serde(default)]
    pub profile: Option<PathBuf>,
}

/// Programs started once every vCPU is pinned and the guest runs (a Looking Glass client, a
/// notification); `timeout_seconds` is how long each gets to exit after SIGTERM at teardown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StartedHooks {
    pub commands: Vec<Vec<String>>,
    pub timeout_seconds: u64,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl PreStartHook {
    pub fn plan<'a>(config: &'a VmConfig, _paths: &VmPaths) -> impl Iterator<Item = Self> + 'a {
        config.hooks.pre_start.iter().map(|command| PreStartHook {
            command: command.clone(),
            timeout_seconds: config.hooks.timeout.as_secs(),
        })
    }
}

impl PostStopHooks {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        (!config.hooks.post_stop.is_empty()).then(|| PostStopHooks {
            commands: config.hooks.post_stop.clone(),
            timeout_seconds: config.hooks.timeout.as_secs(),
        })
    }
}

impl StartedHooks {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        (!config.hooks.started.is_empty()).then(|| StartedHooks {
            commands: config.hooks.started.clone(),
            timeout_seconds: config.hooks.timeout.as_secs(),
        })
    }

    /// Starts every hook without waiting for any: in its own process group, stdin closed,
    /// its output appended to `output`, with `VMRUN_QEMU_PID` besides the usual variables. A
    /// hook that cannot be started is reported; the guest runs on.
    pub fn start(
        &self,
        host: &HostContext,
        qemu_pid: u32,
        output: &Path,
        log: &Log,
    ) -> RunningHooks {
        let root = host.root.path("/").to_string_lossy().into_owned();
        let mut children = Vec::new();
        for argv in &self.commands {
            let line = argv.join(" ");
            let Some((program, args)) = argv.split_first() else {
                continue;
            };
            let sink = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(output)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null())
            };
            let mut command = Command::new(program);
            command
                .args(args)
                .env("VMRUN_VM", &host.vm.name)
                .env("VMRUN_PHASE", "started")
                .env("VMRUN_PROFILE", &host.vm.profile)
                .env("VMRUN_SYSROOT", &root)
                .env("VMRUN_QEMU_PID", qemu_pid.to_string())
                .stdin(Stdio::null())
                .stdout(sink())
                .stderr(sink());
            match crate::process::spawn_companion(&mut command) {
                Ok(child) => {
                    log.info(&format!(
                        "started hook: {line} (pid {}, output in {})",
                        child.id(),
                        output.display()
                    ));
                    children.push((line, child));
                }
                Err(error) => log.error(&format!("started hook {line} could not start: {error}")),
            }
        }
        RunningHooks {
            children,
            grace: Duration::from_secs(self.timeout_seconds),
        }
    }
}

/// The `started` hooks while the guest runs.
pub struct RunningHooks {
    children: Vec<(String, Child)>,
    grace: Duration,
}

impl RunningHooks {
    /// Ends every hook and what it started (SIGTERM to its process group, SIGKILL after
    /// `hooks.timeout`), in reverse order of starting, and says how each ended.
    pub fn end(mut self, log: &Log) {
        while let Some((line, mut child)) = self.children.pop() {
            match crate::process::end_companion(&mut child, self.grace) {
                crate::process::Ended::Before(status) if status.success() => {
                    log.info(&format!("started hook {line} had exited (exit code 0)"))
                }
                crate::process::Ended::Before(status) => log.warn(&format!(
                    "started hook {line} had exited before teardown: {status}"
                )),
                crate::process::Ended::OnTerm => {
                    log.info(&format!("started hook {line} ended (SIGTERM)"))
                }
                crate::process::Ended::Killed => log.warn(&format!(
                    "started hook {line} was still running {} s after SIGTERM and was killed",
                    self.grace.as_secs()
                )),
            }
        }
    }
}

/// Runs one hook with its phase and profile in the environment; a failure names the hook.
fn run_hook(
    host: &HostContext,
    command: &[String],
    phase: &str,
    profile: &std::path::Path,
    timeout: Duration,
    log: &Log,
) -> Result<(), StepError> {
    log.info(&format!("{phase} hook: {}", command.join(" ")));
    let profile = profile.to_string_lossy();
    let output = host.run_with_env(
        command,
        &[("VMRUN_PHASE", phase), ("VMRUN_PROFILE", profile.as_ref())],
        timeout,
        log,
    )?;
    if output.success {
        Ok(())
    } else {
        Err(StepError::CommandFailed {
            command: format!("{phase} hook {}", command.join(" ")),
            detail: format!("exit code {:?}: {}", output.code, output.stderr.trim()),
        })
    }
}

/// A hook whose program cannot be found would fail only once the host is half prepared.
fn program_finding(command: &[String], key: &str) -> Finding {
    let program = command.first().map(String::as_str).unwrap_or_default();
    match crate::host::find_program(program) {
        Some(path) => Finding::pass("hooks", format!("{key}: {}", path.display())),
        None => Finding::fail(
            "hooks",
            format!("{key}: `{program}` is not an executable file (nor on PATH)"),
        ),
    }
}

/// Each hook command as a comment naming the libvirt hook phase that would run it, and as
/// `<vmrun:hook>` metadata.
fn hook_notes(
    vm: &LibvirtContext,
    phase: &str,
    libvirt_phase: &str,
    commands: &[Vec<String>],
) -> LibvirtNotes {
    let mut notes = LibvirtNotes::default();
    for argv in commands {
        notes.comments.push(format!(
            "vmrun runs the {phase} hook `{}`: libvirt needs {}",
            argv.join(" "),
            vm.hook(libvirt_phase)
        ));
        let mut element = Element::new("vmrun:hook").attr("phase", phase);
        for arg in argv {
            element.push(Element::new("vmrun:arg").text(arg.clone()));
        }
        notes.metadata.push(element);
    }
    notes
}

impl Step for PreStartHook {
    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        hook_notes(
            vm,
            "pre_start",
            "prepare begin",
            std::slice::from_ref(&self.command),
        )
    }

    fn describe(&self) -> String {
        format!(
            "run pre_start hook: {} (killed after {} s)",
            self.command.join(" "),
            self.timeout_seconds
        )
    }

    fn preflight(&self, _host: &HostContext) -> Vec<Finding> {
        vec![program_finding(&self.command, "hooks.pre_start")]
    }

    fn apply(&self, host: &HostContext, _record: &Recorder, log: &Log) -> Result<(), StepError> {
        run_hook(
            host,
            &self.command,
            "pre_start",
            &host.vm.profile,
            Duration::from_secs(self.timeout_seconds),
            log,
        )
    }
}

impl Step for StartedHooks {
    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        hook_notes(vm, "started", "started begin", &self.commands)
    }

    fn describe(&self) -> String {
        let commands: Vec<String> = self.commands.iter().map(|c| c.join(" ")).collect();
        format!(
            "once every vCPU is pinned and the guest runs: start started hooks {} alongside it \
             (ended at teardown: SIGTERM, SIGKILL after {} s)",
            commands.join("; "),
            self.timeout_seconds
        )
    }

    fn preflight(&self, _host: &HostContext) -> Vec<Finding> {
        self.commands
            .iter()
            .map(|command| program_finding(command, "hooks.started"))
            .collect()
    }

    /// Nothing changes on the host now: the run starts the hooks once the guest runs, and a
    /// hook dies with vmrun (its parent-death signal), so nothing needs journaling.
    fn apply(&self, _host: &HostContext, _record: &Recorder, _log: &Log) -> Result<(), StepError> {
        Ok(())
    }
}

impl Step for PostStopHooks {
    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        hook_notes(vm, "post_stop", "release end", &self.commands)
    }

    fn describe(&self) -> String {
        let commands: Vec<String> = self.commands.iter().map(|c| c.join(" ")).collect();
        format!(
            "after everything else is given back: run post_stop hooks {}",
            commands.join("; ")
        )
    }

    fn preflight(&self, _host: &HostContext) -> Vec<Finding> {
        self.commands
            .iter()
            .map(|command| program_finding(command, "hooks.post_stop"))
            .collect()
    }

    fn apply(&self, host: &HostContext, record: &Recorder, _log: &Log) -> Result<(), StepError> {
        record.change(
            RunPostStop {
                commands: self.commands.clone(),
                timeout_seconds: Some(self.timeout_seconds),
                profile: Some(host.vm.profile.clone()),
            },
            || Ok(()),
        )
    }
}

impl Undoable for RunPostStop {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let timeout = self
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        let profile = self.profile.as_deref().unwrap_or(&host.vm.profile);
        for command in &self.commands {
            run_hook(host, command, "post_stop", profile, timeout, log)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::steps::testing;
    use crate::host::steps::{plan, HostStep};
    use crate::plan::BaseDirs;

    #[test]
    fn each_hook_becomes_a_libvirt_hook_comment_and_metadata_in_its_phase() {
        let config = testing::config(
            "[hooks]\npre_start = [\"/bin/true\"]\nstarted = [[\"/bin/echo\", \"up\"]]\npost_stop = [[\"/bin/echo\", \"a\"], [\"/bin/echo\", \"b\"]]\n",
        );
        let paths = VmPaths::new(&BaseDirs::resolve(None, None), &config.name).unwrap();
        let mut seen = Vec::new();
        for step in plan(&config, &paths) {
            if !matches!(
                step,
                HostStep::PreStartHook(_) | HostStep::StartedHooks(_) | HostStep::PostStopHooks(_)
            ) {
                continue;
            }
            let notes = testing::libvirt(&step, &config);
            assert_eq!(notes.comments.len(), notes.metadata.len());
            for (comment, element) in notes.comments.iter().zip(&notes.metadata) {
                let phase = element.attributes[0].1.clone();
                assert!(comment.contains(&format!("the {phase} hook")), "{comment}");
                seen.push((phase, element.children.len()));
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                ("post_stop".to_string(), 2),
                ("post_stop".to_string(), 2),
                ("pre_start".to_string(), 1),
                ("started".to_string(), 2),
            ]
        );
    }
}
