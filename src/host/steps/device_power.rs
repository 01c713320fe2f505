//! Every passed PCI function stays powered while the VM runs: D3cold is forbidden
//! (`d3cold_allowed` = 0) and runtime PM is off (`power/control` = `on`), so that the host's
//! power management never puts a function the guest owns into a state it may not come back
//! from (the "stuck in D3" cards). Each value found is journaled before it is replaced and
//! written back afterwards. Applied right after the function is bound to vfio-pci, so it is
//! undone before the function goes back to its host driver.

use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::host::pci;
use crate::log::Log;
use crate::model::{PciAddress, VmConfig};
use crate::plan::VmPaths;

/// The attributes this step writes under the function's sysfs directory, with the value it
/// writes to each.
const SETTINGS: [(&str, &str); 2] = [("d3cold_allowed", "0"), ("power/control", "on")];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeepPciPowered {
    pub address: PciAddress,
}

/// Journaled by `KeepPciPowered`: one attribute of one function back to the value it had.
/// Writing the same value twice is harmless, so a replayed record changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePciPower {
    pub address: String,
    /// Relative to the function's sysfs directory: `d3cold_allowed`, `power/control`.
    pub attribute: String,
    pub value: String,
}

fn attribute_path(address: &str, attribute: &str) -> String {
    format!("/sys/bus/pci/devices/{address}/{attribute}")
}

impl KeepPciPowered {
    pub fn plan<'a>(config: &'a VmConfig, _paths: &VmPaths) -> impl Iterator<Item = Self> + 'a {
        config.pci.iter().map(|device| KeepPciPowered {
            address: device.address,
        })
    }
}

impl Step for KeepPciPowered {
    fn describe(&self) -> String {
        format!(
            "keep {} out of D3cold with runtime PM off while the VM runs",
            self.address
        )
    }

    fn libvirt(&self, _vm: &LibvirtContext) -> LibvirtNotes {
        LibvirtNotes::comment(format!(
            "vmrun keeps {} out of D3cold (d3cold_allowed 0) with runtime PM off (power/control on) while \
             the VM runs; libvirt has no equivalent setting",
            self.address
        ))
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        // An absent device is the vfio step's to report.
        if !pci::device_exists(&host.root, self.address) {
            return Vec::new();
        }
        let address = self.address.to_string();
        let read = |attribute: &str| host.read(&attribute_path(&address, attribute));
        let control = match read("power/control") {
            Some(control) => format!("runtime PM {control}"),
            None => "no runtime PM control".to_string(),
        };
        let d3cold = match read("d3cold_allowed").as_deref() {
            Some("0") => "d3cold not allowed",
            Some(_) => "d3cold allowed",
            None => "no d3cold_allowed (older kernel)",
        };
        match read("power_state") {
            Some(state) if state.eq_ignore_ascii_case("D3cold") => vec![Finding::warn(
                "power",
                format!(
                    "{address} power_state {state}, {control}, {d3cold}: it is powered off now and may not \
                     wake for vfio-pci; if the run fails, a suspend/resume or reboot brings it back"
                ),
            )],
            Some(state) => vec![Finding::pass(
                "power",
                format!(
                    "{address} power_state {state}, {control}, {d3cold}: will be kept out of D3cold with \
                     runtime PM off while the VM runs"
                ),
            )],
            None => vec![Finding::warn(
                "power",
                format!(
                    "{address}: power_state is unreadable ({control}, {d3cold}); vmrun cannot tell whether \
                     the function is powered"
                ),
            )],
        }
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let address = self.address.to_string();
        for (attribute, wanted) in SETTINGS {
            let path = attribute_path(&address, attribute);
            // The value as read, newline included: what is written back is exactly what was
            // there (the kernel accepts the trailing newline on both attributes).
            let Ok(bytes) = host.sysfs.read(&path) else {
                // Kernels before 3.6 have no d3cold_allowed; nothing to keep then.
                log.debug(&format!("no {path}: left alone"));
                continue;
            };
            let value = String::from_utf8_lossy(&bytes).into_owned();
            if value.trim() == wanted {
                // Already so (set by the admin or a udev rule): nothing to undo.
                log.debug(&format!("{address} {attribute} is already {wanted}"));
                continue;
            }
            log.info(&format!(
                "{address} {attribute} {} → {wanted}",
                value.trim()
            ));
            record.change(
                RestorePciPower {
                    address: address.clone(),
                    attribute: attribute.to_string(),
                    value,
                },
                || host.write(&path, wanted),
            )?;
        }
        Ok(())
    }
}

