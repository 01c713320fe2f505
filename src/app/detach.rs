//! `run --detach`: a background vmrun supervises the VM, and the caller returns once that
//! supervisor reports the VM running with every vCPU pinned (or why it is not).

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::exit::ExitCode;
use crate::plan::BaseDirs;

/// What the caller learnt from the background supervisor.
pub enum Detached {
    /// The VM runs, supervised by this pid.
    Running { supervisor: u32 },
    /// The supervisor could not start the VM: its message and exit code.
    Failed { message: String, code: ExitCode },
}

/// Starts `vmrun run PROFILE --detached-child` in its own process group and waits for its
/// one-line report on a pipe.
pub fn start(
    base: &BaseDirs,
    profile: &Path,
    paused: bool,
    verbose: u8,
) -> std::io::Result<Detached> {
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--state-dir")
        .arg(&base.state)
        .arg("--runtime-dir")
        .arg(&base.runtime)
        .arg("run")
        .arg(profile)
        .arg("--detached-child")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if paused {
        command.arg("--paused");
    }
    for _ in 0..verbose {
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
        return Ok(Detached::Running {
            supervisor: child.id(),
        });
    }
    if let Some(rest) = line.strip_prefix("error\t") {
        let (code, message) = rest.split_once('\t').unwrap_or(("1", rest));
        let _ = child.wait();
        return Ok(Detached::Failed {
            message: message.replace('\u{1f}', "\n"),
            code: ExitCode::from_code(code.parse().unwrap_or(1)),
        });
    }
    let status = child.wait()?;
    Ok(Detached::Failed {
        message: format!("the background supervisor ended before the VM was running ({status})"),
        code: ExitCode::from_code(status.code().filter(|c| *c != 0).unwrap_or(1)),
    })
}

/// The detached supervisor's stdout is a pipe to the waiting parent: one line, then silence.
pub fn tell_parent_ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
    silence_stdout();
}

pub fn report_to_parent(message: &str, code: ExitCode) -> ExitCode {
    let flattened = message.replace('\n', "\u{1f}");
    println!("error\t{}\t{flattened}", code.code());
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
