//! The profile's hooks: `pre_start` commands run before any other host change (a failure, or
//! one still running at `hooks.timeout`, aborts the start and undoes what was done), and the
//! `post_stop` commands are armed first so that running them is the last undo.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::log::Log;
use crate::model::VmConfig;

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

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl PreStartHook {
    pub fn plan(config: &VmConfig) -> impl Iterator<Item = Self> + '_ {
        config.hooks.pre_start.iter().map(|command| PreStartHook {
            command: command.clone(),
            timeout_seconds: config.hooks.timeout.as_secs(),
        })
    }
}

impl PostStopHooks {
    pub fn plan(config: &VmConfig) -> Option<Self> {
        (!config.hooks.post_stop.is_empty()).then(|| PostStopHooks {
            commands: config.hooks.post_stop.clone(),
            timeout_seconds: config.hooks.timeout.as_secs(),
        })
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

impl Step for PreStartHook {
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

impl Step for PostStopHooks {
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
