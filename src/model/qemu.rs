//! `[qemu]`: the QEMU binary, extra arguments, and who QEMU runs as.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::Deserialize;

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawQemu {
    pub binary: Option<Text>,
    pub extra_args: Option<TextList>,
    pub user: Option<Text>,
    pub group: Option<Text>,
    pub sandbox: Option<Flag>,
}

/// Who QEMU runs as. Never root unless the profile says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QemuUser {
    /// The desktop user who ran vmrun through `sudo` or `pkexec` (else `nobody`).
    Invoker,
    /// A user by name or number.
    Named(String),
    /// `user = "root"`: the explicit opt-out, warned about.
    Root,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    pub binary: String,
    pub extra_args: Vec<String>,
    pub user: QemuUser,
    /// The primary group; the user's own when absent.
    pub group: Option<String>,
    /// QEMU's seccomp filter (`-sandbox on,...`).
    pub sandbox: bool,
}

/// A user or group as `chown` takes it: a name or a number.
fn valid_account(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 32
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !text.starts_with('-')
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
            None => QemuUser::Invoker,
            Some(text) if matches!(text.get_ref().as_str(), "root" | "0") => {
                self.warning(
                    text.span(),
                    "qemu.user",
                    "QEMU runs as root: a bug in its device emulation gives the guest the whole host; \
                     leave qemu.user out to run it as the desktop user",
                );
                QemuUser::Root
            }
            Some(text) if valid_account(text.get_ref()) => QemuUser::Named(text.get_ref().clone()),
            Some(text) => {
                self.error(
                    text.span(),
                    "qemu.user",
                    format!("`{}` is not a user name or number", text.get_ref()),
                );
                QemuUser::Invoker
            }
        };
        let group = match &q.group {
            Some(text) if valid_account(text.get_ref()) => Some(text.get_ref().clone()),
            Some(text) => {
                self.error(
                    text.span(),
                    "qemu.group",
                    format!("`{}` is not a group name or number", text.get_ref()),
                );
                None
            }
            None => None,
        };
        if let (Some(text), QemuUser::Root) = (&q.group, &user) {
            self.error(
                text.span(),
                "qemu.group",
                "QEMU runs as root (qemu.user = \"root\"): a group has no effect; remove it",
            );
        }
        Qemu {
            binary,
            extra_args,
            user,
            group,
            sandbox: q.sandbox.as_ref().is_none_or(|flag| *flag.get_ref()),
        }
    }
}
