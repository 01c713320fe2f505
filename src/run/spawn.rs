//! Starting QEMU: directly (no shell), paused, in its own process group, on the emulator CPUs,
//! with a parent-death signal, its output in `qemu.log` and its two QMP monitors as listening
//! sockets vmrun bound; and QEMU's own words when it refuses to start.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;

use command_fds::{CommandFdExt, FdMapping};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::signal::Signal;

use super::{threads, RunError};
use crate::model::{CpuSet, QemuIdentity};
use crate::plan::argv::{OpenAs, PassedFile, CTL_FD, QMP_FD};
use crate::plan::{Plan, VmPaths};

pub(super) fn setup_error(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Setup {
        path: path.to_path_buf(),
        source,
    }
}

/// The monitors' listening sockets, bound by vmrun before QEMU starts, and the supervisor's
/// connection to the first, made at once: it waits in the socket's backlog until QEMU accepts.
pub(super) struct Monitors {
    qmp: UnixListener,
    ctl: UnixListener,
    pub(super) supervisor: UnixStream,
}

/// Binds both monitor sockets afresh (a file left by a dead run is replaced, never connected
/// to) and connects the supervisor to the first.
pub(super) fn bind_monitors(paths: &VmPaths) -> Result<Monitors, RunError> {
    // Sockets are made with the umask's mode: 0600 whatever the caller's umask (under
    // `umask 000` QEMU's user could otherwise connect and send QMP). The umask is the
    // process's, so it is put back at once.
    let bind = |path: &Path| {
        let _ = std::fs::remove_file(path);
        let before = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(before);
        bound.map_err(setup_error(path))
    };
    let qmp = bind(&paths.qmp_socket)?;
    let ctl = bind(&paths.ctl_socket)?;
    let supervisor =
        UnixStream::connect(&paths.qmp_socket).map_err(setup_error(&paths.qmp_socket))?;
    Ok(Monitors {
        qmp,
        ctl,
        supervisor,
    })
}

