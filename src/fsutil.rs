//! Files vmrun creates in the state and runtime directories: opened relative to their
//! directory's descriptor without following a symlink at either level (`O_NOFOLLOW`), only when
//! they are regular files, with an explicit mode whatever the caller's umask; replaced through a
//! temporary file and a rename, which is removed again when writing fails (a full disk).
//!
//! A leaf, like `process`: any layer uses it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

fn split(path: &Path) -> std::io::Result<(&Path, &std::ffi::OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

/// The directory a file lives in, opened without following a symlink in its last component.
fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    let fd = openat(
        None,
        dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_in(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    flags: OFlag,
    mode: u32,
) -> std::io::Result<File> {
    // O_NONBLOCK: a FIFO planted under the name must not hang the open; it is refused below.
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(mode),
    )?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (refused)",
        ));
    }
    // The regular file's reads and writes block as usual.
    nix::fcntl::fcntl(
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(flags & (OFlag::O_APPEND)),
    )?;
    Ok(file)
}

/// Sets `mode` on a file vmrun owns, whatever the umask made of it.
fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    if file.metadata()?.permissions().mode() & 0o7777 != mode {
        fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))?;
    }
    Ok(())
}

/// Opens `path` for appending, creating it with `mode`.
pub fn open_append(path: &Path, mode: u32) -> std::io::Result<File> {
    let (dir, name) = split(path)?;
    let file = open_in(
        &open_dir(dir)?,
        name,
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT,
        mode,
    )?;
    set_mode(&file, mode)?;
    Ok(file)
}

/// Opens `path` for reading and writing, creating it with `mode`, keeping what it holds.
pub fn open_rw(path: &Path, mode: u32) -> std::io::Result<File> {
    let (dir, name) = split(path)?;
    let file = open_in(&open_dir(dir)?, name, OFlag::O_RDWR | OFlag::O_CREAT, mode)?;
    set_mode(&file, mode)?;
    Ok(file)
}

/// Creates `path` empty (truncating what it held) with `mode`.
pub fn create(path: &Path, mode: u32) -> std::io::Result<File> {
    let (dir, name) = split(path)?;
    let file = open_in(
        &open_dir(dir)?,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC,
        mode,
    )?;
    set_mode(&file, mode)?;
    Ok(file)
}

/// Opens an existing regular file for reading, never through a symlink.
pub fn open_read(path: &Path) -> std::io::Result<File> {
    let (dir, name) = split(path)?;
    open_in(&open_dir(dir)?, name, OFlag::O_RDONLY, 0)
}

pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    open_read(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Replaces `path` with `bytes` (mode `mode`) through `.NAME.tmp` and a rename in the same
/// directory, flushed to disk first; the temporary file is removed when anything fails.
pub fn write_replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (dir, name) = split(path)?;
    let dir = open_dir(dir)?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(".tmp");
    // Whatever lies there (a crashed run's leftover, a planted link) goes; it is never opened.
    let _ = unlinkat(
        Some(dir.as_raw_fd()),
        temporary.as_os_str(),
        UnlinkatFlags::NoRemoveDir,
    );
    let written = (|| -> std::io::Result<()> {
        let mut file = open_in(
            &dir,
            &temporary,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            mode,
        )?;
        set_mode(&file, mode)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        renameat(
            Some(dir.as_raw_fd()),
            temporary.as_os_str(),
            Some(dir.as_raw_fd()),
            name,
        )?;
        Ok(())
    })();
    if written.is_err() {
        let _ = unlinkat(
            Some(dir.as_raw_fd()),
            temporary.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        );
    }
    written
}

/// Who holds the flock on `lock`: `None` when `/proc/locks` cannot be read, `Some(None)` when
/// nobody does.
pub fn lock_holder(lock: &Path) -> Option<Option<u32>> {
    use std::os::unix::fs::MetadataExt;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let Ok(meta) = std::fs::symlink_metadata(lock) else {
        return Some(None);
    };
    if !meta.is_file() {
        return Some(None);
    }
    let (major, minor) = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
    );
    Some(holder_in(&locks, major, minor, meta.ino()))
}

/// The pid of the FLOCK WRITE lock on the file `major:minor:inode` in a `/proc/locks` text
/// (`1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF`; waiters' lines carry `->`).
pub(crate) fn holder_in(locks: &str, major: u64, minor: u64, inode: u64) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") || fields.get(3) != Some(&"WRITE") {
            return None;
        }
        let mut id = fields.get(5)?.split(':');
        let (maj, min, ino) = (id.next()?, id.next()?, id.next()?);
        (u64::from_str_radix(maj, 16).ok()? == major
            && u64::from_str_radix(min, 16).ok()? == minor
            && ino.parse::<u64>().ok()? == inode)
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Runs `f` under `umask 000`, as a careless caller would.
    fn with_umask_000<T>(f: impl FnOnce() -> T) -> T {
        let old = nix::sys::stat::umask(Mode::empty());
        let result = f();
        nix::sys::stat::umask(old);
        result
    }

    #[test]
    fn files_get_their_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = with_umask_000(|| {
            let a = dir.path().join("journal");
            open_append(&a, 0o600).unwrap();
            let b = dir.path().join("state.json");
            write_replace(&b, b"{}", 0o640).unwrap();
            let c = dir.path().join("lock");
            open_rw(&c, 0o600).unwrap();
            (a, b, c)
        });
        for (path, mode) in [(a, 0o600), (b, 0o640), (c, 0o600)] {
            assert_eq!(
                std::fs::metadata(&path).unwrap().mode() & 0o7777,
                mode,
                "{path:?}"
            );
        }
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        for name in ["journal", "state.json", "lock", ".state.json.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        assert!(open_append(&dir.path().join("journal"), 0o600).is_err());
        assert!(open_rw(&dir.path().join("lock"), 0o600).is_err());
        assert!(create(&dir.path().join("lock"), 0o600).is_err());
        assert!(read_to_string(&dir.path().join("journal")).is_err());
        // The rename replaces the link itself; the temporary link is removed, not followed.
        write_replace(&dir.path().join("state.json"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(dir.path().join("state.json"))
            .unwrap()
            .is_file());
        // A symlinked directory is refused too.
        let elsewhere = tempfile::tempdir().unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(elsewhere.path(), &linked).unwrap();
        assert!(open_append(&linked.join("journal"), 0o600).is_err());
        assert!(!elsewhere.path().join("journal").exists());
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("journal");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_to_string(&fifo).is_err());
    }

    #[test]
    fn a_failed_replace_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails after the temporary file was written.
        std::fs::create_dir(dir.path().join("state.json")).unwrap();
        std::fs::write(dir.path().join("state.json/x"), "").unwrap();
        assert!(write_replace(&dir.path().join("state.json"), b"{}", 0o600).is_err());
        assert!(!dir.path().join(".state.json.tmp").exists());
    }
}
