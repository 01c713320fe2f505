//! Each step vmrun takes, to stderr (by verbosity) and to the VM's log file (always, with time).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// When this vmrun started, for the phase times `-v` prints.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Marks the start of the process; phases are timed from here (or from the first log).
pub fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

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
    file: Mutex<Sink>,
}

/// Lines logged before the VM's log file is known (parsing, preflight) wait here and are
/// written first once it is attached.
enum Sink {
    Pending(Vec<String>),
    File(File),
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
        mark_start();
        let stderr_level = Some(match (quiet, verbose) {
            (true, _) => Level::Error,
            (false, 0) => Level::Info,
            (false, _) => Level::Debug,
        });
        Log {
            stderr_level,
            file: Mutex::new(Sink::Pending(Vec::new())),
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
        // Never through a planted symlink; 0600 whatever the umask.
        match crate::fsutil::open_append(path, 0o600) {
            Ok(mut file) => {
                if let Ok(mut slot) = self.file.lock() {
                    if let Sink::Pending(lines) = &*slot {
                        let _ = file.write_all(lines.concat().as_bytes());
                    }
                    *slot = Sink::File(file);
                }
            }
            Err(error) => self.warn(&format!("cannot write the log {}: {error}", path.display())),
        }
    }

    /// One line each to stderr and to the file, each written with a single call so that lines
    /// of concurrent writers never interleave and a line costs one syscall.
    pub fn log(&self, level: Level, message: &str) {
        if self.stderr_level.is_some_and(|shown| level <= shown) {
            let prefix = match level {
                Level::Error => "vmrun: error: ",
                Level::Warn => "vmrun: warning: ",
                Level::Info | Level::Debug => "vmrun: ",
            };
            crate::progress::clear_line();
            let line = format!("{prefix}{message}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        if let Ok(mut slot) = self.file.lock() {
            let tag = match level {
                Level::Error => "ERROR",
                Level::Warn => "WARN ",
                Level::Info => "INFO ",
                Level::Debug => "DEBUG",
            };
            let line = format!("{} {tag} [{}] {message}\n", timestamp(), std::process::id());
            match &mut *slot {
                Sink::File(file) => {
                    let _ = file.write_all(line.as_bytes());
                }
                // Bounded: only the few lines before a run's log is attached are kept.
                Sink::Pending(lines) if lines.len() < 1000 => lines.push(line),
                Sink::Pending(_) => {}
            }
        }
    }

    /// The end of a start or stop phase, with the time since vmrun started: shown with `-v`,
    /// always in the log (`phase NAME at N.N ms`), where the benchmark reads them.
    pub fn phase(&self, name: &str) {
        let elapsed = STARTED.get_or_init(Instant::now).elapsed();
        self.debug(&format!(
            "phase {name} at {:.1} ms",
            elapsed.as_secs_f64() * 1e3
        ));
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
        let early = Log::new(0, true);
        early.info("before the file is known");
        early.attach_file(&path);
        early.info("after");
        let text = std::fs::read_to_string(&path).unwrap();
        let before = text.find("before the file is known").unwrap();
        assert!(before < text.find("after").unwrap(), "{text}");
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
