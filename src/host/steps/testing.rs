//! A fake host for the step modules' unit tests: a temporary root holding the sysfs and
//! `/proc` files a test writes, and a runner that records every command and answers from the
//! test's script. Nothing here touches the real host.

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use super::{HostStep, LibvirtContext, LibvirtNotes};
use crate::host::context::{HostContext, Timing, VmIdentity};
use crate::host::runner::{CommandOutput, CommandRunner, RunnerError};
use crate::host::session::HostSession;
use crate::host::{RealSysfs, Sysroot};
use crate::log::Log;
use crate::model::VmConfig;

type Answer = Box<dyn Fn(&Path, &str) -> CommandOutput>;

/// Records each command as one line (`systemctl stop gdm.service`) and answers it; the
/// answer may change the fake root as the real program would change the host.
pub struct FakeRunner {
    pub calls: RefCell<Vec<String>>,
    root: std::path::PathBuf,
    answer: Answer,
}

impl CommandRunner for FakeRunner {
    fn run(
        &self,
        argv: &[String],
        _env: &[(&str, &str)],
        _timeout: Duration,
    ) -> Result<CommandOutput, RunnerError> {
        let line = argv.join(" ");
        self.calls.borrow_mut().push(line.clone());
        Ok((self.answer)(&self.root, &line))
    }
}

/// A failed command saying `stderr`.
pub fn failure(stderr: &str) -> CommandOutput {
    CommandOutput {
        success: false,
        code: Some(1),
        stdout: String::new(),
        stderr: stderr.to_string(),
    }
}

/// A successful command printing `stdout`.
pub fn output(stdout: &str) -> CommandOutput {
    CommandOutput {
        success: true,
        code: Some(0),
        stdout: stdout.to_string(),
        stderr: String::new(),
    }
}

pub struct FakeHost {
    dir: tempfile::TempDir,
    sysfs: RealSysfs,
    pub runner: FakeRunner,
}

impl FakeHost {
    /// Every command succeeds and prints nothing.
    pub fn new() -> Self {
        Self::answering(|_, _| output(""))
    }

    /// Commands answered by `answer(root, command line)`.
    pub fn answering(answer: impl Fn(&Path, &str) -> CommandOutput + 'static) -> Self {
        let dir = tempfile::tempdir().unwrap();
        FakeHost {
            sysfs: RealSysfs {
                root: Sysroot::new(dir.path()),
            },
            runner: FakeRunner {
                calls: RefCell::new(Vec::new()),
                root: dir.path().to_path_buf(),
                answer: Box::new(answer),
            },
            dir,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` at the host path `path` (`/proc/irq/5/smp_affinity_list`).
    pub fn write(&self, path: &str, text: &str) {
        let real = self.root().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(real, text).unwrap();
    }

    /// The trimmed contents of the host path `path`.
    pub fn read(&self, path: &str) -> String {
        let real = self.root().join(path.trim_start_matches('/'));
        std::fs::read_to_string(real).unwrap().trim().to_string()
    }

    pub fn exists(&self, path: &str) -> bool {
        self.root().join(path.trim_start_matches('/')).exists()
    }

    pub fn calls(&self) -> Vec<String> {
        self.runner.calls.borrow().clone()
    }

    pub fn host(&self) -> HostContext<'_> {
        HostContext {
            root: self.sysfs.root.clone(),
            sysfs: &self.sysfs,
            runner: &self.runner,
            timing: Timing {
                bind_timeout: Duration::from_millis(200),
                module_attempts: 2,
                module_retry_delay: Duration::from_millis(1),
                command_timeout: Duration::from_secs(5),
            },
            vm: VmIdentity {
                name: "test".to_string(),
                profile: self.root().join("test.toml"),
            },
        }
    }

    /// A session applying `steps` with its journal beside the fake root.
    pub fn session(&self, steps: Vec<HostStep>) -> HostSession<'_> {
        let journal = self.root().join("journal");
        HostSession::new(self.host(), steps, &journal)
    }
}

pub fn log() -> Log {
    Log::new(0, true)
}

/// The validated model of profile `text` (relative paths resolve in a temporary directory).
pub fn config(text: &str) -> VmConfig {
    let dir = tempfile::tempdir().unwrap();
    let source = crate::profile::ProfileSource {
        path: dir.path().join("test.toml"),
        text: text.to_string(),
    };
    let raw = crate::model::parse(&source).unwrap();
    crate::model::validate(&source, &raw).unwrap().0
}

/// A step's libvirt translation for the VM `written`.
pub fn libvirt(step: &HostStep, written: &VmConfig) -> LibvirtNotes {
    step.libvirt(&LibvirtContext { written })
}
