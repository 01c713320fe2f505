//! The files that say a VM is running and how its last run ended: the lock (held by the
//! supervising vmrun), `state.json` in the runtime directory, `last-run.json` in the state
//! directory, and the stop request another process leaves for the supervisor.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::fsutil::holder_in;
pub use crate::fsutil::lock_holder;
use crate::plan::VmPaths;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("VM `{name}` is already running (vmrun pid {pid}); stop it with `vmrun stop {name}`")]
    AlreadyRunning { name: String, pid: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An exclusive, non-blocking flock on the VM's lock file, holding the supervisor's pid.
pub struct VmLock {
    lock: Option<Flock<File>>,
    path: PathBuf,
}

impl VmLock {
    pub fn acquire(paths: &VmPaths, name: &str) -> Result<Self, StateError> {
        // Never through a planted symlink, and 0640 whatever the umask.
        let file = crate::fsutil::open_rw(&paths.lock, 0o640).map_err(io_error(&paths.lock))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, _errno)) => {
                let pid = crate::fsutil::read_to_string(&paths.lock)
                    .map(|text| text.trim().to_string())
                    .unwrap_or_else(|_| "unknown".into());
                return Err(StateError::AlreadyRunning {
                    name: name.to_string(),
                    pid,
                });
            }
        };
        lock.set_len(0).map_err(io_error(&paths.lock))?;
        writeln!(lock, "{}", std::process::id()).map_err(io_error(&paths.lock))?;
        Ok(VmLock {
            lock: Some(lock),
            path: paths.lock.clone(),
        })
    }

    /// Removes the lock file, then releases the lock.
    pub fn release(mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.lock.take();
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A process beside QEMU, as it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningCompanion {
    /// What it serves (`TPM`).
    pub role: String,
    /// Its process name (`swtpm`).
    pub name: String,
    pub pid: u32,
}

/// Written once QEMU runs; read by `status`, `stop`, `list` and `qmp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub name: String,
    pub profile: PathBuf,
    pub vmrun_pid: u32,
    pub qemu_pid: u32,
    pub started_unix: u64,
    pub accel: String,
    /// The processes host steps keep beside QEMU (the TPM's emulator).
    #[serde(default)]
    pub companions: Vec<RunningCompanion>,
    /// How to connect to the remote display (`spice+unix:///...`).
    #[serde(default)]
    pub display: Option<String>,
    /// The host CPUs of its real-time (SCHED_RR/FIFO) vCPUs: another VM must not share them.
    #[serde(default)]
    pub realtime_cpus: Vec<usize>,
    /// The passed PCI functions' addresses (`status` shows their driver and power state).
    #[serde(default)]
    pub pci: Vec<String>,
}

/// How the last run ended, for `stop` (which waits for the supervisor) and for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub exit_code: i32,
    pub outcome: String,
    pub finished_unix: u64,
}

/// Left by `vmrun stop` before it signals the supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    pub timeout_seconds: Option<u64>,
    pub force: bool,
}

/// Writes JSON through a temporary file and a rename, so readers never see half a file; mode
/// 0640 (QEMU's group may read the runtime directory), never through a symlink, and no
/// temporary file left behind when the disk is full.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StateError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| StateError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    crate::fsutil::write_replace(path, &text, 0o640).map_err(io_error(path))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = crate::fsutil::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether `pid` is alive and its command name starts with `comm_prefix` (guards against pid
/// reuse after a crash).
pub fn process_alive(pid: u32, comm_prefix: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.starts_with(comm_prefix) && !is_zombie(pid),
        Err(_) => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The running VM's state, if its supervisor is alive. The supervisor is the process that holds
/// the lock (the kernel says which, in `/proc/locks`), not whatever `state.json` claims: a state
/// file that is garbled, empty or names another process does not make a running VM look
/// stopped. Without `/proc/locks`, `state.json` and `/proc` decide as before.
pub fn running(paths: &VmPaths) -> Option<RunState> {
    let claimed: Option<RunState> = read_json(&paths.run_state);
    let Some(holder) = lock_holder(&paths.lock) else {
        let state = claimed?;
        return process_alive(state.vmrun_pid, "vmrun").then_some(state);
    };
    let holder = holder?;
    if !process_alive(holder, "vmrun") {
        return None;
    }
    let Some(qemu) = qemu_child_of(holder) else {
        // QEMU has ended and the supervisor is giving the host back: the run is not over
        // until it has recorded how it ended and let go of the lock, when it is this run's
        // own state file that says so.
        return claimed.filter(|state| state.vmrun_pid == holder);
    };
    match claimed {
        Some(state) if state.vmrun_pid == holder && state.qemu_pid == qemu => Some(state),
        // The state file does not describe this run: what the kernel says about it.
        other => Some(RunState {
            name: paths
                .runtime_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            profile: other
                .as_ref()
                .map(|s| s.profile.clone())
                .unwrap_or_default(),
            vmrun_pid: holder,
            qemu_pid: qemu,
            started_unix: start_unix(qemu).unwrap_or(0),
            accel: String::new(),
            companions: Default::default(),
            display: None,
            realtime_cpus: Vec::new(),
            pci: other.map(|s| s.pci).unwrap_or_default(),
        }),
    }
}

/// The QEMU process `parent` started, found in `/proc`.
fn qemu_child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent && comm.starts_with("qemu") && !rest.trim_start().starts_with('Z'))
                .then_some(pid)
        })
}

