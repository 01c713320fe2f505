//! External programs (`systemctl`, `modprobe`, hooks) run through one runner: found on PATH,
//! never through a shell, each bounded by a timeout, so tests put stubs first on PATH.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{self, Bounded};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot run `{program}`: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` was still running after {} s and was killed", .after.as_secs())]
    TimedOut { command: String, after: Duration },
}

pub trait CommandRunner {
    /// Runs `argv` with `env` added to vmrun's environment; kills it after `timeout`.
    fn run(
        &self,
        argv: &[String],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<CommandOutput, RunnerError>;
}

/// Runs programs for real, stdin closed, output captured.
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(
        &self,
        argv: &[String],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<CommandOutput, RunnerError> {
        let program = argv.first().cloned().unwrap_or_default();
        let mut command = Command::new(&program);
        command
            .args(&argv[1.min(argv.len())..])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A host change must not complete after vmrun died: `vmrun recover` could not see it.
        process::set_parent_death_signal(&mut command, nix::sys::signal::Signal::SIGKILL);
        match process::output_within(&mut command, timeout) {
            Ok(Bounded::Finished(output)) => Ok(CommandOutput {
                success: output.status.success(),
                code: output.status.code(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }),
            Ok(Bounded::TimedOut { after }) => Err(RunnerError::TimedOut {
                command: argv.join(" "),
                after,
            }),
            Err(source) => Err(RunnerError::Start { program, source }),
        }
    }
}

pub fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}
