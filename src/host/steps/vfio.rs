//! Passed-through PCI devices: vfio-pci is loaded if needed, and every `[[pci]]` device moves
//! to it the way libvirt's managed mode does (remember the driver, `driver_override`, unbind,
//! `drivers_probe`, wait), and back afterwards. Their preflight: IOMMU on, groups viable,
//! reset, boot GPU, and each `romfile`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::modules::UnloadModuleAgain;
use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::{Finding, Status};
use crate::host::pci;
use crate::host::pci_health;
use crate::host::Sysroot;
use crate::log::Log;
use crate::model::{Firmware, PciAddress, VmConfig};
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoadVfioPci {
    /// Every passed device: their IOMMU groups are judged together.
    pub devices: Vec<PciAddress>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BindVfio {
    pub address: PciAddress,
    pub romfile: Option<PathBuf>,
    /// OVMF can only show the card's output through a ROM with an EFI (GOP) image.
    pub uefi: bool,
    /// For an SR-IOV virtual function: its PF (`create_sriov_vfs` makes it before this step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vf_of: Option<PciAddress>,
}

/// Journaled by `BindVfio`: back to the driver (and driver_override) the device had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePciDriver {
    pub address: String,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
}

impl LoadVfioPci {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        (!config.pci.is_empty()).then(|| LoadVfioPci {
            devices: config.pci.iter().map(|device| device.address).collect(),
        })
    }
}

impl BindVfio {
    pub fn plan<'a>(config: &'a VmConfig, _paths: &VmPaths) -> impl Iterator<Item = Self> + 'a {
        let uefi = matches!(config.firmware, Firmware::Ovmf { .. });
        config.pci.iter().map(move |device| BindVfio {
            address: device.address,
            romfile: device.romfile.clone(),
            uefi,
            vf_of: device.sriov.as_ref().map(|vf| vf.pf),
        })
    }
}

impl LoadVfioPci {
    /// Whether the IOMMU is on and every passed device's group goes to the guest whole.
    fn group_findings(&self, host: &HostContext) -> Vec<Finding> {
        let root = &host.root;
        let mut findings = Vec::new();
        if !pci::iommu_enabled(root) {
            findings.push(Finding::fail("iommu", pci::ENABLE_IOMMU_HINT));
        }
        let present: Vec<PciAddress> = self
            .devices
            .iter()
            .copied()
            .filter(|address| pci::device_exists(root, *address))
            .collect();
        let missing = pci::missing_from_groups(root, &present);
        if missing.is_empty() {
            if !present.is_empty() && pci::iommu_enabled(root) {
                findings.push(Finding::pass(
                    "iommu",
                    format!(
                        "the IOMMU groups of {} passed device(s) are viable",
                        present.len()
                    ),
                ));
            }
            return findings;
        }
        let mut by_group: std::collections::BTreeMap<u32, Vec<String>> =
            std::collections::BTreeMap::new();
        let names = crate::host::pci_ids::PciNames::load(root);
        for (group, device) in missing {
            let name = names
                .describe(device.class_code, &device.vendor_device)
                .map(|name| format!(", {name}"))
                .unwrap_or_default();
            by_group.entry(group).or_default().push(format!(
                "{} ({} class {}, driver {}{name})",
                device.address,
                device.vendor_device,
                device.class,
                device.driver.as_deref().unwrap_or("none")
            ));
        }
        for (group, devices) in by_group {
            findings.push(Finding::fail(
                "iommu",
                format!(
                    "IOMMU group {group} is not viable: a group goes to the guest whole; add these devices as [[pci]] \
                     (or bind them to vfio-pci): {}",
                    devices.join(", ")
                ),
            ));
        }
        findings
    }
}

impl Step for LoadVfioPci {
    fn libvirt(&self, _vm: &LibvirtContext) -> LibvirtNotes {
        LibvirtNotes::comment(
            "vmrun moves each passed device to vfio-pci and back; managed='yes' makes libvirt do the same",
        )
    }

    fn describe(&self) -> String {
        "load vfio-pci if it is not loaded".into()
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let mut findings = self.group_findings(host);
        findings.extend(interrupt_remapping(&host.root));
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        if host.pci_driver_registered("vfio-pci") {
            return Ok(());
        }
        log.info("loading module vfio-pci");
        record.change(
            UnloadModuleAgain {
                module: "vfio-pci".into(),
            },
            || {
                host.run_checked(&["modprobe", "vfio-pci"], log)?;
                if host.wait_until(|| host.pci_driver_registered("vfio-pci")) {
                    Ok(())
                } else {
                    Err(StepError::Other(
                        "modprobe vfio-pci succeeded but no vfio-pci driver appeared".into(),
                    ))
                }
            },
        )
    }
}

