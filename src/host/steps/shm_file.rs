//! Looking Glass' shared-memory file: created with its owner, group and mode when missing,
//! removed after the run only if vmrun created it. A kvmfr device is never touched.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreateShmFile {
    pub path: PathBuf,
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveFile {
    pub path: PathBuf,
}

impl CreateShmFile {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        let lg = config.looking_glass.as_ref().filter(|lg| !lg.is_kvmfr())?;
        Some(CreateShmFile {
            path: lg.path.clone(),
            mode: lg.mode,
            // An unprivileged QEMU maps the file itself: it owns the file unless told
            // otherwise (the Looking Glass client reaches it through the group).
            owner: lg
                .owner
                .clone()
                .or_else(|| config.qemu.user.identity().map(|user| user.uid.to_string())),
            group: lg.group.clone(),
        })
    }
}

/// Modes read as people write them (`"0660"`), not as decimal numbers.
fn octal<S: serde::Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{mode:04o}"))
}

fn resolve_user(name: &str) -> Result<nix::unistd::Uid, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(nix::unistd::Uid::from_raw(id));
    }
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|user| user.uid)
        .ok_or_else(|| format!("looking_glass.owner: no user `{name}` on this host"))
}

fn resolve_group(name: &str) -> Result<nix::unistd::Gid, String> {
    crate::host::identity::group_id(name)
        .map(nix::unistd::Gid::from_raw)
        .ok_or_else(|| format!("looking_glass.group: no group `{name}` on this host"))
}

impl Step for CreateShmFile {
    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        // The owner as written: the planned one may be this host's QEMU user.
        let owner = vm
            .written
            .looking_glass
            .as_ref()
            .and_then(|lg| lg.owner.as_deref());
        LibvirtNotes::comment(format!(
            "vmrun creates {} with owner {}, group {}, mode {:04o}; libvirt creates the shared memory file as its \
             own qemu user: for the Looking Glass client to read it, {} must set them",
            self.path.display(),
            owner.unwrap_or("(vmrun's user)"),
            self.group.as_deref().unwrap_or("(vmrun's group)"),
            self.mode,
            vm.hook("started begin")
        ))
    }

    fn describe(&self) -> String {
        format!(
            "create {} if missing (mode {:o}{}{})",
            self.path.display(),
            self.mode,
            self.owner
                .as_deref()
                .map(|o| format!(", owner {o}"))
                .unwrap_or_default(),
            self.group
                .as_deref()
                .map(|g| format!(", group {g}"))
                .unwrap_or_default()
        )
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let real = host.root.path(&self.path.to_string_lossy());
        let mut findings = vec![match real.parent() {
            Some(dir) if dir.is_dir() => Finding::pass(
                "looking_glass",
                format!("{} can be created", self.path.display()),
            ),
            _ => Finding::fail(
                "looking_glass",
                format!("the directory of {} does not exist", self.path.display()),
            ),
        }];
        let owner = self
            .owner
            .as_deref()
            .map(resolve_user)
            .and_then(Result::err);
        let group = self
            .group
            .as_deref()
            .map(resolve_group)
            .and_then(Result::err);
        findings.extend(
            owner
                .into_iter()
                .chain(group)
                .map(|problem| Finding::fail("looking_glass", problem)),
        );
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let path = host.root.path(&self.path.to_string_lossy());
        if path.exists() {
            log.info(&format!("using the existing {}", self.path.display()));
            return Ok(());
        }
        log.info(&format!(
            "creating {} (mode {:o})",
            self.path.display(),
            self.mode
        ));
        record.change(
            RemoveFile {
                path: self.path.clone(),
            },
            || {
                let io = |source| StepError::Io {
                    path: self.path.display().to_string(),
                    source,
                };
                use std::os::unix::fs::PermissionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(self.mode))
                    .map_err(io)?;
                let uid = self
                    .owner
                    .as_deref()
                    .map(resolve_user)
                    .transpose()
                    .map_err(StepError::Other)?;
                let gid = self
                    .group
                    .as_deref()
                    .map(resolve_group)
                    .transpose()
                    .map_err(StepError::Other)?;
                if uid.is_some() || gid.is_some() {
                    nix::unistd::chown(&path, uid, gid).map_err(|errno| io(errno.into()))?;
                }
                Ok(())
            },
        )
    }
}

impl Undoable for RemoveFile {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let real = host.root.path(&self.path.to_string_lossy());
        match std::fs::remove_file(&real) {
            Ok(()) => {
                log.info(&format!("removed {}", self.path.display()));
                Ok(())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StepError::Io {
                path: self.path.display().to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::testing::{self, log, FakeHost};
    use crate::host::steps::HostStep;
    use std::os::unix::fs::PermissionsExt;

    fn step() -> CreateShmFile {
        CreateShmFile {
            path: PathBuf::from("/dev/shm/looking-glass"),
            mode: 0o640,
            owner: None,
            group: None,
        }
    }

    #[test]
    fn the_file_is_made_with_its_mode_and_removed_after() {
        let fake = FakeHost::new();
        fake.write("/dev/shm/.keep", "");
        assert_eq!(step().preflight(&fake.host())[0].status, Status::Pass);
        let session = fake.session(vec![HostStep::CreateShmFile(step())]);
        session.apply(&log()).unwrap();
        let real = fake.root().join("dev/shm/looking-glass");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        session.undo_all(&log()).unwrap();
        assert!(!real.exists());
    }

    #[test]
    fn an_existing_file_is_used_and_kept() {
        let fake = FakeHost::new();
        fake.write("/dev/shm/looking-glass", "frames");
        let session = fake.session(vec![HostStep::CreateShmFile(step())]);
        session.apply(&log()).unwrap();
        session.undo_all(&log()).unwrap();
        assert_eq!(fake.read("/dev/shm/looking-glass"), "frames");
    }

    #[test]
    fn a_missing_directory_or_group_fails_the_preflight() {
        let fake = FakeHost::new();
        let mut step = step();
        assert_eq!(step.preflight(&fake.host())[0].status, Status::Fail);
        step.group = Some("no-such-group-here".to_string());
        let findings = step.preflight(&fake.host());
        assert!(findings[1]
            .message
            .contains("no group `no-such-group-here`"));
    }

    #[test]
    fn libvirt_is_told_the_owner_as_written() {
        let written = testing::config("[looking_glass]\nsize = \"32M\"\n");
        let mut step = step();
        // As planned for an unprivileged QEMU: its uid, not what the profile wrote.
        step.owner = Some("65534".to_string());
        let notes = testing::libvirt(&HostStep::CreateShmFile(step), &written);
        assert!(
            notes.comments[0].contains("owner (vmrun's user)"),
            "{}",
            notes.comments[0]
        );
        assert!(notes.comments[0].contains("mode 0640"));
    }
}
