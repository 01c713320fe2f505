//! `[[mdev]]`: a mediated device (Intel GVT-g, NVIDIA vGPU...) is created for the run by
//! writing its UUID to the parent's `mdev_supported_types/TYPE/create`, and removed after by
//! writing 1 to `/sys/bus/mdev/devices/UUID/remove` (journaled before the create). The UUID is
//! the VM's own (from its name and the entry's index), so a device a crashed run left is known
//! by it: it is removed before the new one is created (a fresh device, not the state of the
//! last guest), and `recover` removes it. Preflight and `check`: the parent's types with their
//! `available_instances`, `device_api` and description.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::host::{pci, Sysroot};
use crate::libvirt::xml::{Element, Node};
use crate::log::Log;
use crate::model::{PciAddress, VmConfig};
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreateMdev {
    /// The entry's index in the profile (`mdev[0]`), part of the UUID.
    pub index: usize,
    pub parent: PciAddress,
    #[serde(rename = "type")]
    pub mdev_type: String,
    pub uuid: String,
    pub display: bool,
    /// How many entries of the profile ask for this parent's type: they are counted together
    /// against its `available_instances`.
    pub wanted: usize,
    /// How many of them come before this one (the first one reports a shortage).
    pub ordinal: usize,
}

/// Journaled by `CreateMdev` before the device is created: remove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveMdev {
    pub uuid: String,
    pub parent: String,
    #[serde(rename = "type")]
    pub mdev_type: String,
}

impl CreateMdev {
    pub fn plan<'a>(config: &'a VmConfig, _paths: &VmPaths) -> impl Iterator<Item = Self> + 'a {
        config.mdev.iter().enumerate().map(|(index, device)| {
            let same = |other: &&crate::model::MdevDevice| {
                other.parent == device.parent && other.mdev_type == device.mdev_type
            };
            CreateMdev {
                index,
                parent: device.parent,
                mdev_type: device.mdev_type.clone(),
                uuid: device.uuid.clone(),
                display: device.display,
                wanted: config.mdev.iter().filter(same).count(),
                ordinal: config.mdev[..index].iter().filter(same).count(),
            }
        })
    }
}

/// Where the mediated device `uuid` lives while it exists.
pub fn device_dir(uuid: &str) -> String {
    format!("/sys/bus/mdev/devices/{uuid}")
}

/// Why a mediated device has no `/dev/vfio/N` to hand to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum MdevNodeError {
    #[error("the mediated device {uuid} has no IOMMU group ({}: {source}); was it created?", .link.display())]
    NoGroup {
        uuid: String,
        link: PathBuf,
        source: std::io::Error,
    },
    #[error("the mediated device {uuid}'s iommu_group link points to {}, not a group", .target.display())]
    NotAGroup { uuid: String, target: PathBuf },
}

/// The `/dev/vfio/N` of the mediated device `uuid` (its `iommu_group` link), or why there is none.
pub fn vfio_node(root: &Sysroot, uuid: &str) -> Result<String, MdevNodeError> {
    let link = root.path(&format!("{}/iommu_group", device_dir(uuid)));
    let target = match std::fs::read_link(&link) {
        Ok(target) => target,
        Err(source) => {
            return Err(MdevNodeError::NoGroup {
                uuid: uuid.to_string(),
                link,
                source,
            })
        }
    };
    match target.file_name().and_then(|name| name.to_str()) {
        Some(group) if group.parse::<u32>().is_ok() => Ok(format!("/dev/vfio/{group}")),
        _ => Err(MdevNodeError::NotAGroup {
            uuid: uuid.to_string(),
            target,
        }),
    }
}

/// One type a parent offers, as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdevType {
    /// The directory name, what a profile's `type` names.
    pub id: String,
    pub name: Option<String>,
    pub available: Option<u64>,
    pub device_api: Option<String>,
    pub description: Option<String>,
}

