//! `[shutdown]`: how long the guest gets to power off.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawShutdown {
    pub timeout: Option<Int>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shutdown {
    pub timeout: Duration,
}

impl Validator {
    pub(super) fn shutdown(&mut self, raw: &RawProfile) -> Shutdown {
        let (s, _) = section(&raw.shutdown);
        let seconds = s
            .timeout
            .as_ref()
            .and_then(|raw| self.int_in(raw, "shutdown.timeout", 0..=86400))
            .unwrap_or(120);
        Shutdown {
            timeout: Duration::from_secs(seconds as u64),
        }
    }
}