impl BindVfio {
    fn device_findings(&self, host: &HostContext, key: &str) -> Vec<Finding> {
        let address = self.address.to_string();
        let Some(info) = pci::device_info(&host.root, &address) else {
            if let Some(pf) = self.vf_of {
                // Its IOMMU group is checked by create_sriov_vfs once the VF exists.
                return vec![Finding::pass(
                    "pci",
                    format!(
                        "{key}: a VF of {pf} that does not exist yet: made before it is bound, its IOMMU \
                         group checked then"
                    ),
                )];
            }
            return vec![Finding::fail(
                "pci",
                format!(
                    "{key}: {address} does not exist on this host (`lspci -D` lists the devices)"
                ),
            )];
        };
        let mut findings = Vec::new();
        // Whether and how the function resets is the `reset` findings' (steps/reset.rs).
        if info.boot_vga && self.romfile.is_none() {
            findings.push(Finding::warn(
                "pci",
                format!(
                    "{key}: {address} is the boot GPU and has no romfile: the host firmware ran and shadowed \
                     its ROM, and the copy the guest reads is often unusable (black screen); dump a clean ROM \
                     (`vmrun rom dump` on a system where it is not the boot GPU, or the vendor's) and set romfile"
                ),
            ));
        }
        if findings.is_empty() {
            let name = crate::host::pci_ids::PciNames::load(&host.root)
                .describe(info.class_code, &info.vendor_device)
                .unwrap_or_else(|| format!("class {}", info.class));
            findings.push(Finding::pass(
                "pci",
                format!(
                    "{key}: {address} {} {name}, driver {}",
                    info.vendor_device,
                    info.driver.as_deref().unwrap_or("none")
                ),
            ));
        }
        findings
    }

    /// The `romfile`: a real ROM, starting at its image, with an EFI image under OVMF, and
    /// made for this device (its ids read through sysfs).
    fn rom_findings(&self, host: &HostContext, key: &str) -> Vec<Finding> {
        let Some(romfile) = &self.romfile else {
            return Vec::new();
        };
        if !romfile.is_file() {
            return Vec::new(); // reported with the other missing files
        }
        let key = format!("{key}.romfile");
        let report = match crate::rom::inspect(romfile) {
            Ok(report) => report,
            Err(error) => return vec![Finding::fail("rom", format!("{key}: {error}"))],
        };
        let shown = romfile.display();
        let Some(first) = report.first_image() else {
            return vec![Finding::fail(
                "rom",
                format!("{key}: {shown}: {}", report.problems.join("; ")),
            )];
        };
        let mut findings = Vec::new();
        let mut failures = Vec::new();
        if report.header_bytes > 0 {
            let stripped = romfile.with_extension("stripped.rom");
            failures.push(format!(
                "{shown} starts with a {}-byte dump header; run `vmrun rom {shown} --strip {}` and set romfile to the stripped copy",
                report.header_bytes,
                stripped.display()
            ));
        }
        if self.uefi && !report.has_efi {
            failures.push(format!(
                "{shown} has no EFI (GOP) image, so OVMF cannot drive this GPU before the guest's driver loads \
                 (black screen until then); use a ROM with a UEFI image"
            ));
        }
        if report.images.iter().any(|image| image.truncated) {
            failures.push(format!("{shown}: {}", report.problems.join("; ")));
        }
        match crate::host::pci_ids(host.sysfs, self.address) {
            Ok((vendor, device_id)) if !report.is_for(vendor, device_id) => failures.push(format!(
                "{shown} is for {}:{} but {} is {vendor:04x}:{device_id:04x}",
                first.vendor_id, first.device_id, self.address
            )),
            Ok(_) => {}
            Err(error) => findings.push(Finding::warn(
                "rom",
                format!(
                    "{key}: cannot compare the ROM with {}: {error}",
                    self.address
                ),
            )),
        }
        if failures.is_empty() {
            let kinds: Vec<String> = report
                .images
                .iter()
                .map(|image| image.code_type.to_string())
                .collect();
            findings.push(Finding::pass(
                "rom",
                format!(
                    "{key}: {shown}: {} image(s) ({}) for {}:{}",
                    report.images.len(),
                    kinds.join(" + "),
                    first.vendor_id,
                    first.device_id
                ),
            ));
        }
        findings.extend(
            failures
                .into_iter()
                .map(|failure| Finding::new(Status::Fail, "rom", format!("{key}: {failure}"))),
        );
        findings.extend(
            report
                .problems
                .iter()
                .filter(|p| p.contains("checksum"))
                .map(|problem| Finding::warn("rom", format!("{key}: {problem}"))),
        );
        findings
    }

