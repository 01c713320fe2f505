//! `vmrun iommu` and the PCI preflight of `check`, over fake hosts built from the fixtures.

use serde_json::Value;

use crate::common::{check_findings, run};
use crate::fake_host::{FakeHost, Options};

fn check(host: &FakeHost, pci: &[&str], extra: &str) -> (i32, Vec<String>) {
    let dir = crate::common::tempdir();
    let devices: String = pci
        .iter()
        .map(|a| format!("[[pci]]\naddress = \"{a}\"\n"))
        .collect();
    std::fs::write(
        dir.path().join("vm.toml"),
        format!("[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n{devices}{extra}"),
    )
    .unwrap();
    let (code, stdout, _) = run(crate::common::vmrun(dir.path())
        .env("VMRUN_SYSROOT", &host.root)
        .args(["check", "vm.toml", "--runtime-dir"])
        .arg(dir.path().join("run")));
    let lines = stdout
        .lines()
        .filter(|l| l.contains(" pci ") || l.contains(" iommu ") || l.contains(" reset "))
        .map(str::to_string)
        .collect();
    (code, lines)
}

#[test]
fn iommu_lists_every_group_with_its_devices() {
    let host = FakeHost::new(
        "b550-ryzen5800x.tsv",
        Options {
            boot_vga: vec!["0000:04:00.0"],
            no_reset: vec!["0000:04:00.0"],
            ..Options::default()
        },
    );
    let (code, stdout, stderr) = run(crate::common::vmrun(&host.root)
        .env("VMRUN_SYSROOT", &host.root)
        .args(["iommu", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let groups: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 22);
    let group16 = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == 16)
        .unwrap();
    let gpu = &group16["devices"][0];
    assert_eq!(gpu["address"], "0000:08:00.0");
    assert_eq!(gpu["vendor_device"], "10de:1c02");
    assert_eq!(gpu["driver"], "vfio-pci");
    assert_eq!(gpu["class"], "0x030000");
    assert_eq!(gpu["class_name"], "VGA compatible controller");
    assert_eq!(
        gpu["name"],
        "NVIDIA Corporation GP106 [GeForce GTX 1060 3GB]"
    );
    assert_eq!(gpu["resettable"], true);
    let group15 = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == 15)
        .unwrap();
    let rx550 = group15["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["address"] == "0000:04:00.0")
        .unwrap();
    assert_eq!(
        (rx550["boot_vga"].clone(), rx550["resettable"].clone()),
        (Value::Bool(true), Value::Bool(false))
    );
    assert_eq!(group15["devices"].as_array().unwrap().len(), 12);

    let (code, text, _) = run(crate::common::vmrun(&host.root)
        .env("VMRUN_SYSROOT", &host.root)
        .arg("iommu"));
    assert_eq!(code, 0);
    assert!(
        text.contains(
            "IOMMU group 16\n  0000:08:00.0  10de:1c02  vfio-pci       reset: yes  VGA compatible controller: \
             NVIDIA Corporation GP106 [GeForce GTX 1060 3GB]\n"
        ),
        "{text}"
    );
}

#[test]
fn without_iommu_groups_iommu_says_how_to_enable_them() {
    let empty = crate::common::tempdir();
    let (code, stdout, stderr) = run(crate::common::vmrun(empty.path())
        .env("VMRUN_SYSROOT", empty.path())
        .arg("iommu"));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("intel_iommu=on") && stderr.contains("amd_iommu=on"),
        "{stderr}"
    );
}

