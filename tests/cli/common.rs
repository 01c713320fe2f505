//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmrun::model::VmConfig;
use vmrun::profile::{Diagnostic, ProfileSource};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real `vmrun` binary with a clean, predictable environment.
pub fn vmrun(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    command
        .current_dir(dir)
        .env_remove("VMRUN_PROFILE_PATH")
        .env_remove("VMRUN_STATE_DIR")
        .env_remove("VMRUN_RUNTIME_DIR")
        .env_remove("VMRUN_SYSROOT");
    command
}

pub fn run(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("vmrun runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Parses and validates `text` as the profile `dir/name.toml`.
pub fn validate_text(
    dir: &Path,
    name: &str,
    text: &str,
) -> Result<(VmConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let source = ProfileSource::read(&path).unwrap();
    vmrun::model::load(&source)
}

/// The 1-based line of the only line that contains `marker`.
pub fn line_of(text: &str, marker: &str) -> usize {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(marker))
        .map(|(index, _)| index + 1)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "marker {marker:?} must be on exactly one line"
    );
    lines[0]
}

/// Writes a sparse file of `len` bytes.
pub fn sized_file(path: &Path, len: u64) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(len).unwrap();
}

/// The argv of `vmrun show --json`.
pub fn shown_argv(shown: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(shown["argv"].clone()).unwrap()
}

/// vmrun's QEMU as `show --json` describes it, as a command: its argv, the two listening
/// monitor sockets its `-chardev socket,fd=3/4` options expect (bound under `dir`), and the
/// files vmrun opens for it on the descriptors its `-add-fd` options name.
pub fn qemu_command(shown: &serde_json::Value, dir: &Path) -> Command {
    use command_fds::{CommandFdExt, FdMapping};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixListener;
    let argv = shown_argv(shown);
    let listener = |name: &str| OwnedFd::from(UnixListener::bind(dir.join(name)).unwrap());
    let mut mappings = vec![
        FdMapping {
            parent_fd: listener("test-qmp.sock"),
            child_fd: vmrun::plan::argv::QMP_FD,
        },
        FdMapping {
            parent_fd: listener("test-ctl.sock"),
            child_fd: vmrun::plan::argv::CTL_FD,
        },
    ];
    for file in shown["passed_files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        let opened = match file["open"].as_str().unwrap() {
            "read" => std::fs::File::open(path),
            "read_write" => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path),
            "create" => std::fs::File::create(path),
            other => panic!("cannot open {path} as {other} for a test"),
        };
        mappings.push(FdMapping {
            parent_fd: OwnedFd::from(opened.unwrap_or_else(|e| panic!("{path}: {e}"))),
            child_fd: file["fd"].as_i64().unwrap() as i32,
        });
    }
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command.fd_mappings(mappings).unwrap();
    command
}

/// Polls `done` until it holds; fails the test naming `what` after `within`.
pub fn wait_for(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A temporary directory others may pass through (mode 0711): QEMU runs as an unprivileged
/// user and must reach what vmrun gives it there (the wrapper it is started as, its own
/// runtime subdirectory), as it would under /run and /var/lib.
pub fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}
