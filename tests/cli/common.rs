//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmrun::model::VmConfig;
use vmrun::profile::{Diagnostic, ProfileSource};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The QEMU the tests run: `VMRUN_TEST_QEMU` (a path, e.g. the QEMU 10 that
/// `scripts/install-deps.sh --qemu10` unpacks), else `qemu-system-x86_64` from PATH.
pub fn test_qemu() -> String {
    std::env::var("VMRUN_TEST_QEMU")
        .ok()
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| "qemu-system-x86_64".to_string())
}

/// PATH with the test QEMU first as `qemu-system-x86_64` (a directory holding a link to it),
/// so that vmrun finds it as it finds any QEMU; unchanged without `VMRUN_TEST_QEMU`.
pub fn test_path() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let Some(qemu) = std::env::var_os("VMRUN_TEST_QEMU").filter(|q| !q.is_empty()) else {
        return path;
    };
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        // One directory per test process, readable by the unprivileged QEMU user.
        let dir = std::env::temp_dir().join(format!("vmrun-test-qemu-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&qemu, dir.join("qemu-system-x86_64")).unwrap();
        eprintln!("[tests] QEMU: {}", qemu.to_string_lossy());
        dir
    });
    format!("{}:{path}", dir.display())
}

/// The capability cache the tests' vmrun uses (removed by nobody: it is a few small files in
/// the temporary directory, and a later run has another pid).
pub fn test_cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("vmrun-test-cache-{}", std::process::id()))
}

/// Fails the test unless `program` is installed, naming the Debian package that brings it
/// (scripts/install-deps.sh --tests installs them all).
pub fn require_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|dir| dir.join(program).is_file());
    assert!(
        found,
        "this test needs `{program}`: apt install {package} (scripts/install-deps.sh --tests installs it)"
    );
}

/// The real `vmrun` binary with a clean, predictable environment.
pub fn vmrun(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    command
        .current_dir(dir)
        .env("PATH", test_path())
        // QEMU's capability cache: one per test process, never the host's /var/cache/vmrun.
        .env("VMRUN_CACHE_DIR", test_cache_dir())
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
    // A program name is looked up as vmrun looks it up: the test QEMU first.
    let program = if argv[0].contains('/') {
        argv[0].clone()
    } else {
        std::env::split_paths(&test_path())
            .map(|dir| dir.join(&argv[0]))
            .find(|candidate| candidate.is_file())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| argv[0].clone())
    };
    let mut command = Command::new(program);
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
///
/// Every VM a test starts keeps its state and runtime directories in such a directory, so its
/// drop stops them first: a test that fails half-way (a panicking assert before its `stop`)
/// leaves no guest running and no fake host changed behind it.
pub fn tempdir() -> TestDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    TestDir(dir)
}

/// A test's temporary directory; see `tempdir`.
pub struct TestDir(tempfile::TempDir);

impl std::ops::Deref for TestDir {
    type Target = tempfile::TempDir;
    fn deref(&self) -> &tempfile::TempDir {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        stop_vms_under(self.0.path());
    }
}

/// The vmrun processes (supervisors of running VMs, foreground or detached) whose command line
/// names a path under `dir`.
fn vmruns_under(dir: &Path) -> Vec<nix::unistd::Pid> {
    use std::os::unix::ffi::OsStrExt;
    let needle = dir.as_os_str().as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let argv0 = cmdline.split(|byte| *byte == 0).next()?;
            let named_vmrun = argv0 == b"vmrun" || argv0.ends_with(b"/vmrun");
            let zombie = std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            });
            let under = cmdline.windows(needle.len()).any(|window| window == needle);
            (named_vmrun && under && !zombie).then_some(nix::unistd::Pid::from_raw(pid))
        })
        .collect()
}

