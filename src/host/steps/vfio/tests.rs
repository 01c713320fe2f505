//! Unit tests of the vfio steps: the MSI capability walk, interrupt remapping, and the health
//! check and runtime PM record around giving a function back.

mod capability {
    use super::super::*;

    #[test]
    fn msi_is_found_by_walking_the_capability_list() {
        let mut space = vec![0u8; 256];
        space[0x06] = 0x10;
        space[0x34] = 0x60;
        space[0x60] = 0x01; // power management
        space[0x61] = 0x68;
        space[0x68] = 0x05; // MSI
        assert_eq!(has_msi(&space), Some(true));
        space[0x68] = 0x10; // PCI Express, last
        assert_eq!(has_msi(&space), Some(false));
        space[0x69] = 0x60; // loops back
        assert_eq!(has_msi(&space), Some(false));
        space[0x06] = 0;
        assert_eq!(has_msi(&space), Some(false));
        assert_eq!(has_msi(&space[..32]), None);
    }
}

mod interrupts {
    use super::super::*;
    use crate::host::steps::testing::FakeHost;

    #[test]
    fn interrupt_remapping_is_read_from_proc_interrupts() {
        let fake = FakeHost::new();
        let root = fake.host().root;
        assert!(
            interrupt_remapping(&root).is_none(),
            "unreadable: no finding"
        );
        fake.write(
            "/proc/interrupts",
            "  24:  0  IR-PCI-MSI 512000-edge  ahci\n",
        );
        assert_eq!(interrupt_remapping(&root).unwrap().status, Status::Pass);
        fake.write("/proc/interrupts", "  24:  0  PCI-MSI 512000-edge  ahci\n");
        let off = interrupt_remapping(&root).unwrap();
        assert!(off.message.contains("looks off"), "{}", off.message);
        fake.write(
            "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
            "Y",
        );
        let allowed = interrupt_remapping(&root).unwrap();
        assert!(
            allowed.message.contains("MSI injection"),
            "{}",
            allowed.message
        );
    }

    #[test]
    fn a_function_without_msi_is_warned_about() {
        let fake = FakeHost::new();
        let address: PciAddress = "0000:01:00.1".parse().unwrap();
        let root = fake.host().root;
        assert!(legacy_interrupts(address, &root).is_none());
        let mut space = vec![0u8; 64];
        fake.write("/sys/bus/pci/devices/0000:01:00.1/config", "");
        std::fs::write(
            fake.root().join("sys/bus/pci/devices/0000:01:00.1/config"),
            &space,
        )
        .unwrap();
        let finding = legacy_interrupts(address, &root).unwrap();
        assert!(finding.message.contains("neither MSI nor MSI-X"));
        space.resize(256, 0);
        space[0x06] = 0x10;
        space[0x34] = 0x50;
        space[0x50] = 0x11; // MSI-X
        std::fs::write(
            fake.root().join("sys/bus/pci/devices/0000:01:00.1/config"),
            &space,
        )
        .unwrap();
        assert!(legacy_interrupts(address, &root).is_none());
    }
}

mod health {
    use super::super::*;
    use crate::host::steps::testing::{log, FakeHost};

    const A: &str = "0000:01:00.0";

    /// A function on vfio-pci (its `driver` link), with nvidia registered, no `remove`
    /// attribute (nothing here would act on it) and the config space `ids` reads.
    fn on_vfio(fake: &FakeHost, ids: [u8; 4]) {
        let dev = format!("/sys/bus/pci/devices/{A}");
        fake.write(&format!("{dev}/driver_override"), "vfio-pci\n");
        fake.write(&format!("{dev}/power_state"), "D0\n");
        fake.write("/sys/bus/pci/drivers/vfio-pci/unbind", "");
        fake.write("/sys/bus/pci/drivers/nvidia/bind", "");
        fake.write("/sys/bus/pci/drivers_probe", "");
        fake.write("/sys/bus/pci/rescan", "");
        let mut space = vec![0u8; 64];
        space[..4].copy_from_slice(&ids);
        std::fs::write(fake.root().join(&dev[1..]).join("config"), space).unwrap();
        std::os::unix::fs::symlink(
            "../../drivers/vfio-pci",
            fake.root().join(&dev[1..]).join("driver"),
        )
        .unwrap();
    }

