//! Who QEMU runs as: `qemu.user`, else the desktop user who ran vmrun through sudo or pkexec,
//! else `nobody`; its groups from the host's user database, plus the group owning `/dev/kvm`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use super::Sysroot;
use crate::model::{Accel, AudioBackend, QemuIdentity, QemuUser, VmConfig};

/// The fallback when no desktop user is known (cron, a root shell): an account that owns no
/// files. A dedicated account (`qemu.user`) is better: `nobody` may be shared with daemons.
const FALLBACK_USER: &str = "nobody";
const FALLBACK_ID: u32 = 65534;

fn audio_user(config: &VmConfig) -> Option<String> {
    match &config.audio.as_ref()?.backend {
        AudioBackend::PulseAudio { user, .. } | AudioBackend::PipeWire { user, .. } => user.clone(),
        AudioBackend::None => None,
    }
}

/// A user of this host's user database, by name or number.
pub fn find_user(word: &str) -> Option<User> {
    match word.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
        Err(_) => User::from_name(word).ok().flatten(),
    }
}

/// A group's id: a number as it is, a name from the host's group database.
pub fn group_id(word: &str) -> Option<u32> {
    match word.parse::<u32>() {
        Ok(gid) => Some(gid),
        Err(_) => Group::from_name(word)
            .ok()
            .flatten()
            .map(|group| group.gid.as_raw()),
    }
}

/// The non-root uid in `var` (`SUDO_UID`, `PKEXEC_UID`): who ran vmrun through sudo or pkexec.
pub fn invoking_uid(env: impl Fn(&str) -> Option<String>, var: &str) -> Option<u32> {
    env(var)
        .and_then(|value| value.trim().parse::<u32>().ok())
        .filter(|uid| *uid != 0)
}

