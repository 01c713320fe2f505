//! `[looking_glass]`: the shared-memory file or kvmfr device and its size.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawLookingGlass {
    pub size: Option<Text>,
    pub resolution: Option<Text>,
    pub path: Option<Text>,
    pub owner: Option<Text>,
    pub group: Option<Text>,
    pub mode: Option<Text>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookingGlass {
    pub size: ByteSize,
    pub path: PathBuf,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: u32,
}

impl LookingGlass {
    /// A kvmfr device is a character device that the kvmfr module creates; vmrun never
    /// creates or removes it.
    pub fn is_kvmfr(&self) -> bool {
        self.path.starts_with("/dev/kvmfr") || self.path.to_string_lossy().starts_with("/dev/kvmfr")
    }
}

impl Validator {
    pub(super) fn looking_glass(&mut self, raw: &RawProfile) -> Option<LookingGlass> {
        let spanned = raw.looking_glass.as_ref()?;
        let l = spanned.get_ref();
        let size = match (&l.size, &l.resolution) {
            (Some(size), Some(resolution)) => {
                self.error(
                    resolution.span(),
                    "looking_glass.resolution",
                    format!("give `size` or `resolution`, not both (size is {})", size.get_ref()),
                );
                None
            }
            (Some(text), None) => self.parse::<ByteSize>(text, "looking_glass.size").and_then(|size| {
                if size.bytes().is_power_of_two() && size.bytes() >= ByteSize::MIB {
                    Some(size)
                } else {
                    let up = ByteSize(size.bytes().max(ByteSize::MIB).next_power_of_two());
                    self.error(
                        text.span(),
                        "looking_glass.size",
                        format!("{size} is not a power of two of at least 1M (an ivshmem BAR must be); use {up}"),
                    );
                    None
                }
            }),
            (None, Some(text)) => self
                .parse::<Resolution>(text, "looking_glass.resolution")
                .map(Resolution::looking_glass_size),
            (None, None) => Some(Resolution { width: 1920, height: 1080 }.looking_glass_size()),
        };
        let path = match &l.path {
            Some(text) if Path::new(text.get_ref()).is_absolute() => PathBuf::from(text.get_ref()),
            Some(text) => {
                self.error(
                    text.span(),
                    "looking_glass.path",
                    "use an absolute path such as /dev/shm/looking-glass or /dev/kvmfr0",
                );
                PathBuf::new()
            }
            None => PathBuf::from("/dev/shm/looking-glass"),
        };
        let mode = match &l.mode {
            Some(text) => match u32::from_str_radix(text.get_ref().trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o777 => mode,
                _ => {
                    self.error(
                        text.span(),
                        "looking_glass.mode",
                        format!(
                            "`{}` is not an octal file mode such as \"0660\"",
                            text.get_ref()
                        ),
                    );
                    0o660
                }
            },
            None => 0o660,
        };
        let name_of = |value: &Option<Text>| value.as_ref().map(|t| t.get_ref().clone());
        Some(LookingGlass {
            size: size.unwrap_or(ByteSize(32 * ByteSize::MIB)),
            path,
            owner: name_of(&l.owner),
            group: name_of(&l.group),
            mode,
        })
    }
}