    fn unbind(&self, host: &HostContext, driver: &str) -> Result<(), StepError> {
        unbind(host, &self.address.to_string(), driver)
    }
}

fn unbind(host: &HostContext, address: &str, driver: &str) -> Result<(), StepError> {
    host.write(&format!("/sys/bus/pci/drivers/{driver}/unbind"), address)?;
    if host.wait_until(|| pci::driver_of(&host.root, address).as_deref() != Some(driver)) {
        Ok(())
    } else {
        Err(StepError::Other(format!(
            "{address} stayed on {driver} after unbind"
        )))
    }
}

impl Step for BindVfio {
    fn describe(&self) -> String {
        format!(
            "bind {} to vfio-pci (driver_override, unbind, drivers_probe), remembering its driver",
            self.address
        )
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let key = format!("pci {}", self.address);
        let mut findings = self.device_findings(host, &key);
        findings.extend(self.rom_findings(host, &key));
        findings.extend(legacy_interrupts(self.address, &host.root));
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let address = self.address.to_string();
        let driver = pci::driver_of(&host.root, &address);
        if driver.as_deref() == Some("vfio-pci") {
            log.info(&format!("{address} is already on vfio-pci"));
            return Ok(());
        }
        let driver_override = pci::driver_override_of(&host.root, &address);
        // vfio-pci turns runtime PM on when it binds (`power/control` auto) and off when it
        // unbinds (on): the host's own setting is read now and written back after the host
        // driver has the function again (journaled first, so undone after RestorePciDriver).
        let control = format!("/sys/bus/pci/devices/{address}/power/control");
        if let Ok(bytes) = host.sysfs.read(&control) {
            record.change(
                super::device_power::RestorePciPower {
                    address: address.clone(),
                    attribute: "power/control".to_string(),
                    value: String::from_utf8_lossy(&bytes).into_owned(),
                },
                || Ok(()),
            )?;
        }
        log.info(&format!(
            "binding {address} to vfio-pci (was {})",
            driver.as_deref().unwrap_or("unbound")
        ));
        record.change(
            RestorePciDriver {
                address: address.clone(),
                driver: driver.clone(),
                driver_override,
            },
            || {
                host.write(
                    &format!("/sys/bus/pci/devices/{address}/driver_override"),
                    "vfio-pci",
                )?;
                if let Some(current) = &driver {
                    self.unbind(host, current)?;
                }
                host.write("/sys/bus/pci/drivers_probe", &address)?;
                let label = format!("waiting for {address} to move to vfio-pci");
                if host.wait_until_shown(&label, log, || {
                    pci::driver_of(&host.root, &address).as_deref() == Some("vfio-pci")
                }) {
                    Ok(())
                } else {
                    Err(StepError::BindTimeout {
                        address: address.clone(),
                        driver: "vfio-pci".into(),
                        waited: host.timing.bind_timeout,
                        hint: "; is the vfio-pci module usable (dmesg may say why)?",
                    })
                }
            },
        )
    }
}

/// Without interrupt remapping a passed device can send interrupts (MSIs) the host takes for
/// its own; vfio refuses such hosts unless told to allow it. Remapped interrupts show up in
/// /proc/interrupts as `IR-PCI-MSI`, `IR-IO-APIC`, on Intel and AMD alike.
fn interrupt_remapping(root: &Sysroot) -> Option<Finding> {
    let interrupts = pci::read_trimmed(&root.path("/proc/interrupts"))?;
    if interrupts.contains(" IR-") {
        return Some(Finding::pass(
            "interrupts",
            "interrupt remapping is on (IR- interrupt chips in /proc/interrupts)",
        ));
    }
    let allowed = pci::read_trimmed(
        &root.path("/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts"),
    )
    .is_some_and(|v| v == "Y" || v == "1");
    Some(if allowed {
        Finding::warn(
            "interrupts",
            "interrupt remapping is off and vfio_iommu_type1.allow_unsafe_interrupts=1 assigns devices anyway: the guest can then make its devices send interrupts the host takes as its own (MSI injection), so a guest you do not trust could attack the host. Turning on interrupt remapping (VT-d / AMD-Vi with x2APIC in the firmware setup) removes the need for it",
        )
    } else {
        Finding::warn(
            "interrupts",
            "interrupt remapping looks off (no IR- interrupt chips in /proc/interrupts): vfio then refuses to assign devices and QEMU fails. Turn it on in the firmware setup (VT-d / AMD-Vi, x2APIC); vfio_iommu_type1.allow_unsafe_interrupts=1 works around it at a price: the guest could inject interrupts into the host, acceptable only for a guest you trust",
        )
    })
}

