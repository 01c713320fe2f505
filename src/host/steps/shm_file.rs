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
