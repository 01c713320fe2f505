//! `[firmware]`: OVMF or SeaBIOS, secure boot, explicit firmware files.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;
use crate::firmware::{self, FirmwareImage, ImageFormat};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawFirmware {
    #[serde(rename = "type")]
    pub firmware_type: Option<Text>,
    pub secure_boot: Option<Flag>,
    pub code: Option<Text>,
    pub vars_template: Option<Text>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    Ovmf {
        secure_boot: bool,
        /// Explicit files from the profile; `None` means: found through QEMU's descriptors.
        files: Option<FirmwareFiles>,
    },
    SeaBios,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareFiles {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

impl Validator {
    pub(super) fn firmware(&mut self, raw: &RawProfile) -> Firmware {
        let (f, section_span) = section(&raw.firmware);
        let kind = self.choose(
            &f.firmware_type,
            "firmware.type",
            &[("ovmf", true), ("seabios", false)],
            true,
        );
        let secure_boot = f.secure_boot.as_ref().is_some_and(|b| *b.get_ref());
        if !kind {
            if let Some(flag) = f.secure_boot.as_ref().filter(|b| *b.get_ref()) {
                self.error(
                    flag.span(),
                    "firmware.secure_boot",
                    "SeaBIOS has no secure boot; use type = \"ovmf\"",
                );
            }
            for (value, key) in [
                (&f.code, "firmware.code"),
                (&f.vars_template, "firmware.vars_template"),
            ] {
                if let Some(text) = value {
                    self.error(
                        text.span(),
                        key,
                        "SeaBIOS uses no pflash files; remove this key or use type = \"ovmf\"",
                    );
                }
            }
            return Firmware::SeaBios;
        }
        let files = match (&f.code, &f.vars_template) {
            (None, None) => None,
            (Some(code), Some(vars)) => {
                let code_path = self.resolve_path(code.get_ref());
                let vars_path = self.resolve_path(vars.get_ref());
                let mut present = true;
                for (text, path, key, what) in [
                    (code, &code_path, "firmware.code", "firmware CODE"),
                    (vars, &vars_path, "firmware.vars_template", "VARS template"),
                ] {
                    if !path.is_file() {
                        self.missing_file(text.span(), key, path, what);
                        present = false;
                    }
                }
                if present {
                    let image = |path: &PathBuf| FirmwareImage {
                        path: path.clone(),
                        format: ImageFormat::from_extension(path),
                    };
                    if let Err(error) =
                        firmware::check_pairing(&image(&code_path), &image(&vars_path))
                    {
                        self.error(vars.span(), "firmware.vars_template", error.to_string());
                    }
                }
                Some(FirmwareFiles {
                    code: code_path,
                    vars_template: vars_path,
                })
            }
            (Some(one), None) | (None, Some(one)) => {
                let missing = if f.code.is_none() {
                    "code"
                } else {
                    "vars_template"
                };
                self.error(
                    one.span(),
                    &format!("firmware.{missing}"),
                    "firmware.code and firmware.vars_template go together: give both (from the same OVMF build) or neither",
                );
                None
            }
        };
        let _ = section_span;
        Firmware::Ovmf { secure_boot, files }
    }
}