/// Whether a device's PCI capability list (read from its config space) has MSI or MSI-X.
fn has_msi(config_space: &[u8]) -> Option<bool> {
    const STATUS_CAP_LIST: u8 = 0x10;
    if config_space.len() < 64 {
        return None;
    }
    if config_space[0x06] & STATUS_CAP_LIST == 0 {
        return Some(false);
    }
    let mut pointer = usize::from(config_space[0x34] & 0xfc);
    // A malformed list may loop; a real one has far fewer than 48 entries.
    for _ in 0..48 {
        if pointer < 0x40 || pointer + 1 >= config_space.len() {
            break;
        }
        if matches!(config_space[pointer], 0x05 | 0x11) {
            return Some(true);
        }
        pointer = usize::from(config_space[pointer + 1] & 0xfc);
    }
    Some(false)
}

/// A passed function without MSI or MSI-X uses a legacy interrupt line, shared and slower
/// (the crackling HDMI audio of many guides).
fn legacy_interrupts(address: PciAddress, root: &Sysroot) -> Option<Finding> {
    let bytes = std::fs::read(root.path(&format!("/sys/bus/pci/devices/{address}/config"))).ok()?;
    (!has_msi(&bytes)?).then(|| {
        Finding::warn(
            "interrupts",
            format!(
                "{address} has neither MSI nor MSI-X: it can only use a legacy interrupt line, shared with other devices and slower in the guest"
            ),
        )
    })
}

/// The passed functions a journal still holds off their host driver (what `status` shows
/// after a run that ended with a device that did not answer).
pub fn journaled_functions(entries: &[crate::host::journal::JournalEntry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|entry| match &entry.undo {
            super::Undo::RestorePciDriver(restore) => Some(restore.address.clone()),
            _ => None,
        })
        .collect()
}

impl RestorePciDriver {
    /// Before a host driver can have the function again: it must answer (see
    /// `host::pci_health`). One that does not gets one remove + rescan; one still dead stays
    /// on vfio-pci (or off the bus) and the undo fails with `StepError::DeviceStuck`, so its
    /// journal entry is kept for `vmrun recover`.
    fn make_sure_it_answers(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let address = self.address.as_str();
        let first = pci_health::check(host, address, log);
        let Some(problem) = first.dead() else {
            log.info(&format!(
                "{address} answers ({}): returning it to its driver",
                first.describe()
            ));
            return Ok(());
        };
        let seen = match &first.power_state {
            Some(state) => format!("{problem}, power_state {state}"),
            None => problem,
        };
        if first.present {
            log.error(&format!(
                "{address} does not answer after the guest: {seen}; one remove and PCI rescan before giving up"
            ));
        } else {
            log.error(&format!(
                "{address} is not on the PCI bus: one PCI rescan before giving up"
            ));
        }
        let tried = match pci_health::remove_and_rescan(host, address, log) {
            Ok(()) if first.present => "vmrun removed it and rescanned the PCI bus once",
            Ok(()) => "vmrun rescanned the PCI bus",
            Err(error) => {
                log.warn(&format!("remove and rescan of {address} failed: {error}"));
                "vmrun could not remove and rescan it"
            }
        };
        let after = pci_health::check(host, address, log);
        let Some(still) = after.dead() else {
            log.info(&format!(
                "{address} answers again after the remove and rescan ({}): returning it to its driver",
                after.describe()
            ));
            return Ok(());
        };
        let (still, kept) = if after.present {
            (still, self.keep_on_vfio(host, log))
        } else {
            (
                "it did not come back (the kernel does not add a function that does not answer)"
                    .to_string(),
                "it is off the bus, where no driver can touch it".to_string(),
            )
        };
        Err(StepError::DeviceStuck {
            address: address.to_string(),
            seen,
            done: format!("{tried}, and {still}; {kept}"),
        })
    }