/// When `pid` started, in Unix seconds.
fn start_unix(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.mtime().max(0) as u64)
}

/// The kernel's start time of `pid` (clock ticks since boot), which tells a process from a
/// later one that got the same pid.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 22 of stat; `rest` starts at field 3.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Records how a run ended in the state directory, where it outlives a reboot; when that
/// cannot be written (a full disk), in the runtime directory (a tmpfs) instead, so that `stop`
/// still reports how the run ended.
pub fn record_last_run(paths: &VmPaths, last: &LastRun) -> Result<(), StateError> {
    match write_json(&paths.last_run, last) {
        Ok(()) => {
            clear_last_run(paths);
            Ok(())
        }
        Err(durable) => write_json(&runtime_last_run(paths), last).map_err(|_| durable),
    }
}

/// How the last run ended: the runtime directory's record (there only when the state
/// directory could not take it, and newer), else the state directory's.
pub fn read_last_run(paths: &VmPaths) -> Option<LastRun> {
    read_json(&runtime_last_run(paths)).or_else(|| read_json(&paths.last_run))
}

/// Forgets the runtime directory's record, at the start of a run.
pub fn clear_last_run(paths: &VmPaths) {
    let _ = std::fs::remove_file(runtime_last_run(paths));
}

fn runtime_last_run(paths: &VmPaths) -> PathBuf {
    paths.runtime_dir.join("last-run.json")
}

/// The QEMU of a vmrun that died without cleaning up, if it still runs: nothing may touch the
/// VM's host changes or files while it does.
pub fn orphaned_qemu(paths: &VmPaths) -> Option<u32> {
    let stale: RunState = read_json(&paths.run_state)?;
    process_alive(stale.qemu_pid, "qemu").then_some(stale.qemu_pid)
}

/// Removes what a run keeps in the runtime directory besides the lock (the lock's holder
/// removes that when it releases it).
pub fn remove_runtime_files(paths: &VmPaths) {
    for path in paths.runtime_files() {
        let _ = std::fs::remove_file(path);
    }
    // QEMU's own directory: whatever an unprivileged QEMU left there goes too.
    let _ = std::fs::remove_dir_all(&paths.qemu_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_read_from_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 00:1a:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 fd:01:5678 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4243 fd:01:5678 0 EOF\n";
        assert_eq!(holder_in(locks, 0xfd, 1, 5678), Some(4242));
        assert_eq!(holder_in(locks, 0xfd, 1, 5679), None);
        assert_eq!(
            holder_in(locks, 0, 0x1a, 99),
            None,
            "POSIX locks are not vmrun's"
        );
    }

    #[test]
    fn how_a_run_ended_is_recorded_even_when_the_state_directory_cannot_take_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = crate::plan::BaseDirs {
            state: dir.path().join("state"),
            runtime: dir.path().join("run"),
        };
        let paths = VmPaths::new(&base, &"vm".parse().unwrap()).unwrap();
        std::fs::create_dir_all(&paths.runtime_dir).unwrap();
        // The state directory's file cannot be written (as on a full disk).
        std::fs::create_dir_all(paths.last_run.join("blocked")).unwrap();
        let last = LastRun {
            exit_code: 5,
            outcome: "stopped by force".into(),
            finished_unix: 1,
        };
        record_last_run(&paths, &last).unwrap();
        assert_eq!(read_last_run(&paths), Some(last));
        let leftovers: Vec<_> = std::fs::read_dir(&paths.state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("last-run.json")],
            "no temporary file left"
        );
        clear_last_run(&paths);
        assert_eq!(read_last_run(&paths), None);
    }

    #[test]
    fn a_held_lock_is_found_and_a_released_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock");
        let file = crate::fsutil::open_rw(&lock, 0o600).unwrap();
        assert_eq!(lock_holder(&lock), Some(None));
        let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
        assert_eq!(lock_holder(&lock), Some(Some(std::process::id())));
        drop(held);
        assert_eq!(lock_holder(&lock), Some(None));
    }
}
