//! `rescan = true` on a `[[pci]]` device: the device is removed and the bus rescanned before
//! it is bound to vfio-pci, so that the kernel assigns its BARs afresh (the "BAR can't reserve"
//! fix: the host firmware or a host driver left them where vfio-pci cannot claim them).
//! Between the remove and the rescan the device does not exist; the journal says so, and the
//! undo (teardown or `recover`) rescans until it is back.

use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::host::pci;
use crate::libvirt::xml::Element;
use crate::log::Log;
use crate::model::{PciAddress, VmConfig};
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RescanPciDevice {
    pub address: PciAddress,
}

/// Journaled by `RescanPciDevice`: a device that was removed comes back with a rescan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescanPciBus {
    pub address: String,
}

impl RescanPciDevice {
    pub fn plan<'a>(config: &'a VmConfig, _paths: &VmPaths) -> impl Iterator<Item = Self> + 'a {
        config
            .pci
            .iter()
            .filter(|device| device.rescan)
            .map(|device| RescanPciDevice {
                address: device.address,
            })
    }
}

fn present(host: &HostContext, address: &str) -> bool {
    host.root
        .path(&format!("/sys/bus/pci/devices/{address}"))
        .is_dir()
}

fn rescan_until_present(host: &HostContext, address: &str) -> Result<(), StepError> {
    host.write("/sys/bus/pci/rescan", "1")?;
    if host.wait_until(|| present(host, address)) {
        Ok(())
    } else {
        Err(StepError::Other(format!(
            "{address} did not come back after a PCI bus rescan; `echo 1 > /sys/bus/pci/rescan` as root may \
             bring it back, dmesg says why not"
        )))
    }
}

impl Step for RescanPciDevice {
    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        LibvirtNotes {
            comments: vec![format!(
                "vmrun removes {} and rescans the PCI bus before binding it to vfio-pci: libvirt needs {} \
                 writing 1 to /sys/bus/pci/devices/{}/remove and /sys/bus/pci/rescan",
                self.address,
                vm.hook("prepare begin"),
                self.address
            )],
            metadata: vec![Element::new("vmrun:pci")
                .attr("address", self.address.to_string())
                .attr("rescan", "yes")],
            devices: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "remove {} and rescan the PCI bus, so its BARs are assigned afresh",
            self.address
        )
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let attribute = format!("/sys/bus/pci/devices/{}/remove", self.address);
        if pci::device_exists(&host.root, self.address) && !host.root.path(&attribute).exists() {
            return vec![Finding::fail(
                "pci",
                format!(
                    "pci {}: rescan = true, but this kernel offers no {attribute}",
                    self.address
                ),
            )];
        }
        Vec::new()
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let address = self.address.to_string();
        log.info(&format!("removing {address} and rescanning the PCI bus"));
        record.change(
            RescanPciBus {
                address: address.clone(),
            },
            || {
                host.write(&format!("/sys/bus/pci/devices/{address}/remove"), "1")?;
                if !host.wait_until(|| !present(host, &address)) {
                    return Err(StepError::Other(format!(
                        "{address} was still there after writing its `remove` attribute"
                    )));
                }
                rescan_until_present(host, &address)
            },
        )
    }
}

impl Undoable for RescanPciBus {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        if present(host, &self.address) {
            return Ok(());
        }
        log.info(&format!(
            "{} is missing after a remove: rescanning the PCI bus",
            self.address
        ));
        rescan_until_present(host, &self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::testing::{self, FakeHost};
    use crate::host::steps::HostStep;

    fn step() -> RescanPciDevice {
        RescanPciDevice {
            address: "0000:03:00.0".parse().unwrap(),
        }
    }

    #[test]
    fn a_present_device_without_a_remove_attribute_fails_the_preflight() {
        let fake = FakeHost::new();
        // Absent devices are the vfio step's to report.
        assert!(step().preflight(&fake.host()).is_empty());
        fake.write("/sys/bus/pci/devices/0000:03:00.0/vendor", "0x8086");
        let findings = step().preflight(&fake.host());
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].status, Status::Fail);
        fake.write("/sys/bus/pci/devices/0000:03:00.0/remove", "");
        assert!(step().preflight(&fake.host()).is_empty());
    }

    #[test]
    fn libvirt_gets_the_hook_and_the_key_in_metadata() {
        let config = testing::config("");
        let notes = testing::libvirt(&HostStep::RescanPciDevice(step()), &config);
        assert!(notes.comments[0].contains("/sys/bus/pci/devices/0000:03:00.0/remove"));
        assert_eq!(notes.metadata[0].name, "vmrun:pci");
        assert!(notes.metadata[0]
            .attributes
            .contains(&("rescan".to_string(), "yes".to_string())));
    }
}
