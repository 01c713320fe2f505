//! SR-IOV as sysfs shows it, read through the host root: a physical function's capability
//! (`sriov_totalvfs`, `sriov_numvfs`, `sriov_offset`, `sriov_stride`), its virtual functions
//! (`virtfnN` links) and, for a VF, its PF (`physfn`).

use std::path::PathBuf;

use super::Sysroot;
use crate::model::PciAddress;
use crate::plan::SriovPf;

fn device_dir(root: &Sysroot, address: &str) -> PathBuf {
    root.path(&format!("/sys/bus/pci/devices/{address}"))
}

fn read_number(root: &Sysroot, pf: &str, name: &str) -> Result<u16, String> {
    let path = device_dir(root, pf).join(name);
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("/sys/bus/pci/devices/{pf}/{name}: {error}"))?;
    text.trim().parse().map_err(|_| {
        format!(
            "/sys/bus/pci/devices/{pf}/{name} says `{}`, not a number",
            text.trim()
        )
    })
}

/// The SR-IOV capability of `pf`, or why it has none, in words for the profile's `pf`.
pub fn capability(root: &Sysroot, pf: PciAddress) -> Result<SriovPf, String> {
    let name = pf.to_string();
    if !device_dir(root, &name).is_dir() {
        return Err(format!(
            "{name} does not exist on this host (`lspci -D` lists the devices)"
        ));
    }
    if !device_dir(root, &name).join("sriov_totalvfs").exists() {
        return Err(format!(
            "{name} has no SR-IOV capability (no sriov_totalvfs in /sys/bus/pci/devices/{name}): \
             it cannot have virtual functions; `vmrun iommu` shows which functions can, or pass it \
             itself with `address`"
        ));
    }
    let total_vfs = read_number(root, &name, "sriov_totalvfs")?;
    if total_vfs == 0 {
        return Err(format!(
            "{name} offers 0 virtual functions (sriov_totalvfs): its firmware or driver has SR-IOV off"
        ));
    }
    Ok(SriovPf {
        total_vfs,
        num_vfs: read_number(root, &name, "sriov_numvfs")?,
        offset: read_number(root, &name, "sriov_offset")?,
        stride: read_number(root, &name, "sriov_stride")?,
    })
}

/// The address `virtfn{index}` of `pf` points to: the VF as the kernel made it.
pub fn virtfn(root: &Sysroot, pf: &str, index: u16) -> Option<String> {
    link_name(&device_dir(root, pf).join(format!("virtfn{index}")))
}

/// Every VF of `pf` that exists, by number.
pub fn virtfns(root: &Sysroot, pf: &str) -> Vec<(u16, String)> {
    let mut vfs: Vec<(u16, String)> = std::fs::read_dir(device_dir(root, pf))
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let index = entry
                .file_name()
                .to_str()?
                .strip_prefix("virtfn")?
                .parse()
                .ok()?;
            Some((index, link_name(&entry.path())?))
        })
        .collect();
    vfs.sort();
    vfs
}

/// The PF of a virtual function (its `physfn` link); None for any other function.
pub fn physfn(root: &Sysroot, address: &str) -> Option<String> {
    link_name(&device_dir(root, address).join("physfn"))
}

/// A function's place in SR-IOV, as `vmrun iommu` shows it: a PF's capability and VFs, or a
/// VF's PF.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SriovLinks {
    /// For a VF: its PF (`physfn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physfn: Option<String>,
    /// For a PF: `sriov_totalvfs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_vfs: Option<u16>,
    /// For a PF: its VFs that exist (`virtfnN`), by number.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub virtfns: Vec<String>,
}

impl SriovLinks {
    pub fn of(root: &Sysroot, address: &str) -> Self {
        SriovLinks {
            physfn: physfn(root, address),
            total_vfs: std::fs::read_to_string(device_dir(root, address).join("sriov_totalvfs"))
                .ok()
                .and_then(|text| text.trim().parse().ok()),
            virtfns: virtfns(root, address)
                .into_iter()
                .map(|(_, vf)| vf)
                .collect(),
        }
    }
}

/// The network interface of `pf` (`/sys/bus/pci/devices/PF/net/NAME`): what `ip link set dev
/// PFIF vf N` names.
pub fn interface(root: &Sysroot, pf: &str) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(device_dir(root, pf).join("net"))
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.file_name().to_str()?.to_string()))
        .collect();
    names.sort();
    names.into_iter().next()
}

fn link_name(path: &std::path::Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()?
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::steps::testing::FakeHost;

    fn address(text: &str) -> PciAddress {
        text.parse().unwrap()
    }

    #[test]
    fn a_vf_address_is_the_pf_routing_id_plus_offset_and_stride() {
        // Intel 82576 (igb): first VF offset 0x80, stride 2.
        let igb = SriovPf {
            total_vfs: 7,
            num_vfs: 0,
            offset: 0x80,
            stride: 2,
        };
        let pf = address("0000:01:00.0");
        assert_eq!(igb.vf_address(pf, 0), Some(address("0000:01:10.0")));
        assert_eq!(igb.vf_address(pf, 1), Some(address("0000:01:10.2")));
        assert_eq!(igb.vf_address(pf, 6), Some(address("0000:01:11.4")));
        // The second port's VFs interleave with the first's (offset 0x80 from 01:00.1).
        assert_eq!(
            igb.vf_address(address("0000:01:00.1"), 0),
            Some(address("0000:01:10.1"))
        );
        // A large offset moves the VFs to the next bus; the domain stays.
        let big = SriovPf {
            offset: 0x100,
            stride: 1,
            ..igb.clone()
        };
        assert_eq!(
            big.vf_address(address("0001:03:00.0"), 9),
            Some(address("0001:04:01.1"))
        );
        assert_eq!(big.vf_address(address("0000:ff:00.0"), 0), None);
    }

    #[test]
    fn the_capability_is_read_or_said_missing() {
        let fake = FakeHost::new();
        let root = fake.host().root;
        let pf = address("0000:03:00.0");
        let missing = capability(&root, pf).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        fake.write("/sys/bus/pci/devices/0000:03:00.0/vendor", "0x8086\n");
        let none = capability(&root, pf).unwrap_err();
        assert!(none.contains("no SR-IOV capability"), "{none}");
        for (name, value) in [
            ("sriov_totalvfs", "7"),
            ("sriov_numvfs", "2"),
            ("sriov_offset", "128"),
            ("sriov_stride", "2"),
        ] {
            fake.write(&format!("/sys/bus/pci/devices/0000:03:00.0/{name}"), value);
        }
        assert_eq!(
            capability(&root, pf).unwrap(),
            SriovPf {
                total_vfs: 7,
                num_vfs: 2,
                offset: 128,
                stride: 2
            }
        );
        fake.write("/sys/bus/pci/devices/0000:03:00.0/sriov_stride", "two\n");
        assert!(capability(&root, pf).unwrap_err().contains("not a number"));
    }
}
