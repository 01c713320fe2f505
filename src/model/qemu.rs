//! `[qemu]`: the QEMU binary, extra arguments, QEMU's seccomp sandbox, and the user QEMU runs
//! as. What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawQemu {
    pub binary: Option<Text>,
    pub extra_args: Option<TextList>,
    pub sandbox: Option<Flag>,
    pub user: Option<Text>,
    pub group: Option<Text>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    pub binary: String,
    pub extra_args: Vec<String>,
    /// QEMU's seccomp filter (`-sandbox on,...`): no new processes, no privilege changes, no
    /// obsolete or resource-control system calls.
    pub sandbox: bool,
    pub user: QemuUser,
    /// `qemu.group`: a group name or number instead of the user's primary group.
    pub group: Option<String>,
}

/// Who QEMU runs as. The profile gives `Default`, `Root` or `Named`; resolving the plan
/// against the host turns the first and last into `Resolved`, so later stages see a uid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QemuUser {
    /// The desktop user who ran vmrun through sudo or pkexec, else `nobody`.
    Default,
    /// `qemu.user = "root"`: the warned opt-out.
    Root,
    /// `qemu.user`: a user name or a number.
    Named(String),
    Resolved(QemuIdentity),
}

/// The unprivileged identity QEMU gets before exec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QemuIdentity {
    /// The user's name, or its number when the host has no name for it.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the user's own, plus the group of `/dev/kvm` under KVM.
    pub groups: Vec<u32>,
    /// Where the choice came from: `profile`, `sudo`, `pkexec`, `fallback`.
    pub source: &'static str,
}

impl QemuUser {
    /// The identity QEMU runs as; None means root (the opt-out, or a plan made without
    /// looking at the host).
    pub fn identity(&self) -> Option<&QemuIdentity> {
        match self {
            QemuUser::Resolved(identity) => Some(identity),
            _ => None,
        }
    }
}

fn is_root_word(word: &str) -> bool {
    word == "root" || word == "0"
}

impl Validator {
    pub(super) fn qemu(&mut self, raw: &RawProfile) -> Qemu {
        let (q, _) = section(&raw.qemu);
        let binary = match &q.binary {
            Some(text) if !text.get_ref().is_empty() => text.get_ref().clone(),
            Some(text) => {
                self.error(
                    text.span(),
                    "qemu.binary",
                    "give a program name or an absolute path",
                );
                String::new()
            }
            None => "qemu-system-x86_64".to_string(),
        };
        let extra_args = q
            .extra_args
            .as_ref()
            .map(|list| list.get_ref().iter().map(|t| t.get_ref().clone()).collect())
            .unwrap_or_default();
        let user = match &q.user {
            None => QemuUser::Default,
            Some(text) if text.get_ref().trim().is_empty() => {
                self.error(
                    text.span(),
                    "qemu.user",
                    "give a user name or number (or leave the key out for the desktop user)",
                );
                QemuUser::Default
            }
            Some(text) if is_root_word(text.get_ref()) => {
                self.warning(
                    text.span(),
                    "qemu.user",
                    "QEMU runs as root: a bug in any emulated device gives the guest the whole \
                     host; leave the key out to run QEMU as the desktop user",
                );
                QemuUser::Root
            }
            Some(text) => QemuUser::Named(text.get_ref().trim().to_string()),
        };
        let group = match &q.group {
            Some(text) if text.get_ref().trim().is_empty() => {
                self.error(text.span(), "qemu.group", "give a group name or number");
                None
            }
            Some(text) if is_root_word(text.get_ref()) && user != QemuUser::Root => {
                self.error(
                    text.span(),
                    "qemu.group",
                    "group root would give QEMU root's files; give QEMU its own group or leave \
                     the key out for the user's primary group",
                );
                None
            }
            Some(text) => Some(text.get_ref().trim().to_string()),
            None => None,
        };
        Qemu {
            binary,
            extra_args,
            sandbox: q.sandbox.as_ref().is_none_or(|flag| *flag.get_ref()),
            user,
            group,
        }
    }
}
