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
    /// Set by SIGINT, SIGTERM or SIGHUP to the caller while it waits.
    interrupted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
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
    /// The caller was interrupted (Ctrl-C) while the VM started: the start was cancelled, the
    /// supervisor has ended and given the host back; how its run ended.
    Cancelled {
        signal: &'static str,
        outcome: String,
    },
}

/// The signals that cancel a start when they reach the waiting caller.
const CANCEL_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

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
    // A helper thread vmrun has just joined (the waiter of a bounded command) can still be
    // listed for a moment: `join` returns when the kernel clears the thread's tid, a little
    // before the task leaves /proc/self/task. Seen under load as "runs 2 threads"; a thread
    // still running after this wait is a real one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    let mut threads = thread_count();
    while threads != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
        threads = thread_count();
    }
    if threads != 1 {
        return Err(DetachError::Threads(threads));
    }
    if let Some(set) = emulator {
        crate::run::threads::set_affinity(0, set)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    // Close-on-exec: QEMU and hooks must not hold the caller's pipe open.
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // A Ctrl-C from here on must reach the caller as a request to cancel, never kill it
    // silently while the supervisor starts the VM anyway: blocked across the fork, caught by the
    // caller, and shed by the supervisor once it has left the terminal's session.
    let mut cancel = nix::sys::signal::SigSet::empty();
    for signal in CANCEL_SIGNALS {
        cancel.add(nix::sys::signal::Signal::try_from(signal)?);
    }
    let mut before = nix::sys::signal::SigSet::empty();
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&cancel),
        Some(&mut before),
    )?;
    let unblock = |before: &nix::sys::signal::SigSet| {
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(before),
            None,
        )
    };
    // SAFETY: vmrun is single-threaded here (checked above), so the child may go on running
    // arbitrary code after the fork: no lock can be held by a thread that does not exist in it.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => {
            drop(write);
            let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for signal in CANCEL_SIGNALS {
                signal_hook::flag::register_usize(signal, interrupted.clone(), signal as usize)?;
            }
            unblock(&before)?;
            Ok(Role::Caller(Waiter {
                report: File::from(read),
                supervisor: child,
                interrupted,
            }))
        }
        ForkResult::Child => {
            drop(read);
            nix::unistd::setsid()?;
            // Out of the terminal's session: what was sent to the caller's process group before
            // is discarded (ignoring a signal drops it), the defaults are back, and the
            // supervisor catches its own signals from host preparation on.
            for signal in CANCEL_SIGNALS {
                let signal = nix::sys::signal::Signal::try_from(signal)?;
                let ignore = nix::sys::signal::SigAction::new(
                    nix::sys::signal::SigHandler::SigIgn,
                    nix::sys::signal::SaFlags::empty(),
                    nix::sys::signal::SigSet::empty(),
                );
                let default = nix::sys::signal::SigAction::new(
                    nix::sys::signal::SigHandler::SigDfl,
                    nix::sys::signal::SaFlags::empty(),
                    nix::sys::signal::SigSet::empty(),
                );
                // SAFETY: plain dispositions (no handler function) replace whatever this
                // process had; no handler of vmrun's runs concurrently (single-threaded).
                unsafe {
                    nix::sys::signal::sigaction(signal, &ignore)?;
                    nix::sys::signal::sigaction(signal, &default)?;
                }
            }
            unblock(&before)?;
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
    /// Blocks until the supervisor reports (or dies without a word). A SIGINT, SIGTERM or
    /// SIGHUP meanwhile cancels the start: the supervisor is asked to stop (SIGTERM, which it
    /// handles from host preparation on, giving the host back), and this waits until it has
    /// ended, so that the caller never returns while a VM it was told to drop still starts.
    ///
    /// `stop_request` is the VM's stop-request file: the cancel asks for a forced stop, since
    /// a guest that only just booted would not answer the ACPI power button.
    pub fn wait(self, stop_request: &std::path::Path) -> Result<Detached, DetachError> {
        use std::sync::atomic::Ordering;
        let mut reader = BufReader::new(self.report);
        let mut line = String::new();
        let mut cancelled: Option<&'static str> = None;
        loop {
            if cancelled.is_none() {
                let signal = self.interrupted.swap(0, Ordering::SeqCst);
                if signal != 0 {
                    cancelled = Some(signal_name(signal as i32));
                    let _ = crate::run::state::write_json(
                        stop_request,
                        &crate::run::state::StopRequest {
                            timeout_seconds: None,
                            force: true,
                        },
                    );
                    let _ =
                        nix::sys::signal::kill(self.supervisor, nix::sys::signal::Signal::SIGTERM);
                }
            }
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(reader.get_ref()),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(errno) => return Err(errno.into()),
            }
            line.clear();
            reader.read_line(&mut line)?;
            if line.trim_end() == "ready" && cancelled.is_none() {
                return Ok(Detached::Running {
                    supervisor: self.supervisor.as_raw() as u32,
                });
            }
            if line.trim_end() != "ready" || cancelled.is_some() {
                break;
            }
        }
        let status = loop {
            match waitpid(self.supervisor, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other?,
            }
        };
        let line = line.trim_end();
        let reported = line.strip_prefix("error\t").map(|rest| {
            let (code, message) = rest.split_once('\t').unwrap_or(("1", rest));
            (
                message.replace('\u{1f}', "\n"),
                ExitCode::from_code(code.parse().unwrap_or(1)),
            )
        });
        if let Some(signal) = cancelled {
            let outcome = match reported {
                Some((message, _)) => message,
                None => format!("the supervisor ended ({status:?})"),
            };
            return Ok(Detached::Cancelled { signal, outcome });
        }
        if let Some((message, code)) = reported {
            return Ok(Detached::Failed { message, code });
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

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_still_runs_is_refused_after_the_wait_and_nothing_is_forked() {
        // The test harness's own threads, plus one that certainly runs during the whole wait.
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let running = std::thread::spawn(move || {
            let _ = stopped.recv();
        });
        match fork(None) {
            Err(DetachError::Threads(count)) => assert!(count >= 2, "{count}"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("forked with a thread running"),
        }
        stop.send(()).unwrap();
        running.join().unwrap();
    }
}
