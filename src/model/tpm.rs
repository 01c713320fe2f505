//! `[tpm]`: a TPM 2.0 emulated by swtpm next to QEMU (Windows 11 refuses to install without
//! one). The table's presence asks for it; `version` can only say "2.0".
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawTpm {
    pub version: Option<Text>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpmVersion {
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tpm {
    pub version: TpmVersion,
}

impl Validator {
    pub(super) fn tpm(&mut self, raw: &RawProfile) -> Option<Tpm> {
        let spanned = raw.tpm.as_ref()?;
        let t = spanned.get_ref();
        if let Some(text) = t.version.as_ref().filter(|v| v.get_ref() == "1.2") {
            // swtpm could, but no guest this tool is for wants 1.2, and tpm-crb is 2.0 only.
            self.error(
                text.span(),
                "tpm.version",
                "TPM 1.2 is not offered (Windows 11 needs 2.0, and QEMU's tpm-crb is 2.0 only); use \"2.0\"",
            );
            return Some(Tpm {
                version: TpmVersion::V2,
            });
        }
        let version = self.choose(
            &t.version,
            "tpm.version",
            &[("2.0", TpmVersion::V2)],
            TpmVersion::V2,
        );
        Some(Tpm { version })
    }
}
