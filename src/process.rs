//! Child processes vmrun starts (QEMU, `systemctl`, `modprobe`, hooks): they die with vmrun, and
//! the ones that may hang are bounded by a timeout. Used by the host and run layers alike.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{
    kill, killpg, pthread_sigmask, sigaction, sigprocmask, SaFlags, SigAction, SigHandler, SigSet,
    SigmaskHow, Signal,
};
use nix::unistd::Pid;

/// The signals meant for vmrun itself: Ctrl-C (to the terminal's whole foreground process
/// group), cron's or `vmrun stop`'s SIGTERM, a hangup, a quit.
const VMRUN_SIGNALS: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

fn vmrun_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in VMRUN_SIGNALS {
        set.add(signal);
    }
    set
}

/// Makes `signal` reach the child when vmrun dies, so that nothing vmrun started (QEMU, a
/// `modprobe`, a hook) goes on changing the host unseen after a crash. Started through
/// [`spawn`], the child also sheds any of vmrun's signals that reached it before it runs its
/// program: a Ctrl-C meant for vmrun must not kill a `systemctl start` of the restore.
pub fn set_parent_death_signal(command: &mut Command, signal: Signal) {
    let parent = std::process::id() as i32;
    let shielded = vmrun_signals();
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // syscalls (prctl, getppid, sigaction, sigprocmask) on values captured by copy; it
    // allocates nothing (its errors are raw OS errors) and takes no locks.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid().as_raw() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            // `spawn` blocked vmrun's signals before the fork. One sent to vmrun's process
            // group before the child left it (setpgid runs before this closure) is pending here:
            // ignoring a signal discards it; then its disposition is put back (exec resets
            // handled ones to the default, ignored ones stay ignored) and it is unblocked.
            for shed in VMRUN_SIGNALS {
                let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
                let before = sigaction(shed, &ignore).map_err(std::io::Error::from)?;
                if before.handler() != SigHandler::SigIgn {
                    let default =
                        SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
                    sigaction(shed, &default).map_err(std::io::Error::from)?;
                }
            }
            sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&shielded), None)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

/// Starts `command` with vmrun's signals blocked in this thread across the fork, so that a
/// signal meant for vmrun cannot land in the child between fork and exec, where it would run
/// vmrun's handler in the child or, pending at exec, kill the program. Children set up by
/// [`set_parent_death_signal`] discard such a signal; vmrun receives its own copy once the
/// mask is restored here.
pub fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let mut before = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&vmrun_signals()),
        Some(&mut before),
    )
    .map_err(std::io::Error::from)?;
    let child = command.spawn();
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
    child
}

/// The child becomes `uid`/`gid` with `groups` before exec: its groups, gid and uid (which
/// clears every capability), no way back through set-uid programs, and a locked-memory limit
/// (for VFIO) raised while it still may be. Not root: only no_new_privs (nothing to drop).
/// QEMU is started this way, and so is every probe that must see what QEMU will see.
pub fn run_as(
    command: &mut Command,
    uid: u32,
    gid: u32,
    groups: &[u32],
    memlock_bytes: Option<u64>,
) {
    use nix::sys::resource::{setrlimit, Resource};
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let uid = Uid::from_raw(uid);
    let gid = Gid::from_raw(gid);
    let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let privileged = nix::unistd::geteuid().is_root();
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (setrlimit, setgroups, setresgid, setresuid, prctl) on data prepared before the fork;
    // it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
            if privileged {
                if let Some(bytes) = memlock_bytes {
                    setrlimit(Resource::RLIMIT_MEMLOCK, bytes, bytes)?;
                }
                setgroups(&groups)?;
                setresgid(gid, gid, gid)?;
                setresuid(uid, uid, uid)?;
            }
            nix::sys::prctl::set_no_new_privs()?;
            Ok(())
        });
    }
}

/// How a process ended, for people: `exit status 1`, `killed by signal 6`.
pub fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// How a bounded command ended.
#[derive(Debug)]
pub enum Bounded {
    Finished(Output),
    /// Still running at the deadline: its whole process group was killed.
    TimedOut {
        after: Duration,
    },
}

/// Runs `command` to completion with its output captured, killing it (and everything it
/// started in its process group) when it outlives `timeout`.
pub fn output_within(command: &mut Command, timeout: Duration) -> std::io::Result<Bounded> {
    // Its own process group, so that a hook's children die with it at the deadline.
    command
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = spawn(command)?;
    Ok(match output_within_child(child, timeout)? {
        Some(output) => Bounded::Finished(output),
        None => Bounded::TimedOut { after: timeout },
    })
}

