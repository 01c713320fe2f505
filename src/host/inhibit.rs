//! While a VM runs the host must not suspend or idle-sleep (a suspended host takes a passed-
//! through GPU down with it, and the guest never knows). The supervisor holds a logind
//! inhibitor through `systemd-inhibit`, whose command is `cat` reading a pipe vmrun holds: when
//! vmrun ends, in any way, the pipe closes, `cat` and `systemd-inhibit` exit and the lock is gone.

use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::Sysroot;
use crate::log::Log;

/// Where the system bus listens unless DBUS_SYSTEM_BUS_ADDRESS says otherwise.
const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";

pub struct SleepInhibitor {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl SleepInhibitor {
    /// None (logged) when there is no `systemd-inhibit` or it cannot start: the VM runs anyway.
    pub fn hold(vm: &str, root: &Sysroot, log: &Log) -> Option<Self> {
        // Without the system bus there is no logind to ask: systemd-inhibit would only fail,
        // after spending milliseconds of the emulator CPUs just as the guest starts.
        let bus = root.path(SYSTEM_BUS);
        if std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_none() && !bus.exists() {
            log.info(&format!(
                "no system D-Bus ({}): no logind sleep inhibitor, the host may suspend while the VM runs",
                bus.display()
            ));
            return None;
        }
        let Some(program) = super::find_program("systemd-inhibit") else {
            log.info("no systemd-inhibit on PATH: the host may suspend while the VM runs");
            return None;
        };
        let mut command = Command::new(program);
        command
            .args([
                "--what=sleep:idle",
                "--who=vmrun",
                &format!("--why=VM {vm} is running"),
                "--mode=block",
                "cat",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::process::set_parent_death_signal(&mut command, Signal::SIGTERM);
        match crate::process::spawn(&mut command) {
            Ok(mut child) => {
                log.info(&format!(
                    "holding a logind sleep/idle inhibitor while {vm} runs (systemd-inhibit pid {})",
                    child.id()
                ));
                let pipe = child.stdin.take();
                Some(SleepInhibitor { child, pipe })
            }
            Err(error) => {
                log.warn(&format!(
                    "cannot start systemd-inhibit ({error}): the host may suspend while the VM runs"
                ));
                None
            }
        }
    }
}

impl Drop for SleepInhibitor {
    fn drop(&mut self) {
        // EOF for `cat`: systemd-inhibit exits and logind drops the lock.
        self.pipe.take();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
