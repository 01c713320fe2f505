//! Where a VM's files live, all in one place: the state directory (kept: VARS copy, logs,
//! journal, last run) and the runtime directory (gone after the run: sockets, pidfile, lock,
//! run state, stop request). Both follow from the VM's name alone, so `status`, `stop` and
//! `recover` find them whether the VM was started from a name or a path.

use std::path::PathBuf;

use serde::Serialize;

use crate::firmware::ImageFormat;
use crate::model::VmName;

/// The two base directories, before the VM's name is appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseDirs {
    pub state: PathBuf,
    pub runtime: PathBuf,
}

impl BaseDirs {
    /// Explicit values win (command line, then `VMRUN_STATE_DIR` / `VMRUN_RUNTIME_DIR`);
    /// otherwise `/var/lib/vmrun` and `/run/vmrun` as root, the XDG directories otherwise.
    pub fn resolve(state: Option<PathBuf>, runtime: Option<PathBuf>) -> Self {
        let is_root = nix::unistd::geteuid().is_root();
        Self::resolve_with(state, runtime, is_root, |name| {
            std::env::var_os(name).map(PathBuf::from)
        })
    }

    pub fn resolve_with(
        state: Option<PathBuf>,
        runtime: Option<PathBuf>,
        is_root: bool,
        var: impl Fn(&str) -> Option<PathBuf>,
    ) -> Self {
        let absolute = |value: Option<PathBuf>| value.filter(|p| p.is_absolute());
        let home = var("HOME").unwrap_or_else(|| PathBuf::from("/"));
        let state = state.unwrap_or_else(|| {
            if is_root {
                PathBuf::from("/var/lib/vmrun")
            } else {
                absolute(var("XDG_STATE_HOME"))
                    .unwrap_or_else(|| home.join(".local/state"))
                    .join("vmrun")
            }
        });
        let runtime = runtime.unwrap_or_else(|| {
            if is_root {
                PathBuf::from("/run/vmrun")
            } else {
                match absolute(var("XDG_RUNTIME_DIR")) {
                    Some(dir) => dir.join("vmrun"),
                    None => {
                        let uid = nix::unistd::geteuid();
                        PathBuf::from(format!("/tmp/vmrun-{uid}"))
                    }
                }
            }
        });
        BaseDirs { state, runtime }
    }
}

/// The longest path a Unix socket address holds (108 bytes of `sun_path`, NUL-terminated).
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmPaths {
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
    /// The supervisor's own QMP monitor.
    pub qmp_socket: PathBuf,
    /// A second QMP monitor for `status`, `stop` and `qmp` from other processes: QEMU serves
    /// one client per monitor, and the supervisor keeps the first.
    pub ctl_socket: PathBuf,
    pub pidfile: PathBuf,
    pub lock: PathBuf,
    /// The running supervisor's state (pids, start time): `status`, `stop`, `list` read it.
    pub run_state: PathBuf,
    /// Left by `vmrun stop` for the supervisor.
    pub stop_request: PathBuf,
    /// The supervisor's samples of each vCPU's run delay, for `status`.
    pub sched_samples: PathBuf,
    pub console_log: PathBuf,
    /// The serial console's socket (`vmrun console`): QEMU listens on it in its own directory
    /// and logs what the guest writes to `console_log` whether a client is connected or not.
    pub console_socket: PathBuf,
    pub log: PathBuf,
    pub qemu_log: PathBuf,
    /// What the `started` hooks print.
    pub hooks_log: PathBuf,
    pub journal: PathBuf,
    /// How the last run ended.
    pub last_run: PathBuf,
    /// swtpm's TPM state (BitLocker keys, Windows Hello): kept like the VARS copy, never
    /// overwritten or removed by vmrun.
    pub tpm_state: PathBuf,
    pub swtpm_log: PathBuf,
    /// swtpm's control socket, which QEMU connects to, and its pidfile; removed by the host
    /// step's undo, not with the other runtime files, so a crashed run's swtpm is still found.
    pub swtpm_socket: PathBuf,
    pub swtpm_pidfile: PathBuf,
    /// The one directory QEMU may write to (owned by the QEMU user during a run): QEMU creates
    /// the remote display's socket itself.
    pub qemu_dir: PathBuf,
    /// The remote display's socket (`listen = "unix"`).
    pub spice_socket: PathBuf,
    pub vnc_socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    #[error("the QMP socket path {} is {len} bytes; Unix sockets allow {MAX_SOCKET_PATH}. Use a shorter --runtime-dir (or VMRUN_RUNTIME_DIR)", .path.display())]
    SocketTooLong { path: PathBuf, len: usize },
}