    fn record() -> RestorePciDriver {
        RestorePciDriver {
            address: A.to_string(),
            driver: Some("nvidia".to_string()),
            driver_override: None,
        }
    }

    #[test]
    fn a_function_reading_all_ones_is_kept_on_vfio_pci_and_never_offered_to_its_driver() {
        let fake = FakeHost::new();
        on_vfio(&fake, [0xff; 4]);
        let error = record().undo(&fake.host(), &log()).unwrap_err();
        let StepError::DeviceStuck {
            address,
            seen,
            done,
        } = &error
        else {
            panic!("{error}");
        };
        assert_eq!(address, A);
        assert_eq!(
            seen,
            "its config space reads vendor ffff device ffff (all ones: it does not answer), power_state D0"
        );
        assert!(
            done.starts_with(
                "vmrun could not remove and rescan it, and its config space reads vendor ffff"
            ),
            "{done}"
        );
        assert!(
            done.ends_with("it stays on vfio-pci with driver_override vfio-pci, so that nvidia cannot hang the host on it"),
            "{done}"
        );
        // Never unbound from vfio-pci, never probed for nvidia.
        assert_eq!(
            fake.read(&format!("/sys/bus/pci/devices/{A}/driver_override")),
            "vfio-pci"
        );
        assert_eq!(fake.read("/sys/bus/pci/drivers/vfio-pci/unbind"), "");
        assert_eq!(fake.read("/sys/bus/pci/drivers_probe"), "");
        assert_eq!(
            pci::driver_of(&fake.host().root, A).as_deref(),
            Some("vfio-pci")
        );
    }

    #[test]
    fn the_hosts_runtime_pm_setting_is_journaled_before_binding_and_undone_after_the_driver() {
        use crate::host::journal::Journal;
        use crate::host::steps::{device_power::RestorePciPower, Recorder, Undo};
        let fake = FakeHost::new();
        let dev = format!("/sys/bus/pci/devices/{A}");
        // A laptop host's setting (TLP, powertop): vfio-pci turns it to auto on bind and to
        // on at unbind, so only the value read before the bind is the host's.
        fake.write(&format!("{dev}/power/control"), "auto\n");
        fake.write(&format!("{dev}/driver_override"), "\n");
        fake.write("/sys/bus/pci/drivers/vfio-pci/bind", "");
        fake.write("/sys/bus/pci/drivers_probe", "");
        let journal = Journal::at(&fake.root().join("journal"));
        let step = BindVfio {
            address: A.parse().unwrap(),
            romfile: None,
            uefi: false,
            vf_of: None,
        };
        let _ = step.apply(&fake.host(), &Recorder::new(&journal, 0), &log());
        let entries = journal.entries().unwrap();
        let position = |wanted: fn(&Undo) -> bool| entries.iter().position(|e| wanted(&e.undo));
        let power = position(|u| matches!(u, Undo::RestorePciPower(_))).expect("journaled");
        assert_eq!(
            entries[power].undo,
            Undo::RestorePciPower(RestorePciPower {
                address: A.to_string(),
                attribute: "power/control".to_string(),
                value: "auto\n".to_string(),
            })
        );
        // Undone in reverse: the setting is written back after the driver is restored.
        if let Some(driver) = position(|u| matches!(u, Undo::RestorePciDriver(_))) {
            assert!(power < driver, "{entries:?}");
        }
    }

    #[test]
    fn a_function_that_answers_is_unbound_from_vfio_pci_for_its_driver() {
        let fake = FakeHost::new();
        on_vfio(&fake, [0xde, 0x10, 0x84, 0x21]);
        // No kernel here: the unbind is written and never done, so the undo times out
        // waiting; what matters is that the handover started.
        let _ = record().undo(&fake.host(), &log());
        assert_eq!(fake.read("/sys/bus/pci/drivers/vfio-pci/unbind"), A);
        assert_eq!(
            fake.read(&format!("/sys/bus/pci/devices/{A}/driver_override")),
            ""
        );
    }
}