#[test]
fn a_group_shared_with_chipset_devices_is_refused_naming_each_one() {
    let host = FakeHost::new("b550-ryzen5800x.tsv", Options::default());
    let (code, lines) = check(&host, &["04:00.0", "04:00.1"], "");
    assert_eq!(code, 3, "{lines:#?}");
    let failure = lines
        .iter()
        .find(|l| l.starts_with("FAIL") && l.contains("IOMMU group 15 is not viable"))
        .unwrap();
    for needed in [
        "0000:02:00.0",
        "0000:02:00.1",
        "0000:05:00.0",
        "0000:06:00.0",
        "0000:07:00.0",
    ] {
        assert!(failure.contains(needed), "{needed} not named: {failure}");
    }
    for bridge in ["0000:02:00.2", "0000:03:00.0", "0000:03:09.0"] {
        assert!(
            !failure.contains(bridge),
            "bridges never block a group: {failure}"
        );
    }
    assert!(
        !failure.contains("0000:04:00.0"),
        "passed devices are not missing: {failure}"
    );
}

#[test]
fn a_group_already_on_vfio_or_shared_only_with_its_root_port_is_viable() {
    let b550 = FakeHost::new("b550-ryzen5800x.tsv", Options::default());
    let (_, lines) = check(&b550, &["08:00.0", "08:00.1"], "");
    assert!(
        lines.iter().any(|l| l.starts_with("PASS  iommu")),
        "{lines:#?}"
    );
    let intel = FakeHost::new(
        "intel-shared-rootport.tsv",
        Options {
            boot_vga: vec!["0000:01:00.0"],
            ..Options::default()
        },
    );
    let (_, lines) = check(&intel, &["01:00.0", "01:00.1"], "");
    assert!(
        lines.iter().any(|l| l.starts_with("PASS  iommu")),
        "the root port stays with the host: {lines:#?}"
    );
    let (code, lines) = check(&intel, &["01:00.0"], "");
    assert_eq!(code, 3);
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("group 1")
            && l.contains("0000:01:00.1 (10de:0fb9")),
        "{lines:#?}"
    );
}

#[test]
fn missing_devices_reset_and_boot_gpu_roms_are_reported() {
    let intel = FakeHost::new(
        "intel-shared-rootport.tsv",
        Options {
            boot_vga: vec!["0000:01:00.0"],
            no_reset: vec!["0000:01:00.1"],
            ..Options::default()
        },
    );
    let (code, lines) = check(&intel, &["01:00.0", "01:00.1", "05:00.0"], "");
    assert_eq!(code, 3);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAIL") && l.contains("0000:05:00.0 does not exist")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            // Without a reset of its own, the audio function goes with a reset of its bus,
            // every device of which the VM passes: said once, by the reset findings.
            .any(|l| l.starts_with("PASS  reset")
                && l.contains("0000:01:00.1 no reset method")
                && l.contains("reset of bus 0000:01")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("boot GPU") && l.contains("shadowed")),
        "{lines:#?}"
    );
    let no_iommu = FakeHost::new("intel-shared-rootport.tsv", Options::default());
    std::fs::remove_dir_all(no_iommu.root.join("sys/kernel/iommu_groups")).unwrap();
    let (_, lines) = check(&no_iommu, &["01:00.0"], "");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAIL  iommu") && l.contains("intel_iommu=on")),
        "{lines:#?}"
    );
}

#[test]
fn hugepages_are_counted_before_the_start() {
    let short = FakeHost::new(
        "intel-shared-rootport.tsv",
        Options {
            hugepages_2m: (100, 100),
            ..Options::default()
        },
    );
    let dir = crate::common::tempdir();
    std::fs::write(
        dir.path().join("vm.toml"),
        "[machine]\naccel = \"tcg\"\nmemory = \"1G\"\nhugepages = \"2M\"\n",
    )
    .unwrap();
    let check = |host: &FakeHost| {
        let (_, stdout, _) = run(crate::common::vmrun(dir.path())
            .env("VMRUN_SYSROOT", &host.root)
            .args(["check", "vm.toml", "--runtime-dir"])
            .arg(dir.path().join("run")));
        stdout
            .lines()
            .find(|l| l.contains(" hugepages "))
            .unwrap_or_default()
            .to_string()
    };
    let line = check(&short);
    assert!(
        line.starts_with("WARN")
            && line.contains("100 free 2M pages, 512 needed")
            && line.contains("hugepages=512"),
        "{line}"
    );
    let enough = FakeHost::new(
        "intel-shared-rootport.tsv",
        Options {
            hugepages_2m: (600, 600),
            ..Options::default()
        },
    );
    assert!(check(&enough).starts_with("PASS"), "{}", check(&enough));
}