/// Stops every VM whose vmrun runs with paths under `dir`: SIGTERM is vmrun's graceful stop
/// (the guest is asked, then forced; the host given back), SIGKILL after 60 s (QEMU dies with
/// it).
pub fn stop_vms_under(dir: &Path) {
    use nix::sys::signal::{kill, Signal};
    let running = vmruns_under(dir);
    if running.is_empty() {
        return;
    }
    eprintln!(
        "stopping the VMs a test left running under {}: {running:?}",
        dir.display()
    );
    for pid in &running {
        let _ = kill(*pid, Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !vmruns_under(dir).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for pid in vmruns_under(dir) {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// A throwaway login-less user with a home under /tmp and a /run/user/UID runtime directory,
/// for the tests that run a per-user sound server; removed with both directories on drop.
pub struct ThrowawayUser {
    pub name: &'static str,
    pub uid: u32,
    pub home: PathBuf,
}

impl ThrowawayUser {
    /// Creates `name` afresh (an old one from a failed run is removed first).
    pub fn create(name: &'static str) -> Self {
        let _ = Command::new("userdel").args(["-r", name]).output();
        let home = PathBuf::from(format!("/tmp/{name}-home"));
        let _ = std::fs::remove_dir_all(&home);
        let (code, _, err) = run(Command::new("useradd").args(["-m", "-d"]).arg(&home).args([
            "-s",
            "/usr/sbin/nologin",
            name,
        ]));
        assert_eq!(code, 0, "useradd: {err}");
        let uid = nix::unistd::User::from_name(name)
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        let user = ThrowawayUser { name, uid, home };
        let runtime = user.runtime();
        std::fs::create_dir_all(&runtime).unwrap();
        nix::unistd::chown(&runtime, Some(uid.into()), None).unwrap();
        user
    }

    pub fn runtime(&self) -> PathBuf {
        PathBuf::from(format!("/run/user/{}", self.uid))
    }

    /// `runuser` running what the caller adds as this user, with its runtime directory and home.
    pub fn command(&self) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", self.name, "--", "env"])
            .arg(format!("XDG_RUNTIME_DIR={}", self.runtime().display()))
            .arg(format!("HOME={}", self.home.display()));
        command
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-r", self.name]).output();
        let _ = std::fs::remove_dir_all(&self.home);
        let _ = std::fs::remove_dir_all(self.runtime());
    }
}

/// The findings of `vmrun check --json` output as (check, status, message); a failed parse
/// shows everything vmrun printed.
pub fn check_findings(stdout: &str, stderr: &str) -> Vec<(String, String, String)> {
    let value: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    value["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Fails the test unless it runs as root: the tests that start real QEMU with pinned threads
/// (SCHED_RR) and hand device nodes to QEMU's user cannot run otherwise.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests run QEMU with pinned threads (SCHED_RR): run as root (CI does)"
    );
}

/// Asserts an error for `key` on the line marked `#<` in `text`, saying `says`, shown as
/// `FILE:LINE: KEY: ` as the brief asks of every profile error.
pub fn expect_error(text: &str, key: &str, says: &str) {
    let dir = tempdir();
    let line = line_of(text, "#<");
    let found = match validate_text(dir.path(), "t", text) {
        Ok((_, warnings)) => warnings,
        Err(errors) => errors,
    };
    let hit = found.iter().find(|d| {
        d.key == key
            && d.line == Some(line)
            && d.message.contains(says)
            && d.severity == vmrun::profile::Severity::Error
    });
    let Some(hit) = hit else {
        panic!("expected an error for `{key}` on line {line} saying {says:?}; got {found:#?}");
    };
    assert!(
        hit.to_string().contains(&format!("t.toml:{line}: {key}: ")),
        "{hit}"
    );
}

/// `config` with QEMU resolved to `nobody`, as `plan::resolve` gives it for root without
/// SUDO_UID: the host-session tests hand device nodes to that user.
pub fn as_nobody(mut config: VmConfig) -> VmConfig {
    config.qemu.user = vmrun::model::QemuUser::Resolved(vmrun::model::QemuIdentity {
        name: "nobody".into(),
        uid: 65534,
        gid: 65534,
        groups: vec![65534],
        source: "fallback",
    });
    config
}

/// A `vmrun run` in the foreground whose guest runs, for the crash tests: `kill_9` kills it as
/// a crash would; dropped without that (a failed assert), it is killed all the same so no VM
/// outlives the test.
pub struct Foreground {
    child: Option<std::process::Child>,
    qemu: u32,
}

/// Starts `vmrun run PROFILE` in the foreground (`vmrun` makes the command with the test's
/// environment) and waits until `vmrun status NAME` says the VM runs; QEMU's pid is read from
/// `runtime/NAME/qemu.pid`.
pub fn run_in_foreground(
    vmrun: impl Fn() -> Command,
    profile: &Path,
    name: &str,
    runtime: &Path,
) -> Foreground {
    let child = vmrun()
        .arg("run")
        .arg(profile)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut foreground = Foreground {
        child: Some(child),
        qemu: 0,
    };
    wait_for("the VM to run", std::time::Duration::from_secs(20), || {
        run(vmrun().args(["status", name])).0 == 0
    });
    foreground.qemu = std::fs::read_to_string(runtime.join(name).join("qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    foreground
}

impl Foreground {
    /// SIGKILL to vmrun, then waits for QEMU to go with it (its parent-death signal): nothing
    /// was undone, which `vmrun recover` must then do.
    pub fn kill_9(mut self) {
        self.kill();
        let qemu = self.qemu;
        wait_for("QEMU to go", std::time::Duration::from_secs(10), || {
            !vmrun::run::state::process_alive(qemu, "qemu")
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        self.kill();
    }
}