/// Spawns QEMU with its monitors on the file descriptors its argv names. The supervisor
/// itself moves to the emulator CPUs first and stays there: QEMU and every thread it creates
/// inherit them, and no real-time vCPU can starve the supervisor.
pub(super) fn spawn_qemu(
    plan: &Plan,
    emulator: Option<&CpuSet>,
    memlock_bytes: Option<u64>,
    monitors: Monitors,
) -> Result<(Child, UnixStream), RunError> {
    let qemu_log = &plan.paths.qemu_log;
    let log_file = crate::fsutil::create(qemu_log, 0o600).map_err(setup_error(qemu_log))?;
    let log_err = log_file.try_clone().map_err(setup_error(qemu_log))?;
    let Monitors {
        qmp,
        ctl,
        supervisor,
    } = monitors;
    let mut command = match &plan.qemu_program {
        Some(program) => Command::new(program),
        None => Command::new(&plan.argv[0]),
    };
    command
        .arg0(&plan.argv[0])
        .args(&plan.argv[1..])
        .envs(plan.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        // Root's working directory may be one the QEMU user cannot enter.
        .current_dir("/")
        .process_group(0);
    let mut mappings = vec![
        FdMapping {
            parent_fd: OwnedFd::from(qmp),
            child_fd: QMP_FD,
        },
        FdMapping {
            parent_fd: OwnedFd::from(ctl),
            child_fd: CTL_FD,
        },
    ];
    for file in &plan.passed_files {
        mappings.push(FdMapping {
            parent_fd: open_for_qemu(file)?,
            child_fd: file.fd,
        });
    }
    let highest_fd = mappings.iter().map(|m| m.child_fd).max().unwrap_or(CTL_FD);
    command
        .fd_mappings(mappings)
        .map_err(|error| RunError::Spawn {
            binary: plan.argv[0].clone(),
            source: std::io::Error::other(error.to_string()),
        })?;
    close_unnamed_fds(&mut command, highest_fd);
    if let Some(identity) = &plan.qemu_user {
        run_as(&mut command, identity, memlock_bytes);
    }
    // After the change of user, which clears it.
    crate::process::set_parent_death_signal(&mut command, Signal::SIGTERM);
    if let Some(set) = emulator {
        threads::set_affinity(0, set)?;
    }
    let child = crate::process::spawn(&mut command).map_err(|source| RunError::Spawn {
        binary: plan.argv[0].clone(),
        source,
    })?;
    // Dropping the command closes vmrun's copies of the listeners: only QEMU holds them, so
    // the supervisor's connection breaks at once if QEMU dies before accepting it.
    drop(command);
    Ok((child, supervisor))
}

/// Opens one of QEMU's files as vmrun (root): QEMU gets the descriptor, never the path.
fn open_for_qemu(file: &PassedFile) -> Result<OwnedFd, RunError> {
    let path = &file.path;
    let failed = |source| RunError::Open {
        path: path.clone(),
        source,
    };
    let mut options = OpenOptions::new();
    match file.open {
        OpenAs::Read => options.read(true),
        OpenAs::ReadWrite => options.read(true).write(true),
        // The console's log in the state directory: never through a planted symlink, 0600
        // whatever the umask.
        OpenAs::Create => {
            return crate::fsutil::create(path, 0o600)
                .map(OwnedFd::from)
                .map_err(failed);
        }
        OpenAs::Connect => {
            return UnixStream::connect(path).map(OwnedFd::from).map_err(failed);
        }
    };
    options.open(path).map(OwnedFd::from).map_err(failed)
}

/// QEMU holds exactly the descriptors its argv names: whatever vmrun inherited (a cron
/// pipe, a terminal, a caller's descriptor) is closed at exec. Marked close-on-exec rather
/// than closed, so the standard library's own pipe still reports a failed exec.
fn close_unnamed_fds(command: &mut Command, highest_fd: i32) {
    let first = highest_fd as libc::c_uint + 1;
    // SAFETY: the closure runs in the forked child before exec (after the fd mappings were
    // made) and makes one system call, close_range, which no crate wraps; it touches no
    // memory and changes only the child's own descriptor flags.
    unsafe {
        command.pre_exec(move || {
            // Kernels before 5.11 lack the flag (EINVAL): QEMU then inherits as before.
            libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
}

/// QEMU becomes `identity` in the child before exec (see `process::run_as`).
fn run_as(command: &mut Command, identity: &QemuIdentity, memlock_bytes: Option<u64>) {
    crate::process::run_as(
        command,
        identity.uid,
        identity.gid,
        &identity.groups,
        memlock_bytes,
    );
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// QEMU ended before the guest ran: its own last words, plus what to do when KVM refused the
/// CPU (the same remedies `check` gives).
pub(super) fn refused(qemu_log: &Path, status: ExitStatus) -> RunError {
    let mut message = tail(qemu_log, 20);
    if crate::qemu_advice::is_kvm_refusal(&message) {
        message.push('\n');
        message.push_str(crate::qemu_advice::remedies_for(&message));
    }
    RunError::QemuRefused {
        status: crate::process::describe_exit(&status),
        message,
    }
}

/// The locked-memory limit QEMU can be given: raising it needs CAP_SYS_RESOURCE (a container's
/// root may lack it), else only up to the current hard limit. None: leave the limit alone.
pub(super) fn grantable_memlock(wanted: Option<u64>) -> Result<Option<u64>, (u64, u64)> {
    use nix::sys::resource::{getrlimit, Resource};
    let Some(wanted) = wanted else {
        return Ok(None);
    };
    let (_, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).unwrap_or((0, 0));
    let may_raise = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    if hard >= wanted || may_raise {
        Ok(Some(wanted))
    } else {
        Err((wanted, hard))
    }
}

/// The VM's runtime directory, made here and nowhere else: root's alone when QEMU runs as
/// root; for an unprivileged QEMU readable by QEMU's group too. Everything vmrun puts there
/// (monitors, lock, run state) stays root's.
pub fn prepare_runtime_dir(
    paths: &VmPaths,
    identity: Option<&QemuIdentity>,
) -> Result<(), RunError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &paths.runtime_dir;
    let (group, mode) = identity.map_or((0, 0o700), |user| (user.gid, 0o750));
    // Made 0700 and refused when another user owns it or may write to it.
    super::create_private_dir(dir)?;
    // Never through a symlink planted in place of the directory: that would re-group and
    // re-mode its target for good.
    if std::fs::symlink_metadata(dir)
        .map_err(setup_error(dir))?
        .file_type()
        .is_symlink()
    {
        return Err(setup_error(dir)(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a symlink; refusing to re-group its target",
        )));
    }
    std::os::unix::fs::lchown(dir, None, Some(group)).map_err(setup_error(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(setup_error(dir))
}

/// The one subdirectory of the runtime directory an unprivileged QEMU owns, for the sockets
/// it creates itself (the remote display's); made fresh for every start. Returns the base
/// directory and its mode when QEMU needed search permission on it that it lacked: the
/// caller gives that mode back after the run.
pub(super) fn prepare_qemu_dir(
    paths: &VmPaths,
    identity: Option<&QemuIdentity>,
) -> Result<Option<(std::path::PathBuf, u32)>, RunError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // QEMU passes through the base directory to its own: searchable, not listable.
    let mut lent = None;
    if let (Some(_), Some(base)) = (identity, paths.runtime_dir.parent()) {
        let current = std::fs::metadata(base).map_err(setup_error(base))?.mode() & 0o7777;
        if current & 0o011 != 0o011 {
            std::fs::set_permissions(base, std::fs::Permissions::from_mode(current | 0o011))
                .map_err(setup_error(base))?;
            lent = Some((base.to_path_buf(), current));
        }
    }
    let own = &paths.qemu_dir;
    let _ = std::fs::remove_dir_all(own);
    // Also when QEMU runs as vmrun's own user: it creates its sockets (the serial console's,
    // the remote display's) there.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(own)
        .map_err(setup_error(own))?;
    let Some(user) = identity else {
        return Ok(lent);
    };
    std::os::unix::fs::chown(own, Some(user.uid), Some(user.gid)).map_err(setup_error(own))?;
    Ok(lent)
}
