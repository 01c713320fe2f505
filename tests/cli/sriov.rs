//! `[[pci]] pf` + `vf` through the real `vmrun`: the profile's rules, the VF's address
//! resolved from a fake host's PF (and an error at the profile's line when it cannot be), the
//! plan, `vmrun iommu` and the libvirt round trip. The step itself (VFs made, bound, counted
//! across VMs, given back, recovered) is tested on a fake kernel in `src/host/steps/sriov.rs`.

use std::path::Path;

use crate::common::{line_of, run, validate_text, vmrun};
use vmrun::profile::Severity;

const PF: &str = "0000:03:00.0";

/// A host root with an igb-like PF at 03:00.0 (7 VFs at most, offset 0x80, stride 2) whose
/// VF 0 exists at 03:10.0 in IOMMU group 21.
fn sriov_root(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("root");
    let pf = root.join(format!("sys/bus/pci/devices/{PF}"));
    let vf = root.join("sys/bus/pci/devices/0000:03:10.0");
    for (device, files) in [
        (
            &pf,
            &[
                ("vendor", "0x8086"),
                ("device", "0x10c9"),
                ("class", "0x020000"),
                ("sriov_totalvfs", "7"),
                ("sriov_numvfs", "1"),
                ("sriov_offset", "128"),
                ("sriov_stride", "2"),
            ][..],
        ),
        (
            &vf,
            &[
                ("vendor", "0x8086"),
                ("device", "0x10ca"),
                ("class", "0x020000"),
            ][..],
        ),
    ] {
        std::fs::create_dir_all(device).unwrap();
        for (name, value) in files {
            std::fs::write(device.join(name), format!("{value}\n")).unwrap();
        }
    }
    for (group, device, address) in [(20, &pf, PF), (21, &vf, "0000:03:10.0")] {
        let members = root.join(format!("sys/kernel/iommu_groups/{group}/devices"));
        std::fs::create_dir_all(&members).unwrap();
        std::os::unix::fs::symlink(
            format!("../../../../bus/pci/devices/{address}"),
            members.join(address),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            format!("../../../kernel/iommu_groups/{group}"),
            device.join("iommu_group"),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("../0000:03:10.0", pf.join("virtfn0")).unwrap();
    std::os::unix::fs::symlink(format!("../{PF}"), vf.join("physfn")).unwrap();
    root
}

fn expect_error(text: &str, key: &str, says: &str) {
    let dir = crate::common::tempdir();
    let line = line_of(text, "#<");
    let found = match validate_text(dir.path(), "t", text) {
        Ok((_, warnings)) => warnings,
        Err(errors) => errors,
    };
    assert!(
        found.iter().any(|d| d.key == key
            && d.line == Some(line)
            && d.severity == Severity::Error
            && d.message.contains(says)),
        "expected an error for `{key}` on line {line} saying {says:?}; got {found:#?}"
    );
}

#[test]
fn pf_and_vf_follow_their_rules() {
    expect_error(
        "[[pci]]\naddress = \"01:00.0\"\npf = \"03:00.0\" #<\nvf = 0\n",
        "pci[0].pf",
        "two ways to name the device",
    );
    expect_error(
        "[[pci]] #<\npf = \"03:00.0\"\n",
        "pci[0].vf",
        "`pf` needs `vf`",
    );
    expect_error(
        "[[pci]] #<\nvf = 1\n",
        "pci[0].address",
        "or `pf` with `vf`",
    );
    expect_error(
        "[[pci]]\naddress = \"01:00.0\"\nvlan = 5 #<\n",
        "pci[0].vlan",
        "write `pf` instead of `address`",
    );
    expect_error(
        "[[pci]]\naddress = \"01:00.0\"\nmac = \"52:54:00:00:00:01\" #<\n",
        "pci[0].mac",
        "belongs to a virtual function",
    );
    expect_error(
        "[[pci]]\npf = \"03:00.0\"\nvf = 0\nvlan = 4095 #<\n",
        "pci[0].vlan",
        "use 1 to 4094",
    );
    expect_error(
        "[[pci]]\npf = \"03:00.0\"\nvf = 0\nmac = \"01:00:5e:00:00:01\" #<\n",
        "pci[0].mac",
        "multicast",
    );
    expect_error(
        "[[pci]]\npf = \"03:00.0\"\nvf = -1 #<\n",
        "pci[0].vf",
        "out of range",
    );
    expect_error(
        "[[pci]]\npf = \"03:00.0\"\nvf = 1\n[[pci]]\npf = \"0000:03:00.0\" #<\nvf = 1\n",
        "pci[1].vf",
        "is VF 1 of 0000:03:00.0 already",
    );
}

fn show(root: &Path, dir: &Path, text: &str) -> (i32, String, String) {
    let path = dir.join("vfvm.toml");
    std::fs::write(&path, text).unwrap();
    run(vmrun(dir)
        .env("VMRUN_SYSROOT", root)
        .args(["show", "--json"])
        .arg(&path))
}

#[test]
fn the_vf_address_comes_from_the_pf_and_a_vf_it_cannot_have_is_a_profile_error() {
    let dir = crate::common::tempdir();
    let root = sriov_root(dir.path());
    let (code, stdout, stderr) = show(
        &root,
        dir.path(),
        "[[pci]]\npf = \"03:00.0\"\nvf = 2\nmac = \"52:54:00:3a:1b:7d\"\nvlan = 100\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let argv = crate::common::shown_argv(&json);
    assert!(
        argv.iter()
            .any(|a| a.starts_with("vfio-pci,host=0000:03:10.4")),
        "{argv:?}"
    );
    let kinds: Vec<&str> = json["host_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    let create = kinds.iter().position(|k| *k == "create_sriov_vfs").unwrap();
    let bind = kinds.iter().position(|k| *k == "bind_vfio").unwrap();
    assert!(create < bind, "{kinds:?}");
    let step = &json["host_steps"][create];
    assert_eq!(step["pf"], PF);
    assert_eq!(step["vfs"][0]["address"], "0000:03:10.4");
    assert_eq!(step["vfs"][0]["mac"], "52:54:00:3a:1b:7d");
    assert_eq!(step["vfs"][0]["vlan"], 100);

    let text = "[machine]\nmemory = \"1G\"\n[[pci]]\npf = \"03:00.0\"\nvf = 7 #<\n";
    let (code, _, stderr) = show(&root, dir.path(), text);
    assert_eq!(code, 2, "{stderr}");
    let line = line_of(text, "#<");
    assert!(
        stderr.contains(&format!(
            "vfvm.toml:{line}: pci[0].vf: 0000:03:00.0 has 7 virtual functions"
        )),
        "{stderr}"
    );
    let text = "[[pci]]\npf = \"03:00.1\" #<\nvf = 0\n";
    let (code, _, stderr) = show(&root, dir.path(), text);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("vfvm.toml:2: pci[0].pf: 0000:03:00.1 does not exist"),
        "{stderr}"
    );
    std::fs::remove_file(root.join(format!("sys/bus/pci/devices/{PF}/sriov_totalvfs"))).unwrap();
    let (code, _, stderr) = show(&root, dir.path(), "[[pci]]\npf = \"03:00.0\"\nvf = 0\n");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("vfvm.toml:2: pci[0].pf: 0000:03:00.0 has no SR-IOV capability"),
        "{stderr}"
    );
}

#[test]
fn iommu_lists_the_vfs_under_their_pf() {
    let dir = crate::common::tempdir();
    let root = sriov_root(dir.path());
    let (code, stdout, stderr) = run(vmrun(dir.path())
        .env("VMRUN_SYSROOT", &root)
        .args(["iommu"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("      SR-IOV: 1 of 7 VFs: VF 0 0000:03:10.0\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("      SR-IOV virtual function of 0000:03:00.0\n"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run(vmrun(dir.path())
        .env("VMRUN_SYSROOT", &root)
        .args(["iommu", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let groups: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let pf = &groups[0]["devices"][0];
    assert_eq!(pf["address"], PF);
    assert_eq!(pf["total_vfs"], 7);
    assert_eq!(pf["virtfns"], serde_json::json!(["0000:03:10.0"]));
    assert_eq!(groups[1]["devices"][0]["physfn"], PF);
    assert!(pf.get("physfn").is_none(), "{pf}");
}

#[test]
fn a_vf_survives_export_then_import() {
    let dir = crate::common::tempdir();
    let root = sriov_root(dir.path());
    // In host address order, the order the export gives passed devices in.
    let text = "[machine]\nmemory = \"1G\"\n[cpu]\ncores = 2\nthreads = 1\n\
                [firmware]\ntype = \"seabios\"\n[[pci]]\npf = \"03:00.0\"\nvf = 0\n\
                [[pci]]\npf = \"03:00.0\"\nvf = 2\nmac = \"52:54:00:3a:1b:7d\"\nvlan = 100\n";
    let path = dir.path().join("vfvm.toml");
    std::fs::write(&path, text).unwrap();
    let (code, xml, stderr) = run(vmrun(dir.path())
        .env("VMRUN_SYSROOT", &root)
        .args(["export", "libvirt"])
        .arg(&path));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        xml.contains("<vmrun:pci address='0000:03:10.4' pf='0000:03:00.0' vf='2' mac='52:54:00:3a:1b:7d' vlan='100'/>"),
        "{xml}"
    );
    assert!(
        xml.contains("bus='0x03' slot='0x10' function='0x4'"),
        "{xml}"
    );
    assert!(xml.contains("sriov_numvfs"), "{xml}");
    let xml_path = dir.path().join("vfvm.xml");
    std::fs::write(&xml_path, &xml).unwrap();
    let (code, imported, stderr) =
        run(vmrun(dir.path()).args(["import", "libvirt"]).arg(&xml_path));
    assert_eq!(code, 0, "{stderr}");
    let source = vmrun::profile::ProfileSource::read(&path).unwrap();
    let raw = vmrun::model::parse(&source).unwrap();
    let (mut original, _) = vmrun::model::validate(&source, &raw).unwrap();
    let (mut round_trip, _) = validate_text(dir.path(), "vfvm", &imported).unwrap();
    original.profile_path = Default::default();
    round_trip.profile_path = Default::default();
    assert_eq!(round_trip, original, "{imported}");
}