fn findings(host: &FakeHost, profile: &str) -> Vec<(String, String, String)> {
    let dir = crate::common::tempdir();
    std::fs::write(dir.path().join("vm.toml"), profile).unwrap();
    let (_, stdout, stderr) = run(crate::common::vmrun(dir.path())
        .env("VMRUN_SYSROOT", &host.root)
        .args(["check", "vm.toml", "--json", "--runtime-dir"])
        .arg(dir.path().join("run")));
    check_findings(&stdout, &stderr)
}

fn about<'a>(
    all: &'a [(String, String, String)],
    check: &str,
) -> Vec<&'a (String, String, String)> {
    all.iter().filter(|f| f.0 == check).collect()
}

#[test]
fn interrupt_remapping_ignore_msrs_and_msi_are_judged() {
    let host = FakeHost::new("intel-shared-rootport.tsv", Options::default());
    let write = |path: &str, text: &str| {
        let path = host.root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let gpu = "[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n[[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n";
    write(
        "proc/interrupts",
        "           CPU0\n  0:   30   IO-APIC    2-edge      timer\n 24:    0   PCI-MSI 327680-edge   xhci_hcd\n",
    );
    let all = findings(&host, gpu);
    let irq = about(&all, "interrupts");
    assert!(
        irq.len() == 1
            && irq[0].1 == "warn"
            && irq[0]
                .2
                .contains("allow_unsafe_interrupts=1 works around it at a price"),
        "{all:#?}"
    );
    write(
        "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        "Y\n",
    );
    let all = findings(&host, gpu);
    assert!(
        about(&all, "interrupts")[0].2.contains("MSI injection"),
        "{all:#?}"
    );
    write(
        "proc/interrupts",
        "           CPU0\n  0:   30   IR-IO-APIC    2-edge      timer\n 24:    0   IR-PCI-MSI 327680-edge   xhci_hcd\n",
    );
    let all = findings(&host, gpu);
    assert_eq!(about(&all, "interrupts")[0].1, "pass", "{all:#?}");
    // Config space: the GPU lists MSI, its audio function only power management.
    let mut space = vec![0u8; 256];
    space[0x06] = 0x10;
    space[0x34] = 0x60;
    space[0x60] = 0x01;
    space[0x61] = 0x68;
    space[0x68] = 0x05;
    std::fs::write(
        host.root.join("sys/bus/pci/devices/0000:01:00.0/config"),
        &space,
    )
    .unwrap();
    space[0x68] = 0x10;
    std::fs::write(
        host.root.join("sys/bus/pci/devices/0000:01:00.1/config"),
        &space,
    )
    .unwrap();
    let all = findings(&host, gpu);
    let legacy: Vec<_> = about(&all, "interrupts")
        .into_iter()
        .filter(|f| f.2.contains("neither MSI nor MSI-X"))
        .collect();
    assert_eq!(legacy.len(), 1, "{all:#?}");
    assert!(legacy[0].2.starts_with("0000:01:00.1 "), "{legacy:?}");
    // A Windows guest (Hyper-V enlightenments) under KVM with ignore_msrs off.
    write("sys/module/kvm/parameters/ignore_msrs", "N\n");
    let windows = "[cpu]\nhyperv = true\n[firmware]\ntype = \"seabios\"\n";
    let all = findings(&host, windows);
    assert!(
        about(&all, "msrs")
            .first()
            .is_some_and(|f| f.1 == "warn" && f.2.contains("kvm.ignore_msrs=1")),
        "{all:#?}"
    );
    let linux = "[firmware]\ntype = \"seabios\"\n";
    assert!(about(&findings(&host, linux), "msrs").is_empty());
    write("sys/module/kvm/parameters/ignore_msrs", "Y\n");
    assert!(about(&findings(&host, windows), "msrs").is_empty());
}
