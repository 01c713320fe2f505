//! `vmrun logs`: a VM's own log, QEMU's stderr or the guest's serial console, printed or
//! followed as it grows (across truncation and rotation, as `tail -F` does).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{App, AppError};
use crate::plan::VmPaths;

/// Which of a VM's logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// vmrun's own log of every run (`vmrun.log`).
    Vmrun,
    /// QEMU's stderr (`qemu.log`).
    Qemu,
    /// The guest's first serial port (`console.log`, with `[console] serial = "log"`).
    Console,
}

impl LogKind {
    pub fn path(self, paths: &VmPaths) -> &Path {
        match self {
            LogKind::Vmrun => &paths.log,
            LogKind::Qemu => &paths.qemu_log,
            LogKind::Console => &paths.console_log,
        }
    }

    fn what(self) -> &'static str {
        match self {
            LogKind::Vmrun => "vmrun log",
            LogKind::Qemu => "QEMU log",
            LogKind::Console => "serial console log",
        }
    }
}

/// How often a followed log is looked at: fast enough for a console, cheap enough to leave open.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

impl App {
    /// The file of one of a VM's logs, by VM name or profile. Without `follow`, a log that does
    /// not exist yet is an error that says why it may be missing.
    pub fn log_file(
        &self,
        name_or_profile: &str,
        kind: LogKind,
        follow: bool,
    ) -> Result<PathBuf, AppError> {
        let target = self.target(name_or_profile)?;
        let path = kind.path(&target.paths).to_path_buf();
        if follow || path.exists() {
            return Ok(path);
        }
        let hint = match kind {
            LogKind::Console => {
                "; the console is logged only with `[console] serial = \"log\"` in the profile"
            }
            LogKind::Vmrun | LogKind::Qemu => "; has the VM run with this --state-dir?",
        };
        Err(AppError::Host(format!(
            "{} has no {} yet ({}){hint}",
            target.name,
            kind.what(),
            path.display()
        )))
    }
}

/// Copies `path` to `out`; with `follow`, keeps copying what is appended until `out` fails
/// (the reader went away) or `keep_going` says stop. A file that does not exist yet is waited
/// for; one that is truncated (QEMU starts its logs afresh each run) or replaced (vmrun's log
/// is rotated) is read again from its start.
pub fn copy_log(
    path: &Path,
    out: &mut dyn Write,
    follow: bool,
    keep_going: &dyn Fn() -> bool,
) -> std::io::Result<()> {
    let mut open: Option<(File, u64)> = None;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if let Ok(meta) = std::fs::metadata(path) {
            let replaced = open.as_ref().is_some_and(|(file, _)| {
                file.metadata()
                    .map(|m| m.ino() != meta.ino() || m.dev() != meta.dev())
                    .unwrap_or(true)
            });
            if open.is_none() || replaced {
                open = File::open(path).ok().map(|file| (file, 0));
            }
            if let Some((file, position)) = open.as_mut() {
                if meta.len() < *position {
                    file.seek(SeekFrom::Start(0))?;
                    *position = 0;
                }
                loop {
                    let read = file.read(&mut buffer)?;
                    if read == 0 {
                        break;
                    }
                    out.write_all(&buffer[..read])?;
                    *position += read as u64;
                }
                out.flush()?;
            }
        }
        if !follow || !keep_going() {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_truncated_log_is_read_again_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "first run, a long line\n").unwrap();
        let rounds = AtomicUsize::new(0);
        let mut out = Vec::new();
        let writer = path.clone();
        copy_log(&path, &mut out, true, &|| {
            match rounds.fetch_add(1, Ordering::SeqCst) {
                0 => std::fs::write(&writer, "second\n").unwrap(),
                1 => {
                    let mut file = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&writer)
                        .unwrap();
                    file.write_all(b"more\n").unwrap();
                }
                _ => return false,
            }
            true
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "first run, a long line\nsecond\nmore\n"
        );
    }
}
