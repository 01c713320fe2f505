//! `[hooks]`: commands run before the start, alongside the running guest (`started`) and after
//! the stop, and their timeout.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::validator::*;
use super::*;

/// A hook is one argv (`["/bin/x", "--flag"]`) or several (`[["/bin/x"], ["/bin/y"]]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawHook {
    One(Vec<String>),
    Many(Vec<Vec<String>>),
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawHooks {
    pub pre_start: Option<Spanned<RawHook>>,
    pub started: Option<Spanned<RawHook>>,
    pub post_stop: Option<Spanned<RawHook>>,
    pub timeout: Option<Int>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooks {
    pub pre_start: Vec<Vec<String>>,
    /// Started once every vCPU is pinned and the guest runs; they run alongside it and are
    /// ended at teardown.
    pub started: Vec<Vec<String>>,
    pub post_stop: Vec<Vec<String>>,
    /// How long one hook may run before it is killed (and, for pre_start, the start fails);
    /// for a `started` hook, how long it gets to exit after SIGTERM at teardown.
    pub timeout: Duration,
}

impl Validator {
    pub(super) fn hook(&mut self, raw: &Option<Spanned<RawHook>>, key: &str) -> Vec<Vec<String>> {
        let Some(spanned) = raw else {
            return Vec::new();
        };
        let commands = match spanned.get_ref() {
            RawHook::One(argv) if argv.is_empty() => Vec::new(),
            RawHook::One(argv) => vec![argv.clone()],
            RawHook::Many(list) => list.clone(),
        };
        for argv in &commands {
            if argv.first().is_none_or(|program| program.is_empty()) {
                self.error(
                    spanned.span(),
                    key,
                    "a hook command needs a program: [\"/path/to/program\", \"arg\"...]",
                );
            }
        }
        commands
    }

    pub(super) fn hooks(&mut self, raw: &RawProfile) -> Hooks {
        let (h, _) = section(&raw.hooks);
        let seconds = h
            .timeout
            .as_ref()
            .and_then(|raw| self.int_in(raw, "hooks.timeout", 1..=86400))
            .unwrap_or(60);
        Hooks {
            pre_start: self.hook(&h.pre_start, "hooks.pre_start"),
            started: self.hook(&h.started, "hooks.started"),
            post_stop: self.hook(&h.post_stop, "hooks.post_stop"),
            timeout: Duration::from_secs(seconds as u64),
        }
    }
}