impl VmPaths {
    pub fn new(base: &BaseDirs, name: &VmName) -> Result<Self, PathsError> {
        let state_dir = base.state.join(name.as_str());
        let runtime_dir = base.runtime.join(name.as_str());
        let qmp_socket = runtime_dir.join("qmp.sock");
        let len = qmp_socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(PathsError::SocketTooLong {
                path: qmp_socket,
                len,
            });
        }
        Ok(VmPaths {
            console_log: state_dir.join("console.log"),
            console_socket: runtime_dir.join("qemu/console.sock"),
            log: state_dir.join("vmrun.log"),
            qemu_log: state_dir.join("qemu.log"),
            hooks_log: state_dir.join("hooks.log"),
            journal: state_dir.join("journal"),
            last_run: state_dir.join("last-run.json"),
            tpm_state: state_dir.join("tpm"),
            swtpm_log: state_dir.join("swtpm.log"),
            swtpm_socket: runtime_dir.join("swtpm.sock"),
            swtpm_pidfile: runtime_dir.join("swtpm.pid"),
            qemu_dir: runtime_dir.join("qemu"),
            spice_socket: runtime_dir.join("qemu/spice.sock"),
            vnc_socket: runtime_dir.join("qemu/vnc.sock"),
            ctl_socket: runtime_dir.join("ctl.sock"),
            pidfile: runtime_dir.join("qemu.pid"),
            lock: runtime_dir.join("lock"),
            run_state: runtime_dir.join("state.json"),
            stop_request: runtime_dir.join("stop-request.json"),
            sched_samples: runtime_dir.join("sched.json"),
            qmp_socket,
            state_dir,
            runtime_dir,
        })
    }
}

impl VmPaths {
    /// The VM's own copy of the OVMF VARS template, in the template's format; survives every
    /// run.
    pub fn vars(&self, format: ImageFormat) -> PathBuf {
        let extension = match format {
            ImageFormat::Raw => "fd",
            ImageFormat::Qcow2 => "qcow2",
        };
        self.state_dir.join(format!("OVMF_VARS.{extension}"))
    }

    /// What a run keeps in the runtime directory besides the lock (whose holder removes it).
    pub fn runtime_files(&self) -> [&PathBuf; 8] {
        [
            &self.sched_samples,
            &self.qmp_socket,
            &self.ctl_socket,
            &self.pidfile,
            &self.run_state,
            &self.stop_request,
            &self.spice_socket,
            &self.vnc_socket,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(map: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<PathBuf> {
        move |name| {
            map.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| PathBuf::from(v))
        }
    }

    #[test]
    fn defaults_for_root_and_users() {
        let root = BaseDirs::resolve_with(None, None, true, vars(&[]));
        assert_eq!(root.state, PathBuf::from("/var/lib/vmrun"));
        assert_eq!(root.runtime, PathBuf::from("/run/vmrun"));
        let user = BaseDirs::resolve_with(
            None,
            None,
            false,
            vars(&[("HOME", "/home/u"), ("XDG_RUNTIME_DIR", "/run/user/1000")]),
        );
        assert_eq!(user.state, PathBuf::from("/home/u/.local/state/vmrun"));
        assert_eq!(user.runtime, PathBuf::from("/run/user/1000/vmrun"));
        let explicit =
            BaseDirs::resolve_with(Some("/s".into()), Some("/r".into()), true, vars(&[]));
        assert_eq!(explicit.state, PathBuf::from("/s"));
    }

    #[test]
    fn socket_paths_over_the_limit_are_refused() {
        let name: VmName = "win10".parse().unwrap();
        let long = BaseDirs {
            state: "/s".into(),
            runtime: PathBuf::from(format!("/{}", "r".repeat(100))),
        };
        let err = VmPaths::new(&long, &name).unwrap_err();
        assert!(err.to_string().contains("--runtime-dir"));
        let short = BaseDirs {
            state: "/s".into(),
            runtime: "/run/vmrun".into(),
        };
        let paths = VmPaths::new(&short, &name).unwrap();
        assert_eq!(paths.qmp_socket, PathBuf::from("/run/vmrun/win10/qmp.sock"));
        assert_eq!(
            paths.vars(ImageFormat::Qcow2),
            PathBuf::from("/s/win10/OVMF_VARS.qcow2")
        );
    }
}
