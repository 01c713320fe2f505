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
            Some(text) => match shared_memory_path(text.get_ref()) {
                Ok(path) => path,
                Err(problem) => {
                    self.error(
                        text.span(),
                        "looking_glass.path",
                        format!(
                            "`{}` {problem}; use a file under /dev/shm such as /dev/shm/looking-glass, or a kvmfr \
                             device such as /dev/kvmfr0",
                            text.get_ref()
                        ),
                    );
                    PathBuf::new()
                }
            },
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

/// The Looking Glass file: vmrun creates it and hands it to the QEMU user, so it must be a file
/// in the shared-memory filesystem or a kvmfr device, named without `..` (which could reach any
/// file, `/etc/shadow` included, from `/dev/shm`).
fn shared_memory_path(text: &str) -> Result<PathBuf, &'static str> {
    use std::path::Component;
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err("is not an absolute path");
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || text.split('/').any(|part| part == "." || part == "..")
    {
        return Err("contains `..` or `.`");
    }
    let kvmfr = path
        .strip_prefix("/dev")
        .ok()
        .and_then(|rest| rest.to_str())
        .and_then(|rest| rest.strip_prefix("kvmfr"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let in_shm = path
        .strip_prefix("/dev/shm")
        .is_ok_and(|rest| rest.components().next().is_some());
    if kvmfr || in_shm {
        Ok(path.to_path_buf())
    } else {
        Err("is neither under /dev/shm nor a kvmfr device")
    }
}

#[cfg(test)]
mod tests {
    use super::shared_memory_path;

    #[test]
    fn only_files_under_dev_shm_and_kvmfr_devices_are_accepted() {
        for good in [
            "/dev/shm/looking-glass",
            "/dev/shm/vms/lg,1",
            "/dev/kvmfr0",
            "/dev/kvmfr12",
        ] {
            assert!(shared_memory_path(good).is_ok(), "{good}");
        }
        for bad in [
            "/dev/shm/../../etc/shadow",
            "/dev/shm/./x",
            "/dev/shm",
            "/dev/shm/",
            "/etc/shadow",
            "/dev/kvmfr",
            "/dev/kvmfrX",
            "/dev/sda",
            "dev/shm/x",
            "/tmp/lg",
        ] {
            assert!(shared_memory_path(bad).is_err(), "{bad}");
        }
    }
}