/// Resolves the profile's `[qemu] user`/`group` against this host. `env` reads the
/// environment (`SUDO_UID`, `PKEXEC_UID`). `Ok(None)` means root (the opt-out).
pub fn qemu_identity(
    config: &VmConfig,
    root: &Sysroot,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<QemuIdentity>, String> {
    identity_of(
        &config.qemu.user,
        config.qemu.group.as_deref(),
        audio_user(config),
        config.machine.accel == Accel::Kvm,
        root,
        env,
    )
}

/// Who QEMU runs as under KVM for a profile that names no user and no sound server: what the
/// tests and the benchmark probe KVM as, so that they choose the accelerator `run` can use.
pub fn default_kvm_identity(
    root: &Sysroot,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<QemuIdentity>, String> {
    identity_of(&QemuUser::Default, None, None, true, root, env)
}

fn identity_of(
    user: &QemuUser,
    group: Option<&str>,
    audio_user: Option<String>,
    kvm: bool,
    root: &Sysroot,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<QemuIdentity>, String> {
    let invoking = |var: &str| invoking_uid(&env, var);
    let (word, source) = match user {
        QemuUser::Root => return Ok(None),
        QemuUser::Resolved(identity) => return Ok(Some(identity.clone())),
        QemuUser::Named(word) => (word.clone(), "profile"),
        // The user whose sound server the guest plays on comes first: QEMU as that user
        // reaches it without any cookie.
        QemuUser::Default => match (audio_user, invoking("SUDO_UID"), invoking("PKEXEC_UID")) {
            (Some(user), _, _) => (user, "audio.user"),
            (None, Some(uid), _) => (uid.to_string(), "sudo"),
            (None, None, Some(uid)) => (uid.to_string(), "pkexec"),
            (None, None, None) if !nix::unistd::geteuid().is_root() => {
                (nix::unistd::geteuid().to_string(), "vmrun's user")
            }
            (None, None, None) => (FALLBACK_USER.to_string(), "fallback"),
        },
    };
    let user = find_user(&word);
    let (name, uid, primary) = match (&user, word.parse::<u32>()) {
        (Some(user), _) => (user.name.clone(), user.uid.as_raw(), user.gid.as_raw()),
        // A number the user database does not know (a minimal host, a container): its own
        // number as its group unless `qemu.group` says otherwise.
        (None, Ok(uid)) => (uid.to_string(), uid, uid),
        (None, Err(_)) if word == FALLBACK_USER => {
            (FALLBACK_USER.to_string(), FALLBACK_ID, FALLBACK_ID)
        }
        (None, Err(_)) => {
            return Err(format!(
                "qemu.user = \"{word}\": this host has no such user; create it (useradd \
                 --system {word}) or give a uid"
            ))
        }
    };
    if uid == 0 {
        return Err(format!(
            "qemu.user = \"{word}\" is root; write qemu.user = \"root\" to run QEMU as root on purpose"
        ));
    }
    let gid = match group {
        None => primary,
        Some(group) => group_id(group)
            .ok_or_else(|| format!("qemu.group = \"{group}\": this host has no such group"))?,
    };
    let mut groups: Vec<u32> = match (&user, std::ffi::CString::new(name.clone())) {
        (Some(_), Ok(cname)) => nix::unistd::getgrouplist(&cname, Gid::from_raw(gid))
            .map(|list| list.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![gid]),
        _ => vec![gid],
    };
    // QEMU needs /dev/kvm and nothing else of its group: granted for the run instead of
    // asking every user to join `kvm`.
    if kvm {
        if let Ok(meta) = std::fs::metadata(root.path("/dev/kvm")) {
            if meta.gid() != 0 {
                groups.push(meta.gid());
            }
        }
    }
    groups.retain(|g| *g != 0);
    groups.sort_unstable();
    groups.dedup();
    Ok(Some(QemuIdentity {
        name,
        uid,
        gid,
        groups,
        source,
    }))
}

/// What QEMU's user must be able to do with a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
    Execute,
    /// Pass through a directory.
    Search,
}

/// Whether `identity` can reach `path` for `access` by the permission bits of the path and
/// every directory above it (ACLs are not read). Err says which part stops it.
pub fn reach(identity: &QemuIdentity, path: &Path, access: Access) -> Result<(), String> {
    let allows = |meta: &std::fs::Metadata, bits: u32| {
        let mode = meta.mode();
        let class = if meta.uid() == identity.uid {
            mode >> 6
        } else if meta.gid() == identity.gid || identity.groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        class & bits == bits
    };
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !allows(&meta, 0o1) {
            return Err(format!(
                "{} (mode {:04o}, owner {}:{}) does not let {} pass",
                dir.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                identity.name
            ));
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (bits, verb) = match access {
        Access::Read => (0o4, "read"),
        Access::ReadWrite => (0o6, "read and write"),
        Access::Execute => (0o1, "run"),
        Access::Search => (0o1, "pass"),
    };
    if allows(&meta, bits) {
        Ok(())
    } else {
        Err(format!(
            "{} may not {verb} {} (mode {:04o}, owner {}:{})",
            identity.name,
            path.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn identity(uid: u32, gid: u32, groups: &[u32]) -> QemuIdentity {
        QemuIdentity {
            name: format!("u{uid}"),
            uid,
            gid,
            groups: groups.to_vec(),
            source: "profile",
        }
    }

    fn set(path: &Path, mode: u32, uid: u32, gid: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }

    #[test]
    fn reach_follows_owner_group_and_other_bits_down_the_path() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to give files to other users");
            return;
        }
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("images");
        let file = dir.join("disk.img");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&file, b"x").unwrap();
        set(top.path(), 0o711, 0, 0);
        set(&dir, 0o750, 0, 4000);
        set(&file, 0o640, 0, 4000);
        let member = identity(5000, 5000, &[4000]);
        let stranger = identity(5001, 5001, &[]);
        assert_eq!(reach(&member, &file, Access::Read), Ok(()));
        let denied = reach(&member, &file, Access::ReadWrite).unwrap_err();
        assert!(denied.contains("may not read and write"), "{denied}");
        let blocked = reach(&stranger, &file, Access::Read).unwrap_err();
        assert!(
            blocked.starts_with(&format!("{} (mode 0750", dir.display())),
            "{blocked}"
        );
        set(&file, 0o600, 5001, 5001);
        set(&dir, 0o751, 0, 4000);
        assert_eq!(reach(&stranger, &file, Access::ReadWrite), Ok(()));
        assert!(reach(&member, &file, Access::Read).is_err());
    }
}