impl MdevType {
    /// `i915-GVTg_V5_4 (GVTg_V5_4, vfio-pci, 2 available: low_gm_size: 128MB, ...)`.
    fn summary(&self) -> String {
        let mut facts: Vec<String> = Vec::new();
        if let Some(name) = self.name.as_ref().filter(|name| **name != self.id) {
            facts.push(name.clone());
        }
        if let Some(api) = &self.device_api {
            facts.push(api.clone());
        }
        facts.push(match self.available {
            Some(n) => format!("{n} available"),
            None => "available_instances unknown".to_string(),
        });
        let mut text = format!("{} ({})", self.id, facts.join(", "));
        if let Some(description) = self.description.as_ref().filter(|d| !d.is_empty()) {
            // Drivers write several lines (GVT-g: one per resource); one line here.
            let words: Vec<&str> = description.split_whitespace().collect();
            text.push_str(&format!(": {}", words.join(" ")));
        }
        text
    }
}

/// The parent's `mdev_supported_types`, sorted by name; None when it offers none (no
/// `/sys/class/mdev_bus/PARENT`: the driver that creates mediated devices is not loaded).
pub fn supported_types(root: &Sysroot, parent: &str) -> Option<Vec<MdevType>> {
    let dir = root.path(&format!(
        "/sys/class/mdev_bus/{parent}/mdev_supported_types"
    ));
    let entries = std::fs::read_dir(&dir).ok()?;
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .map(|text| text.trim().to_string())
    };
    let mut types: Vec<MdevType> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .map(|entry| {
            let path = entry.path();
            MdevType {
                id: entry.file_name().to_string_lossy().into_owned(),
                name: read(&path.join("name")),
                available: read(&path.join("available_instances")).and_then(|t| t.parse().ok()),
                device_api: read(&path.join("device_api")),
                description: read(&path.join("description")),
            }
        })
        .collect();
    types.sort_by(|a, b| a.id.cmp(&b.id));
    Some(types)
}

fn exists(host: &HostContext, uuid: &str) -> bool {
    host.root.path(&device_dir(uuid)).is_dir()
}

/// Whether the device is ready for QEMU: its directory appears first, its IOMMU group and
/// `/dev/vfio/N` only once its vfio driver (vfio_mdev, kvmgt's) has taken it.
fn ready(host: &HostContext, uuid: &str) -> bool {
    vfio_node(&host.root, uuid).is_ok_and(|node| host.root.path(&node).exists())
}

/// Writes 1 to the device's `remove` and waits until it is gone.
fn remove(host: &HostContext, uuid: &str) -> Result<(), StepError> {
    host.write(&format!("{}/remove", device_dir(uuid)), "1")?;
    if host.wait_until(|| !exists(host, uuid)) {
        Ok(())
    } else {
        Err(StepError::Other(format!(
            "the mediated device {uuid} was still there after writing 1 to its `remove`: a \
             process may still use it (`fuser -v /dev/vfio/*`); remove it with `echo 1 > {}/remove`",
            device_dir(uuid)
        )))
    }
}

impl CreateMdev {
    fn key(&self) -> String {
        format!("mdev[{}]", self.index)
    }

    fn create_path(&self) -> String {
        format!(
            "/sys/class/mdev_bus/{}/mdev_supported_types/{}/create",
            self.parent, self.mdev_type
        )
    }
}

