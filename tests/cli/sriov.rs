//! `[[pci]] pf` + `vf` through the real `vmrun`: the profile's rules, the VF's address
//! resolved from a fake host's PF (and an error at the profile's line when it cannot be), the
//! plan, `vmrun iommu` and the libvirt round trip. The step itself (VFs made, bound, counted
//! across VMs, given back, recovered) is tested on a fake kernel in `src/host/steps/sriov.rs`.

use std::path::Path;

use crate::common::{expect_error, line_of, run, validate_text, vmrun};

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
        "[[pci]]\npf = \"03:00.0\"\nvf = 0\nrescan = true #<\n",
        "pci[0].rescan",
        "cannot be removed and rescanned",
    );
    expect_error(
        "[[pci]]\npf = \"03:00.0\"\nvf = -1 #<\n",
        "pci[0].vf",
        "out of range",
    );
    expect_error(
        "[[pci]]\npf = \"03:00.0\"\nvf = 1\n[[pci]]\npf = \"0000:03:00.0\"\nvf = 1 #<\n",
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
fn a_pf_passed_next_to_its_own_vf_is_a_profile_error() {
    let dir = crate::common::tempdir();
    let root = sriov_root(dir.path());
    // Binding the PF to vfio-pci would disable SR-IOV and destroy the VF.
    let text = "[[pci]]\naddress = \"03:00.0\"\n[[pci]]\npf = \"0000:03:00.0\" #<\nvf = 0\n";
    let (code, _, stderr) = show(&root, dir.path(), text);
    assert_eq!(code, 2, "{stderr}");
    let line = line_of(text, "#<");
    assert!(
        stderr.contains(&format!(
            "vfvm.toml:{line}: pci[1].pf: 0000:03:00.0 is pci[0] too: binding a PF to vfio-pci \
             disables SR-IOV and destroys its VFs; remove the [[pci]] that passes the PF, or this VF"
        )),
        "{stderr}"
    );
    // Another VF of that PF passed by `address` leaves the PF alone: allowed.
    let text = "[[pci]]\naddress = \"03:10.0\"\n[[pci]]\npf = \"03:00.0\"\nvf = 1\n";
    let (code, _, stderr) = show(&root, dir.path(), text);
    assert_eq!(code, 0, "{stderr}");
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

/// Real `vmrun run` on the fake igb host: QEMU is real, started through a wrapper that drops
/// the vfio-pci devices (no real VF stands behind the fake sysfs).
mod runs {
    use std::path::PathBuf;
    use std::time::Duration;

    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    use crate::common::{run, wait_for};
    use crate::fake_host::{diff, FakeHost, Options};

    const QEMU_WITHOUT_VFIO: &str = "#!/bin/bash\nargs=()\nwhile [ $# -gt 0 ]; do\n\
        if [ \"$1\" = \"-device\" ] && [[ \"$2\" == vfio-pci,* ]]; then shift 2; continue; fi\n\
        args+=(\"$1\"); shift\ndone\nexec qemu-system-x86_64 \"${args[@]}\"\n";

    struct Bed {
        host: FakeHost,
        dir: crate::common::TestDir,
    }

    /// The running VMs' names, stopped (forced) when the test ends, failed or not.
    struct Running<'a>(&'a Bed, Vec<&'static str>);

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            for name in &self.1 {
                let _ = run(self.0.host.vmrun(self.0.dir.path()).args(["stop", name]));
            }
        }
    }

    fn bed() -> Bed {
        crate::common::require_root();
        let host = FakeHost::new(
            "igb-sriov.tsv",
            Options {
                sriov: vec![("0000:03:00.0", "enp3s0")],
                ..Options::default()
            },
        )
        .with_kernel();
        let dir = crate::common::tempdir();
        let wrapper = dir.path().join("qemu-without-vfio");
        std::fs::write(&wrapper, QEMU_WITHOUT_VFIO).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Bed { host, dir }
    }

    impl Bed {
        fn profile(&self, name: &str, vf: &str) -> PathBuf {
            let path = self.dir.path().join(format!("{name}.toml"));
            std::fs::write(
                &path,
                format!(
                    "[machine]\nmemory = \"128M\"\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n\
                     [network]\nmode = \"none\"\n[display]\nvga = \"none\"\n\
                     [[pci]]\npf = \"0000:03:00.0\"\n{vf}\n[shutdown]\ntimeout = 1\n\
                     [qemu]\nbinary = \"{}\"\n",
                    self.dir.path().join("qemu-without-vfio").display()
                ),
            )
            .unwrap();
            path
        }

        fn vmrun(&self) -> std::process::Command {
            self.host.vmrun(self.dir.path())
        }

        fn numvfs(&self) -> String {
            self.host
                .read("sys/bus/pci/devices/0000:03:00.0/sriov_numvfs")
        }

        fn start(&self, profile: &PathBuf) {
            let (code, _, stderr) = run(self.vmrun().arg("run").arg(profile).arg("--detach"));
            assert_eq!(code, 0, "{stderr}");
        }

        fn log(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.path().join(format!("state/{name}/vmrun.log")))
                .unwrap_or_default()
        }
    }

    #[test]
    fn a_vf_is_made_unprobed_bound_passed_and_everything_given_back_after_stop() {
        let bed = bed();
        let before = bed.host.snapshot();
        let profile = bed.profile("vfa", "vf = 1\nmac = \"52:54:00:3a:1b:7d\"\nvlan = 100");
        let (_, stdout, stderr) = run(bed.vmrun().arg("check").arg(&profile));
        for finding in [
            "0000:03:00.0 (driver igb): SR-IOV with 0 of 7 VFs made (sriov_numvfs), 0 bound to a driver, 0 free, 7 more can be made",
            "pci 0000:03:00.0 vf 1: 0000:03:10.2 will be made (sriov_numvfs 0 -> 2), then bound to vfio-pci",
        ] {
            assert!(stdout.contains(finding), "{finding:?} missing:\n{stdout}{stderr}");
        }
        let no_ip = "`ip` is not on PATH: vmrun sets a VF's `mac` and `vlan`";
        assert!(!stdout.contains(no_ip), "the stub ip is on PATH:\n{stdout}");
        // A host without iproute2 is told before the run, not when `ip` fails halfway through.
        let empty = bed.dir.path().join("no-programs");
        std::fs::create_dir(&empty).unwrap();
        let (code, stdout, stderr) =
            run(bed.vmrun().env("PATH", &empty).arg("check").arg(&profile));
        assert_eq!(code, 3, "{stdout}{stderr}");
        assert!(stdout.contains(no_ip), "{stdout}{stderr}");
        let mut running = Running(&bed, vec![]);
        bed.start(&profile);
        running.1.push("vfa");
        assert_eq!(bed.numvfs(), "2");
        assert_eq!(bed.host.driver("0000:03:10.2").as_deref(), Some("vfio-pci"));
        assert_eq!(
            bed.host.driver("0000:03:10.0"),
            None,
            "autoprobe was off while the VFs appeared, so igbvf did not take VF 0"
        );
        let autoprobe = || {
            bed.host
                .read("sys/bus/pci/devices/0000:03:00.0/sriov_drivers_autoprobe")
        };
        assert_eq!(
            autoprobe(),
            "0",
            "off while the VM runs: a VF driver loaded now must not take the VFs"
        );
        assert!(bed
            .host
            .calls()
            .contains(&"ip link set dev enp3s0 vf 1 mac 52:54:00:3a:1b:7d vlan 100".to_string()));
        let (code, _, stderr) = run(bed.vmrun().args(["stop", "vfa"]));
        assert_eq!(
            code, 5,
            "SeaBIOS ignores ACPI, so the stop is forced: {stderr}"
        );
        running.1.clear();
        assert_eq!(autoprobe(), "1", "back after the stop");
        assert!(bed
            .host
            .calls()
            .contains(&"ip link set dev enp3s0 vf 1 mac 00:00:00:00:00:00 vlan 0".to_string()));
        let after = bed.host.snapshot();
        assert!(
            diff(&before, &after).is_empty(),
            "not restored:\n{}",
            diff(&before, &after).join("\n")
        );
        let log = bed.log("vfa");
        for line in [
            "creating VFs on 0000:03:00.0: sriov_numvfs 0 -> 2 (host drivers do not probe them)",
            "binding 0000:03:10.2 to vfio-pci (was unbound)",
            "restoring sriov_numvfs of 0000:03:00.0: 2 -> 0",
        ] {
            assert!(log.contains(line), "{line:?} missing:\n{log}");
        }
    }

    #[test]
    fn kill_9_then_recover_sets_the_count_back() {
        let bed = bed();
        let before = bed.host.snapshot();
        let profile = bed.profile("vfa", "vf = 0");
        let mut running = Running(&bed, vec![]);
        bed.start(&profile);
        running.1.push("vfa");
        assert_eq!(bed.numvfs(), "1");
        let supervisor: i32 = std::fs::read_to_string(bed.dir.path().join("run/vfa/lock"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let qemu: u32 = std::fs::read_to_string(bed.dir.path().join("run/vfa/qemu.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        kill(Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
        // QEMU dies with its supervisor (parent-death signal).
        wait_for("QEMU to go", Duration::from_secs(10), || {
            !vmrun::run::state::process_alive(qemu, "qemu")
        });
        running.1.clear();
        assert_eq!(bed.numvfs(), "1", "nothing was undone");
        assert_eq!(
            bed.host
                .read("sys/bus/pci/devices/0000:03:00.0/sriov_drivers_autoprobe"),
            "0"
        );
        let (code, _, stderr) = run(bed.vmrun().args(["recover", "vfa"]));
        assert_eq!(code, 0, "{stderr}");
        let after = bed.host.snapshot();
        assert!(
            diff(&before, &after).is_empty(),
            "recover left:\n{}",
            diff(&before, &after).join("\n")
        );
    }

    #[test]
    fn two_vms_share_a_pf_and_the_last_one_sets_the_count_back() {
        let bed = bed();
        let before = bed.host.snapshot();
        let a = bed.profile("vfa", "vf = 1");
        let b = bed.profile("vfb", "vf = 0");
        let mut running = Running(&bed, vec![]);
        bed.start(&a);
        running.1.push("vfa");
        bed.start(&b);
        running.1.push("vfb");
        assert_eq!(bed.numvfs(), "2");
        assert_eq!(bed.host.driver("0000:03:10.0").as_deref(), Some("vfio-pci"));
        assert_eq!(bed.host.driver("0000:03:10.2").as_deref(), Some("vfio-pci"));
        assert!(bed
            .log("vfb")
            .contains("0000:03:00.0 has 2 VFs (sriov_numvfs); VF 0 needs 1"));
        // A third VM whose VF needs a higher count would have to destroy both.
        let c = bed.profile("vfc", "vf = 4");
        let (code, _, stderr) = run(bed.vmrun().arg("run").arg(&c).arg("--detach"));
        assert_ne!(code, 0);
        assert!(
            stderr.contains("only through 0") && stderr.contains("VF 0 0000:03:10.0 (on vfio-pci)"),
            "{stderr}"
        );
        assert_eq!(run(bed.vmrun().args(["stop", "vfa"])).0, 5);
        assert_eq!(bed.numvfs(), "2", "B still uses VF 0");
        assert_eq!(bed.host.driver("0000:03:10.0").as_deref(), Some("vfio-pci"));
        assert!(bed
            .log("vfa")
            .contains("leaving sriov_numvfs of 0000:03:00.0 as it is: VM vfb still uses its VFs"));
        assert_eq!(run(bed.vmrun().args(["stop", "vfb"])).0, 5);
        running.1.clear();
        assert_eq!(bed.numvfs(), "0");
        // vfio-pci, loaded by A, stays: B's VF was on it when A stopped, and B did not load it
        // (the modules step's own rule).
        let left: Vec<String> = diff(&before, &bed.host.snapshot())
            .into_iter()
            .filter(|line| !line.contains("vfio-pci") && !line.contains("vfio_pci"))
            .collect();
        assert!(left.is_empty(), "not restored:\n{}", left.join("\n"));
    }
}
