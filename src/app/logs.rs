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

/// What an empty log means, for a user who asked for it and got nothing.
pub fn empty_reason(kind: LogKind) -> &'static str {
    match kind {
        LogKind::Qemu => {
            "QEMU wrote nothing to stderr in its last run: it writes there only warnings and errors \
             (the guest's own output is in `logs --console`)"
        }
        LogKind::Console => {
            "the guest wrote nothing to its first serial port yet (Windows writes nothing there; \
             a Linux guest needs console=ttyS0 on its command line)"
        }
        LogKind::Vmrun => "the VM's last run logged nothing yet",
    }
}

/// The guest's serial output made fit for a terminal or a file: escape sequences (colors,
/// cursor moves, screen clears), other control characters and carriage returns removed,
/// cursor positioning turned into line breaks. Streams: a sequence split between two writes
/// is still recognized.
pub struct StripControls<W: Write> {
    inner: W,
    state: Strip,
    at_line_start: bool,
    carriage_return: bool,
    /// The parameters of the CSI sequence being read.
    params: Vec<u8>,
    /// The terminal row the text is on, as far as cursor moves tell.
    row: Option<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strip {
    Text,
    Escape,
    /// ESC ( and friends: one more byte names a character set.
    Charset,
    Csi,
    /// OSC, DCS, SOS, PM, APC: up to BEL or ESC \.
    Str,
    StrEscape,
}

impl<W: Write> StripControls<W> {
    pub fn new(inner: W) -> Self {
        StripControls {
            inner,
            state: Strip::Text,
            at_line_start: true,
            carriage_return: false,
            params: Vec::new(),
            row: None,
        }
    }

    fn filter(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &byte in bytes {
            let newline = |out: &mut Vec<u8>, at_line_start: &mut bool| {
                if !*at_line_start {
                    out.push(b'\n');
                    *at_line_start = true;
                }
            };
            match self.state {
                Strip::Text => {
                    if self.carriage_return && byte != b'\n' {
                        // A lone carriage return overwrote its line on a terminal.
                        newline(&mut out, &mut self.at_line_start);
                    }
                    self.carriage_return = false;
                    match byte {
                        0x1b => self.state = Strip::Escape,
                        b'\r' => self.carriage_return = true,
                        b'\n' => {
                            out.push(b'\n');
                            self.at_line_start = true;
                            self.row = self.row.map(|row| row + 1);
                        }
                        b'\t' => {
                            out.push(byte);
                            self.at_line_start = false;
                        }
                        0x00..=0x1f | 0x7f => {}
                        _ => {
                            out.push(byte);
                            self.at_line_start = false;
                        }
                    }
                }
                Strip::Escape => {
                    self.state = match byte {
                        b'[' => {
                            self.params.clear();
                            Strip::Csi
                        }
                        b']' | b'P' | b'X' | b'^' | b'_' => Strip::Str,
                        b'(' | b')' | b'*' | b'+' | b'-' | b'.' | b'/' | b'#' | b'%' => {
                            Strip::Charset
                        }
                        _ => Strip::Text,
                    }
                }
                Strip::Charset => self.state = Strip::Text,
                Strip::Csi => {
                    if (0x40..=0x7e).contains(&byte) {
                        self.state = Strip::Text;
                        // A cursor move to another row or to a row's start, or a cleared
                        // screen, starts a new line in a log; a move along the row (a shell
                        // echoing what is typed) does not.
                        match byte {
                            b'H' | b'f' => {
                                let text = String::from_utf8_lossy(&self.params);
                                let mut numbers =
                                    text.split(';').map(|n| n.parse::<u32>().unwrap_or(1));
                                let row = numbers.next().unwrap_or(1);
                                let column = numbers.next().unwrap_or(1);
                                // The start of a row rewrites it: a new line in the log.
                                if self.row != Some(row) || column <= 1 {
                                    newline(&mut out, &mut self.at_line_start);
                                }
                                self.row = Some(row);
                            }
                            b'J' => {
                                newline(&mut out, &mut self.at_line_start);
                                self.row = None;
                            }
                            _ => {}
                        }
                    } else if (0x20..=0x3f).contains(&byte) {
                        if self.params.len() < 32 {
                            self.params.push(byte);
                        }
                    } else {
                        // Not a CSI byte: a broken sequence ends here.
                        self.state = Strip::Text;
                    }
                }
                Strip::Str => match byte {
                    0x07 => self.state = Strip::Text,
                    0x1b => self.state = Strip::StrEscape,
                    _ => {}
                },
                Strip::StrEscape => {
                    self.state = if byte == b'\\' {
                        Strip::Text
                    } else {
                        Strip::Str
                    }
                }
            }
        }
        out
    }
}

impl<W: Write> Write for StripControls<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let filtered = self.filter(bytes);
        self.inner.write_all(&filtered)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn stripped(chunks: &[&[u8]]) -> String {
        let mut out = StripControls::new(Vec::new());
        for chunk in chunks {
            out.write_all(chunk).unwrap();
        }
        String::from_utf8(out.inner).unwrap()
    }

    #[test]
    fn escape_sequences_and_controls_are_stripped_even_when_split() {
        // OVMF's UEFI shell, as it reaches console.log.
        let uefi: &[u8] = b"\x1b[2J\x1b[01;01H\x1b[=3hUEFI Interactive Shell v2.2\r\nEDK II\r\n\
            \x1b[1m\x1b[33m\x1b[40mMapping table\x1b[0m\x1b[37m\x1b[40m\r\n\x1b[05;01HPress \x1b[1mESC\x1b[0m in 5 seconds\
            \x1b[05;01HPress ESC in 4 seconds\x1b]0;title\x07\x08Shell> ";
        let expected =
            "UEFI Interactive Shell v2.2\nEDK II\nMapping table\nPress ESC in 5 seconds\n\
                        Press ESC in 4 secondsShell> ";
        assert_eq!(stripped(&[uefi]), expected);
        for split in 1..uefi.len() {
            let (a, b) = uefi.split_at(split);
            assert_eq!(stripped(&[a, b]), expected, "split at {split}");
        }
        // The UEFI shell echoes each typed key with a move to its column in the same row.
        assert_eq!(
            stripped(&[b"\x1b[06;01HShell> \x1b[06;08He\x1b[06;09Hc\x1b[06;10Hho\r\nok\r\n\x1b[08;01HShell> "]),
            "Shell> echo\nok\nShell> "
        );
        assert_eq!(stripped(&["grüße\r\n".as_bytes()]), "grüße\n");
        assert_eq!(stripped(&[b"50%\r100%\n"]), "50%\n100%\n");
    }

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
