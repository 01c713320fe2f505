//! `run --detach`: the supervisor is this very process, forked once the profile is resolved,
//! the plan made and the preflight passed, so nothing is resolved twice. The caller waits on a
//! pipe for its one-line report: running with every vCPU pinned, or why not.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;

use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use crate::exit::ExitCode;
use crate::model::CpuSet;

#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    #[error("cannot start the background supervisor: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot start the background supervisor: {0}")]
    Sys(#[from] nix::errno::Errno),
    #[error("cannot start the background supervisor: vmrun runs {0} threads, and only a single-threaded process may fork")]
    Threads(usize),
}

/// Which side of the fork this is.
pub enum Role {
    /// The caller: waits for the supervisor's report.
    Caller(Waiter),
    /// The background supervisor: runs the VM and reports through this.
    Supervisor(Reporter),
}

pub struct Waiter {
    report: File,
    supervisor: Pid,
}

pub struct Reporter {
    report: File,
}

/// What the caller learnt from the background supervisor.
pub enum Detached {
    /// The VM runs, supervised by this pid.
    Running { supervisor: u32 },
    /// The supervisor could not start the VM: its message and exit code.
    Failed { message: String, code: ExitCode },
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| tasks.count())
        .unwrap_or(1)
}

/// Forks the background supervisor: in its own session (no terminal's Ctrl-C or hang-up
/// reaches it), its standard streams on /dev/null, a pipe to the caller for the report. Both
/// move to the emulator CPUs first: a real-time vCPU spinning on its CPU would starve a caller
/// waiting there for the report.
pub fn fork(emulator: Option<&CpuSet>) -> Result<Role, DetachError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(DetachError::Threads(threads));
    }
    if let Some(set) = emulator {
        crate::run::threads::set_affinity(0, set)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    // Close-on-exec: QEMU and hooks must not hold the caller's pipe open.
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: vmrun is single-threaded here (checked above), so the child may go on running
    // arbitrary code after the fork: no lock can be held by a thread that does not exist in it.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => {
            drop(write);
            Ok(Role::Caller(Waiter {
                report: File::from(read),
                supervisor: child,
            }))
        }
        ForkResult::Child => {
            drop(read);
            nix::unistd::setsid()?;
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            for stream in 0..=2 {
                nix::unistd::dup2(null.as_raw_fd(), stream)?;
            }
            Ok(Role::Supervisor(Reporter {
                report: File::from(write),
            }))
        }
    }
}

impl Waiter {
    /// Blocks until the supervisor reports (or dies without a word).
    pub fn wait(self) -> Result<Detached, DetachError> {
        let mut line = String::new();
        BufReader::new(self.report).read_line(&mut line)?;
        let line = line.trim_end();
        if line == "ready" {
            return Ok(Detached::Running {
                supervisor: self.supervisor.as_raw() as u32,
            });
        }
        let status = waitpid(self.supervisor, None)?;
        if let Some(rest) = line.strip_prefix("error\t") {
            let (code, message) = rest.split_once('\t').unwrap_or(("1", rest));
            return Ok(Detached::Failed {
                message: message.replace('\u{1f}', "\n"),
                code: ExitCode::from_code(code.parse().unwrap_or(1)),
            });
        }
        let code = match status {
            WaitStatus::Exited(_, code) if code != 0 => code,
            _ => 1,
        };
        Ok(Detached::Failed {
            message: format!(
                "the background supervisor ended before the VM was running ({status:?})"
            ),
            code: ExitCode::from_code(code),
        })
    }
}

impl Reporter {
    /// The VM runs with every vCPU pinned: the caller may return.
    pub fn ready(&self) {
        let _ = (&self.report).write_all(b"ready\n");
    }

    /// The VM could not be started: the caller prints `message` and exits with `code`.
    pub fn failed(&self, message: &str, code: ExitCode) -> ExitCode {
        let flattened = message.replace('\n', "\u{1f}");
        let _ = writeln!(&self.report, "error\t{}\t{flattened}", code.code());
        code
    }
}
