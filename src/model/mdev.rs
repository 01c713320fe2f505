//! `[[mdev]]`: mediated devices (Intel GVT-g, NVIDIA vGPU and other types a parent device lists
//! in `mdev_supported_types`), created for the run and passed to the guest.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawMdev {
    pub parent: Option<Text>,
    #[serde(rename = "type")]
    pub mdev_type: Option<Text>,
    pub display: Option<Flag>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdevDevice {
    /// The parent device whose `mdev_supported_types` lists the type.
    pub parent: PciAddress,
    /// The type's directory name under `mdev_supported_types` (`i915-GVTg_V5_4`).
    pub mdev_type: String,
    /// QEMU shows the device's display (`display=on`, with `ramfb` for the firmware's output).
    pub display: bool,
    /// The device's UUID, the same at every run of this VM: see `mdev_uuid`.
    pub uuid: String,
}

/// The namespace of vmrun's name-based (version 5) mediated-device UUIDs.
const MDEV_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0xfe75203d_edac_417a_9d05_55c26287aa58);

/// The UUID of the `index`th `[[mdev]]` of VM `name`: a version 5 (SHA-1, name-based) UUID of
/// `NAME/mdev/INDEX`, so every run of the VM creates the same device (the guest's driver sees
/// the same one, a device left by a crash is recognised) and no two VMs of a host share one.
pub fn mdev_uuid(name: &VmName, index: usize) -> String {
    uuid::Uuid::new_v5(&MDEV_NAMESPACE, format!("{name}/mdev/{index}").as_bytes())
        .hyphenated()
        .to_string()
}

/// Whether `name` can be a type directory's name: it becomes part of a sysfs path, so no `/`,
/// no `.` or `..`, nothing but what the kernel's drivers use (`nvidia-63`, `i915-GVTg_V5_4`).
fn valid_type_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Whether `qemu.extra_args` give QEMU an OpenGL display (`-display gtk,gl=on`, `sdl,gl=on`,
/// `egl-headless`, `-spice ...,gl=on`), which a mediated device's `display=on` needs.
fn opengl_display(raw: &RawProfile) -> bool {
    raw.qemu
        .as_ref()
        .and_then(|q| q.get_ref().extra_args.as_ref())
        .is_some_and(|args| {
            args.get_ref().iter().any(|arg| {
                let arg = arg.get_ref();
                arg.contains("egl-headless")
                    || arg
                        .split(',')
                        .any(|part| part == "gl=on" || part == "gl=core" || part == "gl=es")
            })
        })
}

impl Validator {
    pub(super) fn mdev(
        &mut self,
        raw: &RawProfile,
        name: &VmName,
        pci: &[PciDevice],
    ) -> Vec<MdevDevice> {
        let mut devices = Vec::new();
        let mut display_seen: Option<usize> = None;
        for (index, spanned) in raw.mdev.iter().enumerate() {
            let entry = spanned.get_ref();
            let key = |field: &str| format!("mdev[{index}].{field}");
            let parent = match &entry.parent {
                Some(text) => self
                    .parse::<PciAddress>(text, &key("parent"))
                    .filter(|address| {
                        let Some(passed) = pci.iter().position(|d| d.address == *address) else {
                            return true;
                        };
                        // vfio-pci would take the parent from the driver that creates the
                        // mediated devices.
                        self.error(
                            text.span(),
                            &key("parent"),
                            format!(
                                "{address} is pci[{passed}] too: a parent stays on its own driver \
                                 to create mediated devices; remove the [[pci]] or this [[mdev]]"
                            ),
                        );
                        false
                    }),
                None => {
                    self.error(
                        spanned.span(),
                        &key("parent"),
                        "every [[mdev]] needs `parent`, the PCI address of the device that \
                         creates it, e.g. `parent = \"0000:00:02.0\"` (`vmrun check` lists its types)",
                    );
                    None
                }
            };
            let mdev_type = match &entry.mdev_type {
                Some(text) if valid_type_name(text.get_ref()) => Some(text.get_ref().clone()),
                Some(text) => {
                    self.error(
                        text.span(),
                        &key("type"),
                        format!(
                            "`{}` is not a type name; write the directory name from \
                             /sys/class/mdev_bus/PARENT/mdev_supported_types/, e.g. \
                             `type = \"i915-GVTg_V5_4\"`",
                            text.get_ref()
                        ),
                    );
                    None
                }
                None => {
                    self.error(
                        spanned.span(),
                        &key("type"),
                        "every [[mdev]] needs `type`, a directory name of the parent's \
                         mdev_supported_types, e.g. `type = \"i915-GVTg_V5_4\"`",
                    );
                    None
                }
            };
            let display = entry.display.as_ref().is_some_and(|f| *f.get_ref());
            if let (true, Some(flag)) = (display, &entry.display) {
                // QEMU's ramfb, which shows the firmware's output, exists once per VM.
                if let Some(first) = display_seen {
                    self.error(
                        flag.span(),
                        &key("display"),
                        format!(
                            "mdev[{first}] already has display = true and only one can; \
                             write `display = false` here"
                        ),
                    );
                }
                display_seen = Some(index);
                if !opengl_display(raw) {
                    self.warning(
                        flag.span(),
                        &key("display"),
                        "QEMU shows a mediated device's display only on an OpenGL display, \
                         which vmrun does not set up: QEMU refuses to start without one; add \
                         `extra_args = [\"-display\", \"gtk,gl=on\"]` to [qemu] (or \
                         `egl-headless` beside a remote display)",
                    );
                }
            }
            if let (Some(parent), Some(mdev_type)) = (parent, mdev_type) {
                devices.push(MdevDevice {
                    parent,
                    mdev_type,
                    display,
                    uuid: mdev_uuid(name, index),
                });
            }
        }
        devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uuid_is_stable_per_vm_and_index_and_differs_otherwise() {
        let win: VmName = "win10".parse().unwrap();
        let other: VmName = "linux".parse().unwrap();
        let first = mdev_uuid(&win, 0);
        assert_eq!(first, mdev_uuid(&win, 0));
        assert_ne!(first, mdev_uuid(&win, 1));
        assert_ne!(first, mdev_uuid(&other, 0));
        let parsed = uuid::Uuid::parse_str(&first).unwrap();
        assert_eq!(parsed.get_version_num(), 5);
        assert_eq!(first.len(), 36);
        assert_eq!(first, first.to_lowercase());
    }

    #[test]
    fn type_names_that_would_leave_their_directory_are_refused() {
        for good in ["i915-GVTg_V5_4", "nvidia-63", "mtty-2", "a.b:c"] {
            assert!(valid_type_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../create", "a/b", "a b", "x\n"] {
            assert!(!valid_type_name(bad), "{bad:?}");
        }
    }
}
