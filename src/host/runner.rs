//! External programs (`systemctl`, `modprobe`, hooks) run through one runner: found on PATH,
//! never through a shell, so tests put stubs first on PATH.

use std::process::{Command, Stdio};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot run `{program}`: {source}")]
pub struct RunnerError {
    pub program: String,
    pub source: std::io::Error,
}

pub trait CommandRunner {
    fn run(&self, argv: &[String], env: &[(&str, &str)]) -> Result<CommandOutput, RunnerError>;
}

/// Runs programs for real, stdin closed, output captured.
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, argv: &[String], env: &[(&str, &str)]) -> Result<CommandOutput, RunnerError> {
        let program = argv.first().cloned().unwrap_or_default();
        let mut command = Command::new(&program);
        command
            .args(&argv[1.min(argv.len())..])
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        // A host change must not complete after vmrun died: `vmrun recover` could not see it.
        crate::run::set_parent_death_signal(&mut command, nix::sys::signal::Signal::SIGKILL);
        let output = command.output().map_err(|source| RunnerError {
            program: program.clone(),
            source,
        })?;
        Ok(CommandOutput {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

pub fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}