/// Waits for a spawned child's output; `None` when it was killed at the deadline (its
/// process group too, when it leads one).
pub fn output_within_child(child: Child, timeout: Duration) -> std::io::Result<Option<Output>> {
    let pid = Pid::from_raw(child.id() as i32);
    let (done, finished) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    // Joined on every path: vmrun must be single-threaded again afterwards, or `run --detach`
    // could not fork its supervisor.
    match finished.recv_timeout(timeout) {
        Ok(output) => {
            let _ = waiter.join();
            output.map(Some)
        }
        Err(_) => {
            // The waiting thread has not reaped it yet (it would have sent), so the pid and
            // group id are still this child's.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = finished.recv();
            let _ = waiter.join();
            Ok(None)
        }
    }
}

/// Starts a program that runs alongside the guest (a `started` hook): in its own process
/// group, so that everything it starts can be ended with it, and told by SIGTERM when vmrun
/// dies, so that it does not outlive the VM it serves.
pub fn spawn_companion(command: &mut Command) -> std::io::Result<Child> {
    command.process_group(0);
    set_parent_death_signal(command, Signal::SIGTERM);
    spawn(command)
}

/// How a companion process ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// It had exited before it was asked to.
    Before(std::process::ExitStatus),
    /// It (and its group) exited on SIGTERM within the grace.
    OnTerm,
    /// Something of its group was still there after the grace and was killed.
    Killed,
}

/// Ends a companion and its process group: SIGTERM, then SIGKILL for whatever is left after
/// `grace`. The leader is reaped only here, so its pid, and with it the group id, cannot have
/// been reused before the signals.
pub fn end_companion(child: &mut Child, grace: Duration) -> Ended {
    let pid = Pid::from_raw(child.id() as i32);
    let before = match child.try_wait() {
        Ok(Some(status)) => Some(status),
        _ => None,
    };
    // Its children may still be running after the leader exited.
    let group_alive = || killpg(pid, None).is_ok();
    if killpg(pid, Signal::SIGTERM).is_err() {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    let mut reaped = before.is_some();
    loop {
        if !reaped {
            reaped = matches!(child.try_wait(), Ok(Some(_)));
        }
        if reaped && !group_alive() {
            return match before {
                Some(status) => Ended::Before(status),
                None => Ended::OnTerm,
            };
        }
        if std::time::Instant::now() >= deadline {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
            return match before {
                Some(status) => Ended::Before(status),
                None => Ended::Killed,
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_companion_that_ignores_sigterm_is_killed_with_its_group_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-survived");
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!(
                "trap '' TERM; (trap '' TERM; sleep 2; touch {}) & sleep 30",
                marker.display()
            ),
        ]);
        let mut child = spawn_companion(&mut command).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(
            end_companion(&mut child, Duration::from_millis(500)),
            Ended::Killed
        );
        assert!(started.elapsed() >= Duration::from_millis(500));
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "the companion's child outlived it");
    }

    #[test]
    fn a_companion_that_obeys_sigterm_ends_at_once() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let mut child = spawn_companion(&mut command).unwrap();
        let started = Instant::now();
        assert_eq!(
            end_companion(&mut child, Duration::from_secs(10)),
            Ended::OnTerm
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_signal_meant_for_vmrun_that_reaches_a_helper_before_exec_does_not_kill_it() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo ran"]);
        // A Ctrl-C that lands in the child between fork and exec (as one sent to vmrun's
        // process group may): this closure runs before the parent-death one.
        // SAFETY: `raise` is async-signal-safe and the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                nix::sys::signal::raise(Signal::SIGINT).map_err(std::io::Error::from)?;
                nix::sys::signal::raise(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        set_parent_death_signal(&mut command, Signal::SIGKILL);
        let Bounded::Finished(output) =
            output_within(&mut command, Duration::from_secs(10)).unwrap()
        else {
            panic!("timed out");
        };
        assert!(
            output.status.success(),
            "the helper died: {}",
            describe_exit(&output.status)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "ran\n");
    }

    #[test]
    fn a_command_that_finishes_in_time_gives_its_output() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let Bounded::Finished(output) =
            output_within(&mut command, Duration::from_secs(10)).unwrap()
        else {
            panic!("timed out");
        };
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
    }

    #[test]
    fn a_hanging_command_and_its_children_are_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-survived");
        let mut command = Command::new("sh");
        // The grandchild would leave a marker after the deadline if it survived.
        command.args([
            "-c",
            &format!("(sleep 1; touch {}) & sleep 30", marker.display()),
        ]);
        let started = Instant::now();
        let result = output_within(&mut command, Duration::from_millis(200)).unwrap();
        assert!(matches!(result, Bounded::TimedOut { .. }), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1300));
        assert!(!marker.exists(), "the hook's child outlived the timeout");
    }
}