impl Step for CreateMdev {
    fn describe(&self) -> String {
        format!(
            "create the mediated device {} of type {} on {} (removed after the run)",
            self.uuid, self.mdev_type, self.parent
        )
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let key = self.key();
        let parent = self.parent.to_string();
        let Some(types) = supported_types(&host.root, &parent) else {
            let why = if pci::device_exists(&host.root, self.parent) {
                format!(
                    "{parent} offers no mediated devices (no /sys/class/mdev_bus/{parent}): its \
                     driver does not create them now. For Intel GVT-g boot with \
                     `i915.enable_gvt=1` and load `kvmgt` (docs/mdev.md); for NVIDIA vGPU install \
                     the vGPU host driver"
                )
            } else {
                format!("{parent} does not exist on this host (`lspci -D` lists the devices)")
            };
            return vec![Finding::fail("mdev", format!("{key}: {why}"))];
        };
        let Some(wanted) = types.iter().find(|t| t.id == self.mdev_type) else {
            let listed: Vec<String> = types.iter().map(MdevType::summary).collect();
            return vec![Finding::fail(
                "mdev",
                format!(
                    "{key}: {parent} has no type `{}`; its types: {}",
                    self.mdev_type,
                    if listed.is_empty() {
                        "none".to_string()
                    } else {
                        listed.join("; ")
                    }
                ),
            )];
        };
        let mut findings = Vec::new();
        if let Some(api) = wanted
            .device_api
            .as_deref()
            .filter(|api| *api != "vfio-pci")
        {
            findings.push(Finding::fail(
                "mdev",
                format!(
                    "{key}: {parent} type {} is a {api} device; QEMU's vfio-pci, which vmrun passes \
                     mediated devices with, needs a vfio-pci type",
                    self.mdev_type
                ),
            ));
        }
        // A device this VM's crashed run left is removed before the new one is created, so
        // it gives its instance back.
        let left = usize::from(exists(host, &self.uuid));
        let available = wanted.available.map(|n| n as usize + left);
        let summaries: Vec<String> = types.iter().map(MdevType::summary).collect();
        match available {
            Some(n) if n < self.wanted && self.ordinal == 0 => findings.push(Finding::fail(
                "mdev",
                format!(
                    "{key}: {parent} type {} has {n} instance(s) left and the profile asks for \
                     {}: other mediated devices of the parent use the rest (ls \
                     /sys/bus/mdev/devices/); remove one or choose a smaller type: {}",
                    self.mdev_type,
                    self.wanted,
                    summaries.join("; ")
                ),
            )),
            // The shortage is told once, by the first entry of the type.
            Some(n) if n < self.wanted => {}
            _ if findings.is_empty() => findings.push(Finding::pass(
                "mdev",
                format!(
                    "{key}: {parent} type {}; the parent's types: {}",
                    self.mdev_type,
                    summaries.join("; ")
                ),
            )),
            _ => {}
        }
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        if exists(host, &self.uuid) {
            // Left by a run of this VM that ended without removing it (the UUID is the VM's).
            log.info(&format!(
                "removing the mediated device {} a previous run left, to create it afresh",
                self.uuid
            ));
            remove(host, &self.uuid)?;
        }
        log.info(&format!(
            "creating the mediated device {} of type {} on {}",
            self.uuid, self.mdev_type, self.parent
        ));
        record.change(
            RemoveMdev {
                uuid: self.uuid.clone(),
                parent: self.parent.to_string(),
                mdev_type: self.mdev_type.clone(),
            },
            || {
                host.write(&self.create_path(), &self.uuid)
                    .map_err(|error| match error {
                        StepError::Io { path, source } => StepError::Other(format!(
                            "{path}: {source}: the kernel refused to create {} ({}); `vmrun check` \
                             shows the type's available_instances, dmesg says why",
                            self.uuid,
                            self.key()
                        )),
                        other => other,
                    })?;
                if host.wait_until(|| ready(host, &self.uuid)) {
                    Ok(())
                } else if exists(host, &self.uuid) {
                    Err(StepError::Other(format!(
                        "created {} but it got no IOMMU group or /dev/vfio node: {}",
                        device_dir(&self.uuid),
                        vfio_node(&host.root, &self.uuid)
                            .map(|node| format!(
                                "{node} does not exist; is vfio_mdev (or kvmgt) loaded?"
                            ))
                            .unwrap_or_else(|why| why.to_string())
                    )))
                } else {
                    Err(StepError::Other(format!(
                        "wrote {} to {} but no {} appeared",
                        self.uuid,
                        self.create_path(),
                        device_dir(&self.uuid)
                    )))
                }
            },
        )
    }

    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        let mut hostdev = Element::new("hostdev")
            .attr("mode", "subsystem")
            .attr("type", "mdev")
            .attr("model", "vfio-pci");
        if self.display {
            hostdev = hostdev.attr("display", "on").attr("ramfb", "on");
        }
        let hostdev = hostdev.child(
            Element::new("source").child(Element::new("address").attr("uuid", self.uuid.clone())),
        );
        LibvirtNotes {
            comments: vec![format!(
                "libvirt passes the mediated device {} but does not create it: define it with \
                 `virsh nodedev-define` (parent {}, type {}) or let {} write the UUID to \
                 {} and 1 to {}/remove after",
                self.uuid,
                self.parent,
                self.mdev_type,
                vm.hook("prepare begin"),
                self.create_path(),
                device_dir(&self.uuid)
            )],
            metadata: vec![Element::new("vmrun:mdev")
                .attr("uuid", self.uuid.clone())
                .attr("parent", self.parent.to_string())
                .attr("type", self.mdev_type.clone())
                .attr("display", if self.display { "yes" } else { "no" })],
            devices: vec![Node::Element(hostdev)],
        }
    }
}

