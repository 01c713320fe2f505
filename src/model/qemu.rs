//! `[qemu]`: the QEMU binary, extra arguments, and QEMU's seccomp sandbox.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::Deserialize;

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawQemu {
    pub binary: Option<Text>,
    pub extra_args: Option<TextList>,
    pub sandbox: Option<Flag>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    pub binary: String,
    pub extra_args: Vec<String>,
    /// QEMU's seccomp filter (`-sandbox on,...`): no new processes, no privilege changes, no
    /// obsolete or resource-control system calls.
    pub sandbox: bool,
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
        Qemu {
            binary,
            extra_args,
            sandbox: q.sandbox.as_ref().is_none_or(|flag| *flag.get_ref()),
        }
    }
}
