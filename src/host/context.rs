//! What every host step works through: the host root, sysfs, the command runner and the
//! kernel's patience, plus the few sysfs and module helpers several steps share.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::runner::{CommandOutput, CommandRunner, RunnerError};
use super::{SysfsIo, Sysroot};
use crate::log::Log;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Journal(#[from] super::journal::JournalError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("`{command}` failed: {detail}")]
    CommandFailed { command: String, detail: String },
    #[error("module {module} is still in use after {attempts} attempts to unload it{holders}")]
    ModuleInUse {
        module: String,
        attempts: u32,
        holders: String,
    },
    #[error("{address} did not move to {driver} within {waited:?}{hint}")]
    BindTimeout {
        address: String,
        driver: String,
        waited: Duration,
        hint: &'static str,
    },
    /// A passed function that did not answer after the guest, even after one remove and
    /// rescan: it is kept off its host driver and its journal entry stays.
    #[error("{address} does not answer after the guest: {seen}; {done}")]
    DeviceStuck {
        address: String,
        seen: String,
        done: String,
    },
    #[error("{0}")]
    Other(String),
}

/// How long to wait for the kernel and for programs; tests shorten it.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub bind_timeout: Duration,
    pub module_attempts: u32,
    pub module_retry_delay: Duration,
    /// `systemctl` and `modprobe` (hooks have their own, from the profile).
    pub command_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            bind_timeout: Duration::from_secs(5),
            module_attempts: 10,
            module_retry_delay: Duration::from_millis(300),
            command_timeout: Duration::from_secs(90),
        }
    }
}

/// Which VM the host is being prepared for: hooks are told in their environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmIdentity {
    pub name: String,
    pub profile: PathBuf,
}

/// The host as the steps see it.
#[derive(Clone)]
pub struct HostContext<'a> {
    pub root: Sysroot,
    pub sysfs: &'a dyn SysfsIo,
    pub runner: &'a dyn CommandRunner,
    pub timing: Timing,
    pub vm: VmIdentity,
}

impl HostContext<'_> {
    pub fn read(&self, path: &str) -> Option<String> {
        self.sysfs
            .read(path)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
    }

    pub fn write(&self, path: &str, value: &str) -> Result<(), StepError> {
        self.sysfs
            .write(path, value.as_bytes())
            .map_err(|source| StepError::Io {
                path: path.to_string(),
                source,
            })
    }

    /// Polls `done` until it holds or the bind timeout passes.
    pub fn wait_until(&self, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + self.timing.bind_timeout;
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `wait_until`, with a countdown on a terminal: for the waits that can take seconds (a
    /// device changing driver, the kernel compacting memory for hugepages).
    pub fn wait_until_shown(&self, label: &str, log: &Log, mut done: impl FnMut() -> bool) -> bool {
        let mut countdown = log.countdown(label, Some(self.timing.bind_timeout));
        self.wait_until(|| {
            countdown.tick();
            done()
        })
    }

    /// Runs a program with the VM's name and the host root in its environment, plus `extra`.
    pub fn run_with_env(
        &self,
        argv: &[String],
        extra: &[(&str, &str)],
        timeout: Duration,
        log: &Log,
    ) -> Result<CommandOutput, StepError> {
        log.debug(&format!("running {}", argv.join(" ")));
        let root = self.root.path("/").to_string_lossy().into_owned();
        let mut env = vec![
            ("VMRUN_VM", self.vm.name.as_str()),
            ("VMRUN_SYSROOT", root.as_str()),
        ];
        env.extend_from_slice(extra);
        Ok(self.runner.run(argv, &env, timeout)?)
    }

    pub fn run(&self, words: &[&str], log: &Log) -> Result<CommandOutput, StepError> {
        self.run_with_env(
            &super::runner::argv(words),
            &[],
            self.timing.command_timeout,
            log,
        )
    }

    pub fn run_checked(&self, words: &[&str], log: &Log) -> Result<CommandOutput, StepError> {
        let output = self.run(words, log)?;
        if output.success {
            Ok(output)
        } else {
            Err(StepError::CommandFailed {
                command: words.join(" "),
                detail: output.stderr.trim().to_string(),
            })
        }
    }

    pub fn module_loaded(&self, module: &str) -> bool {
        let wanted = module.replace('-', "_");
        std::fs::read_to_string(self.root.path("/proc/modules"))
            .unwrap_or_default()
            .lines()
            .any(|line| line.split_whitespace().next() == Some(wanted.as_str()))
    }

    pub fn pci_driver_registered(&self, driver: &str) -> bool {
        self.root
            .path(&format!("/sys/bus/pci/drivers/{driver}"))
            .is_dir()
    }

    /// `modprobe -r`, retried: a module's last users (a process that just exited, a device
    /// just unbound) let go of it asynchronously. `Ok(false)` when it stayed in use.
    pub fn remove_module(&self, module: &str, log: &Log) -> Result<bool, StepError> {
        for attempt in 1..=self.timing.module_attempts {
            let output = self.run(&["modprobe", "-r", module], log)?;
            if output.success || !self.module_loaded(module) {
                return Ok(true);
            }
            log.debug(&format!("attempt {attempt}: {}", output.stderr.trim()));
            std::thread::sleep(self.timing.module_retry_delay);
        }
        Ok(false)
    }
}
