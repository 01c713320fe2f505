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

    /// Appends to `path` from now on; a log that cannot be opened is reported, not fatal. A log
    /// over 1 MiB is first moved to `NAME.1` (replacing the previous one), so it never grows
    /// without bound on a machine that starts a VM every day.
    pub fn attach_file(&self, path: &Path) {
        const ROTATE_AT: u64 = 1024 * 1024;
        if std::fs::metadata(path).is_ok_and(|m| m.len() > ROTATE_AT) {
            let mut old = path.as_os_str().to_owned();
            old.push(".1");
            let _ = std::fs::rename(path, old);
        }
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
            crate::progress::clear_line();
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

    /// A countdown on stderr while waiting for `label`; shown only on a terminal and when not
    /// quiet (the detached supervisor has no stderr at all).
    pub fn countdown(
        &self,
        label: impl Into<String>,
        total: Option<std::time::Duration>,
    ) -> crate::progress::Countdown {
        let shown = self.stderr_level.is_some_and(|level| level >= Level::Info);
        crate::progress::Countdown::new(label, total, shown)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_log_is_rotated_once_when_attached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmrun.log");
        std::fs::write(&path, vec![b'x'; 2 * 1024 * 1024]).unwrap();
        let log = Log::new(0, true);
        log.attach_file(&path);
        log.info("fresh start");
        assert_eq!(
            std::fs::metadata(dir.path().join("vmrun.log.1"))
                .unwrap()
                .len(),
            2 * 1024 * 1024
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with("fresh start\n") && text.len() < 200,
            "{text}"
        );
        let again = Log::new(0, true);
        again.attach_file(&path);
        again.info("second");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("fresh start"),
            "small logs are appended to"
        );
    }
}
