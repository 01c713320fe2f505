//! PCI devices and IOMMU groups as sysfs shows them, read through the sysroot.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::Sysroot;
use crate::model::PciAddress;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PciDeviceInfo {
    pub address: String,
    /// `0x030000`-style class code.
    pub class: String,
    pub vendor_device: String,
    pub driver: Option<String>,
    /// The kernel offers a function-level (or other) reset: a `reset` attribute exists.
    pub resettable: bool,
    /// The GPU the firmware booted on (`boot_vga` = 1).
    pub boot_vga: bool,
    pub iommu_group: Option<u32>,
    #[serde(skip)]
    pub class_code: u32,
}

impl PciDeviceInfo {
    /// Bridges (host, PCI-to-PCI, root ports) stay with the host; they never block a group.
    pub fn is_bridge(&self) -> bool {
        self.class_code >> 16 == 0x06
    }

    pub fn on_vfio(&self) -> bool {
        is_vfio_driver(self.driver.as_deref())
    }
}

/// Whether `driver` keeps a function from the host: vfio-pci, or pci-stub that parks it for
/// a later bind.
fn is_vfio_driver(driver: Option<&str>) -> bool {
    matches!(driver, Some("vfio-pci" | "pci-stub"))
}

/// Whether the function at `address` is on vfio-pci (or pci-stub), read through the root.
pub fn on_vfio(root: &Sysroot, address: &str) -> bool {
    is_vfio_driver(driver_of(root, address).as_deref())
}

fn device_dir(root: &Sysroot, address: &str) -> std::path::PathBuf {
    root.path(&format!("/sys/bus/pci/devices/{address}"))
}

pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

fn link_name(path: &Path) -> Option<String> {
    std::fs::read_link(path).ok().and_then(|target| {
        target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    })
}

/// The driver a device is bound to, from its `driver` link.
pub fn driver_of(root: &Sysroot, address: &str) -> Option<String> {
    link_name(&device_dir(root, address).join("driver"))
}

pub fn driver_override_of(root: &Sysroot, address: &str) -> Option<String> {
    read_trimmed(&device_dir(root, address).join("driver_override"))
        .filter(|value| !value.is_empty() && value != "(null)")
}

pub fn device_exists(root: &Sysroot, address: PciAddress) -> bool {
    device_dir(root, &address.to_string()).is_dir()
}

pub fn device_info(root: &Sysroot, address: &str) -> Option<PciDeviceInfo> {
    let dir = device_dir(root, address);
    if !dir.is_dir() {
        return None;
    }
    let hex =
        |name: &str| read_trimmed(&dir.join(name)).map(|v| v.trim_start_matches("0x").to_string());
    let class = hex("class").unwrap_or_default();
    Some(PciDeviceInfo {
        address: address.to_string(),
        class_code: u32::from_str_radix(&class, 16).unwrap_or(0),
        class: format!("0x{class}"),
        vendor_device: format!(
            "{}:{}",
            hex("vendor").unwrap_or_default(),
            hex("device").unwrap_or_default()
        ),
        driver: driver_of(root, address),
        resettable: dir.join("reset").exists(),
        boot_vga: read_trimmed(&dir.join("boot_vga")).as_deref() == Some("1"),
        iommu_group: link_name(&dir.join("iommu_group")).and_then(|group| group.parse().ok()),
    })
}

/// Every IOMMU group and its devices, in group order.
pub fn iommu_groups(root: &Sysroot) -> BTreeMap<u32, Vec<PciDeviceInfo>> {
    let mut groups = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(root.path("/sys/kernel/iommu_groups")) else {
        return groups;
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(group) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let mut devices: Vec<PciDeviceInfo> = std::fs::read_dir(entry.path().join("devices"))
            .map(|list| {
                list.filter_map(Result::ok)
                    .filter_map(|device| device_info(root, &device.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        devices.sort_by(|a, b| a.address.cmp(&b.address));
        groups.insert(group, devices);
    }
    groups
}

/// The devices sharing `address`'s IOMMU group (itself included).
pub fn group_members(root: &Sysroot, address: &str) -> Option<(u32, Vec<PciDeviceInfo>)> {
    let group = device_info(root, address)?.iommu_group?;
    let members = iommu_groups(root).remove(&group)?;
    Some((group, members))
}

/// Why a set of devices cannot be given to a guest: the endpoints of their groups that are
/// neither passed nor already on vfio-pci/pci-stub.
pub fn missing_from_groups(root: &Sysroot, passed: &[PciAddress]) -> Vec<(u32, PciDeviceInfo)> {
    let passed: Vec<String> = passed.iter().map(ToString::to_string).collect();
    let mut missing = Vec::new();
    let mut seen_groups = Vec::new();
    for address in &passed {
        let Some((group, members)) = group_members(root, address) else {
            continue;
        };
        if seen_groups.contains(&group) {
            continue;
        }
        seen_groups.push(group);
        for member in members {
            if !member.is_bridge() && !member.on_vfio() && !passed.contains(&member.address) {
                missing.push((group, member));
            }
        }
    }
    missing
}

/// Whether the kernel runs with an IOMMU: groups exist.
pub fn iommu_enabled(root: &Sysroot) -> bool {
    std::fs::read_dir(root.path("/sys/kernel/iommu_groups"))
        .is_ok_and(|mut entries| entries.next().is_some())
}

pub const ENABLE_IOMMU_HINT: &str = "no IOMMU groups: the IOMMU is off. Enable VT-d (Intel) or AMD-Vi/IOMMU in the \
firmware setup, add `intel_iommu=on iommu=pt` (Intel) or `amd_iommu=on iommu=pt` (AMD) to the kernel command \
line, and reboot; /sys/kernel/iommu_groups then lists the groups";