impl Undoable for RemoveMdev {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        // The UUID becomes a sysfs path: a journal entry that is not one is refused, not followed.
        if uuid::Uuid::parse_str(&self.uuid).is_err() {
            return Err(StepError::Other(format!(
                "the journal names a mediated device `{}`, which is not a UUID",
                self.uuid
            )));
        }
        if !exists(host, &self.uuid) {
            return Ok(());
        }
        log.info(&format!(
            "removing the mediated device {} ({} on {})",
            self.uuid, self.mdev_type, self.parent
        ));
        remove(host, &self.uuid)
    }

    fn verify_restored(&self, host: &HostContext) -> Result<(), String> {
        if exists(host, &self.uuid) {
            Err(format!("the mediated device {} is still there", self.uuid))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::testing::{self, FakeHost};
    use crate::host::steps::HostStep;

    const GVT: &str = "/sys/class/mdev_bus/0000:00:02.0/mdev_supported_types";

    fn gvt_host(available_4: u32) -> FakeHost {
        let fake = FakeHost::new();
        fake.write("/sys/bus/pci/devices/0000:00:02.0/vendor", "0x8086");
        for (id, name, available, description) in [
            (
                "i915-GVTg_V5_4",
                "GVTg_V5_4",
                available_4,
                "low_gm_size: 128MB\nhigh_gm_size: 512MB\n",
            ),
            ("i915-GVTg_V5_8", "GVTg_V5_8", 1, "low_gm_size: 64MB\n"),
        ] {
            fake.write(&format!("{GVT}/{id}/name"), &format!("{name}\n"));
            fake.write(
                &format!("{GVT}/{id}/available_instances"),
                &format!("{available}\n"),
            );
            fake.write(&format!("{GVT}/{id}/device_api"), "vfio-pci\n");
            fake.write(&format!("{GVT}/{id}/description"), description);
            fake.write(&format!("{GVT}/{id}/create"), "");
        }
        fake
    }

    /// Every planned device's preflight findings, in order, as `check` collects them.
    fn preflight(planned: &[CreateMdev], fake: &FakeHost) -> Vec<Finding> {
        planned
            .iter()
            .flat_map(|step| step.preflight(&fake.host()))
            .collect()
    }

    fn steps(profile: &str) -> Vec<CreateMdev> {
        let config = testing::config(&format!("name = \"gvt\"\n{profile}"));
        let paths = crate::plan::VmPaths::new(
            &crate::plan::BaseDirs {
                state: "/tmp/s".into(),
                runtime: "/tmp/r".into(),
            },
            &config.name,
        )
        .unwrap();
        CreateMdev::plan(&config, &paths).collect()
    }

    const TWO: &str = "[[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_4\"\n\
                       [[mdev]]\nparent = \"0000:00:02.0\"\ntype = \"i915-GVTg_V5_4\"\n";

    #[test]
    fn two_entries_of_one_type_are_two_devices_counted_together() {
        let planned = steps(TWO);
        assert_eq!(planned.len(), 2);
        assert_ne!(planned[0].uuid, planned[1].uuid);
        assert_eq!((planned[0].wanted, planned[0].ordinal), (2, 0));
        assert_eq!((planned[1].wanted, planned[1].ordinal), (2, 1));
        assert_eq!(planned, steps(TWO), "the same profile plans the same UUIDs");
    }

    #[test]
    fn the_preflight_lists_the_types_and_counts_the_instances() {
        let fake = gvt_host(2);
        let findings = preflight(&steps(TWO), &fake);
        assert!(
            findings.iter().all(|f| f.status == Status::Pass),
            "{findings:?}"
        );
        assert!(findings[0].message.contains(
            "i915-GVTg_V5_4 (GVTg_V5_4, vfio-pci, 2 available): low_gm_size: 128MB high_gm_size: 512MB"
        ), "{}", findings[0].message);
        assert!(findings[0]
            .message
            .contains("i915-GVTg_V5_8 (GVTg_V5_8, vfio-pci, 1 available"));

        let fake = gvt_host(1);
        let findings = preflight(&steps(TWO), &fake);
        assert_eq!(findings.len(), 1, "one shortage, told once: {findings:?}");
        assert_eq!(findings[0].status, Status::Fail);
        assert!(findings[0]
            .message
            .contains("1 instance(s) left and the profile asks for 2"));

        // A device this VM left behind is removed first: its instance counts as free.
        let planned = steps(TWO);
        fake.write(&format!("{}/remove", device_dir(&planned[0].uuid)), "");
        let findings = preflight(&planned, &fake);
        assert!(
            findings.iter().all(|f| f.status == Status::Pass),
            "{findings:?}"
        );
    }

    #[test]
    fn a_missing_type_or_parent_fails_with_what_there_is() {
        let fake = gvt_host(2);
        let step = &steps("[[mdev]]\nparent = \"00:02.0\"\ntype = \"nvidia-63\"\n")[0];
        let findings = step.preflight(&fake.host());
        assert_eq!(findings[0].status, Status::Fail);
        assert!(findings[0]
            .message
            .contains("has no type `nvidia-63`; its types: i915-GVTg_V5_4 ("));

        let step = &steps("[[mdev]]\nparent = \"00:03.0\"\ntype = \"nvidia-63\"\n")[0];
        let findings = step.preflight(&fake.host());
        assert!(findings[0].message.contains("0000:00:03.0 does not exist"));

        let bare = FakeHost::new();
        bare.write("/sys/bus/pci/devices/0000:00:02.0/vendor", "0x8086");
        let step = &steps("[[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_4\"\n")[0];
        let findings = step.preflight(&bare.host());
        assert_eq!(findings[0].status, Status::Fail);
        assert!(
            findings[0].message.contains("enable_gvt=1"),
            "{}",
            findings[0].message
        );
    }

    #[test]
    fn a_type_of_another_device_api_is_refused() {
        let fake = gvt_host(2);
        fake.write(&format!("{GVT}/i915-GVTg_V5_4/device_api"), "vfio-ccw\n");
        let step = &steps("[[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_4\"\n")[0];
        let findings = step.preflight(&fake.host());
        assert_eq!(findings.len(), 1);
        assert!(findings[0].message.contains("is a vfio-ccw device"));
    }

    #[test]
    fn a_create_the_kernel_refuses_leaves_only_its_journaled_undo() {
        // No kernel answers in this fake: the device never appears.
        let fake = gvt_host(2);
        let step = steps("[[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_4\"\n").remove(0);
        let uuid = step.uuid.clone();
        let session = fake.session(vec![HostStep::CreateMdev(step)]);
        let error = session.prepare(&testing::log()).unwrap_err().to_string();
        assert!(error.contains("no /sys/bus/mdev/devices/"), "{error}");
        assert_eq!(fake.read(&format!("{GVT}/i915-GVTg_V5_4/create")), uuid);
    }

    #[test]
    fn the_iommu_group_node_comes_from_the_devices_link() {
        let fake = FakeHost::new();
        let dir = fake.root().join("sys/bus/mdev/devices/u1");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(
            "../../../../kernel/iommu_groups/17",
            dir.join("iommu_group"),
        )
        .unwrap();
        assert_eq!(vfio_node(&fake.host().root, "u1").unwrap(), "/dev/vfio/17");
        assert!(vfio_node(&fake.host().root, "u2")
            .unwrap_err()
            .to_string()
            .contains("no IOMMU group"));
    }

    #[test]
    fn libvirt_gets_the_mdev_hostdev_and_the_keys_in_metadata() {
        let config = testing::config("");
        let mut step =
            steps("[[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_4\"\ndisplay = true\n")
                .remove(0);
        step.display = true;
        let uuid = step.uuid.clone();
        let notes = testing::libvirt(&HostStep::CreateMdev(step), &config);
        let Node::Element(hostdev) = &notes.devices[0] else {
            panic!("{:?}", notes.devices)
        };
        assert!(hostdev.attributes.contains(&("type".into(), "mdev".into())));
        assert!(hostdev
            .attributes
            .contains(&("display".into(), "on".into())));
        assert!(notes.metadata[0]
            .attributes
            .contains(&("uuid".into(), uuid)));
        assert!(notes.comments[0].contains("nodedev-define"));
    }
}