    /// A function that is back but dead: vfio-pci keeps it (driver_override, and a probe
    /// when it has no driver), so that loading its host module again cannot probe it.
    fn keep_on_vfio(&self, host: &HostContext, log: &Log) -> String {
        let address = self.address.as_str();
        let host_driver = self.driver.as_deref().unwrap_or("its host driver");
        let _ = host.write(
            &format!("/sys/bus/pci/devices/{address}/driver_override"),
            "vfio-pci",
        );
        match pci::driver_of(&host.root, address) {
            None if host.pci_driver_registered("vfio-pci") => {
                let _ = host.write("/sys/bus/pci/drivers_probe", address);
                host.wait_until(|| {
                    pci::driver_of(&host.root, address).as_deref() == Some("vfio-pci")
                });
            }
            _ => {}
        }
        let now = pci::driver_of(&host.root, address);
        log.warn(&format!(
            "{address} is kept away from {host_driver}: driver_override vfio-pci, now on {}",
            now.as_deref().unwrap_or("no driver")
        ));
        match now.as_deref() {
            Some("vfio-pci") | None => format!(
                "it stays on {} with driver_override vfio-pci, so that {host_driver} cannot hang the host on it",
                now.as_deref().unwrap_or("no driver")
            ),
            Some(other) => format!(
                "the kernel gave it to {other} when it was rescanned; vmrun leaves it there"
            ),
        }
    }
}

impl Undoable for RestorePciDriver {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let address = self.address.as_str();
        let before = pci::driver_of(&host.root, address);
        let present = host
            .root
            .path(&format!("/sys/bus/pci/devices/{address}"))
            .is_dir();
        // Only a function vmrun is about to give back is checked: one already on the driver
        // it had (a replayed record, a reboot before `recover`) is that driver's.
        if !present || before != self.driver {
            self.make_sure_it_answers(host, log)?;
        }
        let current = pci::driver_of(&host.root, address);
        log.info(&format!(
            "returning {address} to {} (now {})",
            self.driver.as_deref().unwrap_or("no driver"),
            current.as_deref().unwrap_or("unbound")
        ));
        host.write(
            &format!("/sys/bus/pci/devices/{address}/driver_override"),
            self.driver_override.as_deref().unwrap_or("\n"),
        )?;
        // Only the binding vmrun made is undone: a driver that holds the device now besides
        // vfio-pci came back on its own (its module was loaded again), and replaying this
        // record after that (a journal replayed twice) must not take the GPU from it.
        if let Some(now) = current
            .as_deref()
            .filter(|now| Some(*now) != self.driver.as_deref() && *now == "vfio-pci")
        {
            unbind(host, address, now)?;
        }
        match &self.driver {
            // Its module may still be unloaded (single GPU): loading it later binds it.
            Some(original)
                if current.as_deref() != Some(original) && host.pci_driver_registered(original) =>
            {
                host.write("/sys/bus/pci/drivers_probe", address)?;
                if host.wait_until(|| {
                    pci::driver_of(&host.root, address).as_deref() == Some(original.as_str())
                }) {
                    Ok(())
                } else {
                    Err(StepError::BindTimeout {
                        address: address.to_string(),
                        driver: original.clone(),
                        waited: host.timing.bind_timeout,
                        hint: "",
                    })
                }
            }
            _ => Ok(()),
        }
    }

    /// Run after every undo: a device whose driver module came back only late (single GPU)
    /// must be home by now.
    fn verify_restored(&self, host: &HostContext) -> Result<(), String> {
        let Some(driver) = &self.driver else {
            return Ok(());
        };
        let address = self.address.as_str();
        let home = || pci::driver_of(&host.root, address).as_deref() == Some(driver.as_str());
        // A probe can only help once the driver is registered again (its module was reloaded)
        // and the device has not been claimed by it yet.
        if host.pci_driver_registered(driver) && !home() {
            let _ = host.write("/sys/bus/pci/drivers_probe", address);
        }
        if host.wait_until(home) {
            Ok(())
        } else {
            let now = pci::driver_of(&host.root, address).unwrap_or_else(|| "no driver".into());
            Err(format!("{address} is not back on {driver} (now: {now})"))
        }
    }
}

#[cfg(test)]
mod tests;
