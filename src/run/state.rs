//! The files that say a VM is running and how its last run ended: the lock (held by the
//! supervising vmrun), `state.json` in the runtime directory, `last-run.json` in the state
//! directory, and the stop request another process leaves for the supervisor.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

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
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&paths.lock)
            .map_err(io_error(&paths.lock))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, _errno)) => {
                let pid = std::fs::read_to_string(&paths.lock)
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

/// Writes JSON through a temporary file and a rename, so readers never see half a file.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StateError> {
    let temporary = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(value).map_err(|e| StateError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    std::fs::write(&temporary, text).map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error(path))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
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

/// The running VM's state, if its supervisor is alive.
pub fn running(paths: &VmPaths) -> Option<RunState> {
    let state: RunState = read_json(&paths.run_state)?;
    process_alive(state.vmrun_pid, "vmrun").then_some(state)
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