impl Undoable for RestorePciPower {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let path = attribute_path(&self.address, &self.attribute);
        if !host.root.path(&path).exists() {
            // The function is gone (removed, or the machine rebooted before `recover`): a
            // function that appears again starts with the kernel's defaults.
            log.debug(&format!("no {path}: nothing to restore"));
            return Ok(());
        }
        log.info(&format!(
            "{} {} back to {}",
            self.address,
            self.attribute,
            self.value.trim()
        ));
        host.write(&path, &self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::testing::{self, log, FakeHost};
    use crate::host::steps::HostStep;

    const A: &str = "0000:01:00.0";
    const B: &str = "0000:01:00.1";

    fn step(address: &str) -> KeepPciPowered {
        KeepPciPowered {
            address: address.parse().unwrap(),
        }
    }

    fn raw(fake: &FakeHost, path: &str) -> Vec<u8> {
        std::fs::read(fake.root().join(path.trim_start_matches('/'))).unwrap()
    }

    fn device(fake: &FakeHost, address: &str, state: &str, control: &str, d3cold: Option<&str>) {
        fake.write(&attribute_path(address, "vendor"), "0x10de\n");
        fake.write(&attribute_path(address, "power_state"), state);
        fake.write(&attribute_path(address, "power/control"), control);
        if let Some(d3cold) = d3cold {
            fake.write(&attribute_path(address, "d3cold_allowed"), d3cold);
        }
    }

    #[test]
    fn two_functions_are_kept_powered_and_restored_to_the_exact_bytes() {
        let fake = FakeHost::new();
        device(&fake, A, "D0\n", "auto\n", Some("1\n"));
        device(&fake, B, "D3hot\n", "auto\n", Some("1\n"));
        let files: Vec<String> = [A, B]
            .iter()
            .flat_map(|address| {
                ["d3cold_allowed", "power/control"].map(|a| attribute_path(address, a))
            })
            .collect();
        let before: Vec<Vec<u8>> = files.iter().map(|path| raw(&fake, path)).collect();
        let session = fake.session(vec![
            HostStep::KeepPciPowered(step(A)),
            HostStep::KeepPciPowered(step(B)),
        ]);
        session.apply(&log()).unwrap();
        for address in [A, B] {
            assert_eq!(fake.read(&attribute_path(address, "d3cold_allowed")), "0");
            assert_eq!(fake.read(&attribute_path(address, "power/control")), "on");
        }
        session.undo_all(&log()).unwrap();
        let after: Vec<Vec<u8>> = files.iter().map(|path| raw(&fake, path)).collect();
        assert_eq!(after, before);
        assert_eq!(
            after,
            [&b"1\n"[..], b"auto\n", b"1\n", b"auto\n"].map(<[u8]>::to_vec)
        );
        assert!(session.leftovers().unwrap().is_empty());
    }

    #[test]
    fn values_without_a_newline_come_back_byte_for_byte_and_undo_twice_is_harmless() {
        let fake = FakeHost::new();
        device(&fake, A, "D0", "auto", Some("1"));
        let session = fake.session(vec![HostStep::KeepPciPowered(step(A))]);
        session.apply(&log()).unwrap();
        let record = RestorePciPower {
            address: A.to_string(),
            attribute: "power/control".to_string(),
            value: "auto".to_string(),
        };
        session.undo_all(&log()).unwrap();
        record.undo(&fake.host(), &log()).unwrap();
        assert_eq!(raw(&fake, &attribute_path(A, "power/control")), b"auto");
        assert_eq!(raw(&fake, &attribute_path(A, "d3cold_allowed")), b"1");
    }

    #[test]
    fn a_kernel_without_d3cold_allowed_is_skipped() {
        let fake = FakeHost::new();
        device(&fake, A, "D0\n", "auto\n", None);
        let session = fake.session(vec![HostStep::KeepPciPowered(step(A))]);
        session.apply(&log()).unwrap();
        assert!(!fake.exists(&attribute_path(A, "d3cold_allowed")));
        assert_eq!(fake.read(&attribute_path(A, "power/control")), "on");
        session.undo_all(&log()).unwrap();
        assert!(!fake.exists(&attribute_path(A, "d3cold_allowed")));
        assert_eq!(fake.read(&attribute_path(A, "power/control")), "auto");
        let findings = step(A).preflight(&fake.host());
        assert!(
            findings[0].message.contains("no d3cold_allowed"),
            "{findings:?}"
        );
    }

    #[test]
    fn a_value_already_set_is_not_journaled() {
        let fake = FakeHost::new();
        device(&fake, A, "D0\n", "on\n", Some("1\n"));
        let session = fake.session(vec![HostStep::KeepPciPowered(step(A))]);
        session.apply(&log()).unwrap();
        let journal = crate::host::journal::Journal::at(&fake.root().join("journal"));
        let entries = journal.entries().unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(matches!(
            &entries[0].undo,
            crate::host::steps::Undo::RestorePciPower(undo) if undo.attribute == "d3cold_allowed"
        ));
        session.undo_all(&log()).unwrap();
        assert_eq!(raw(&fake, &attribute_path(A, "power/control")), b"on\n");
        assert_eq!(raw(&fake, &attribute_path(A, "d3cold_allowed")), b"1\n");
    }

    #[test]
    fn findings_show_the_power_state_and_warn_of_d3cold() {
        let fake = FakeHost::new();
        device(&fake, A, "D0\n", "auto\n", Some("1\n"));
        device(&fake, B, "D3cold\n", "auto\n", Some("1\n"));
        let d0 = step(A).preflight(&fake.host());
        assert_eq!(d0.len(), 1);
        assert_eq!(d0[0].status, Status::Pass);
        assert_eq!(
            d0[0].message,
            "0000:01:00.0 power_state D0, runtime PM auto, d3cold allowed: will be kept out of D3cold \
             with runtime PM off while the VM runs"
        );
        let d3 = step(B).preflight(&fake.host());
        assert_eq!(d3.len(), 1);
        assert_eq!(d3[0].status, Status::Warn);
        assert!(d3[0].message.contains("power_state D3cold"), "{d3:?}");

        std::fs::remove_file(
            fake.root()
                .join("sys/bus/pci/devices/0000:01:00.0/power_state"),
        )
        .unwrap();
        let unreadable = step(A).preflight(&fake.host());
        assert_eq!(unreadable[0].status, Status::Warn);
        assert!(unreadable[0].message.contains("unreadable"));

        // A function that is not there is the vfio step's to report.
        assert!(step("0000:02:00.0").preflight(&fake.host()).is_empty());
    }

    #[test]
    fn only_passed_functions_are_planned() {
        let none = testing::config("");
        let paths = VmPaths::new(&crate::plan::BaseDirs::resolve(None, None), &none.name).unwrap();
        assert_eq!(KeepPciPowered::plan(&none, &paths).count(), 0);
        let two =
            testing::config("[[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n");
        let planned: Vec<String> = KeepPciPowered::plan(&two, &paths)
            .map(|step| step.address.to_string())
            .collect();
        assert_eq!(planned, [A, B]);
    }

    #[test]
    fn libvirt_gets_a_comment() {
        let config = testing::config("");
        let notes = testing::libvirt(&HostStep::KeepPciPowered(step(A)), &config);
        assert!(notes.comments[0].contains("out of D3cold"));
        assert!(notes.metadata.is_empty());
    }
}
