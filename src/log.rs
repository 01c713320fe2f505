//! Each step vmrun takes, to stderr (by verbosity) and to the VM's log file (always, with time).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

pub struct Log {
    /// The most detailed level shown on stderr; `None` shows nothing (detached supervisor).
    stderr_level: Option<Level>,
    file: Mutex<Option<File>>,
}

/// `HH:MM:SS.mmm` UTC: enough to order a run's steps and match them with QEMU's log.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        now.subsec_millis()
    )
}

impl Log {
    /// `verbose` counts `-v`; `quiet` shows errors only.
    pub fn new(verbose: u8, quiet: bool) -> Self {
        let stderr_level = Some(match (quiet, verbose) {
            (true, _) => Level::Error,
            (false, 0) => Level::Info,
            (false, _) => Level::Debug,
        });
        Log {
            stderr_level,
            file: Mutex::new(None),
        }
    }

    pub fn without_stderr(mut self) -> Self {
        self.stderr_level = None;
        self
    }

    /// Appends to `path` from now on; a log that cannot be opened is reported, not fatal.
    pub fn attach_file(&self, path: &Path) {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => {
                if let Ok(mut slot) = self.file.lock() {
                    *slot = Some(file);
                }
            }
            Err(error) => self.warn(&format!("cannot write the log {}: {error}", path.display())),
        }
    }

    pub fn log(&self, level: Level, message: &str) {
        if self.stderr_level.is_some_and(|shown| level <= shown) {
            let prefix = match level {
                Level::Error => "vmrun: error: ",
                Level::Warn => "vmrun: warning: ",
                Level::Info | Level::Debug => "vmrun: ",
            };
            eprintln!("{prefix}{message}");
        }
        if let Ok(mut slot) = self.file.lock() {
            if let Some(file) = slot.as_mut() {
                let tag = match level {
                    Level::Error => "ERROR",
                    Level::Warn => "WARN ",
                    Level::Info => "INFO ",
                    Level::Debug => "DEBUG",
                };
                let _ = writeln!(
                    file,
                    "{} {tag} [{}] {message}",
                    timestamp(),
                    std::process::id()
                );
            }
        }
    }

    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }
}
