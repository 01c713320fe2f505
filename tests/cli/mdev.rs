//! `[[mdev]]` over a fake host whose Intel iGPU offers GVT-g types (Debian's kernels build no
//! mdev sample driver, so the fake kernel plays the mdev core): the types `check` lists, the
//! device created with the VM's stable UUID and its /dev/vfio node handed to QEMU's user, the
//! argv, removal after the run, after a crash by `vmrun recover` and by the next run, a missing
//! type and a type without instances, and the libvirt round trip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmrun::host::context::{HostContext, Timing, VmIdentity};
use vmrun::host::runner::SystemRunner;
use vmrun::host::session::HostSession;
use vmrun::host::steps::{self, HostStep};
use vmrun::host::{RealSysfs, Sysroot};
use vmrun::log::Log;
use vmrun::model::VmConfig;

use crate::common::{as_nobody, run, validate_text};
use crate::fake_host::{diff, FakeHost, Options};

const IGPU: &str = "0000:00:02.0";
const TYPES: &[(&str, &str, u32)] = &[
    ("i915-GVTg_V5_4", "GVTg_V5_4", 2),
    ("i915-GVTg_V5_8", "GVTg_V5_8", 1),
];
const GVT_DIR: &str = "sys/class/mdev_bus/0000:00:02.0/mdev_supported_types";

fn gvt_host() -> FakeHost {
    let host = FakeHost::new("intel-shared-rootport.tsv", Options::default()).with_kernel();
    host.add_mdev_parent(IGPU, TYPES);
    host
}

/// A profile of VM `gvt` with `mdevs` as its `[[mdev]]` tables.
fn profile_text(mdevs: &str) -> String {
    format!(
        "name = \"gvt\"\n[machine]\nmemory = \"128M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n\
         [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[display]\nvga = \"none\"\n\
         [shutdown]\ntimeout = 1\n{mdevs}"
    )
}

const ONE: &str = "[[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_4\"\n";
const TWO: &str = "[[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_4\"\n\
                   [[mdev]]\nparent = \"0000:00:02.0\"\ntype = \"i915-GVTg_V5_4\"\n";

/// The /dev/vfio node (relative to the fake root) of the mdev `uuid`'s IOMMU group: the node
/// vmrun hands to QEMU's user for the run.
fn vfio_node(host: &FakeHost, uuid: &str) -> String {
    let group = std::fs::read_link(
        host.root
            .join(format!("sys/bus/mdev/devices/{uuid}/iommu_group")),
    )
    .unwrap();
    format!("dev/vfio/{}", group.file_name().unwrap().to_string_lossy())
}

fn config(dir: &Path, mdevs: &str) -> VmConfig {
    as_nobody(
        validate_text(dir, "gvt", &profile_text(mdevs))
            .unwrap_or_else(|e| panic!("{e:#?}"))
            .0,
    )
}

struct Rig {
    root: Sysroot,
    sysfs: RealSysfs,
}

impl Rig {
    fn new(host: &FakeHost) -> Self {
        Rig {
            root: Sysroot::new(&host.root),
            sysfs: RealSysfs {
                root: Sysroot::new(&host.root),
            },
        }
    }

    fn session<'a>(&'a self, config: &VmConfig, journal: &Path) -> HostSession<'a> {
        let paths = vmrun::plan::VmPaths::new(
            &vmrun::plan::BaseDirs {
                state: journal.parent().unwrap().join("state"),
                runtime: journal.parent().unwrap().join("run"),
            },
            &config.name,
        )
        .unwrap();
        HostSession::new(
            HostContext {
                root: self.root.clone(),
                sysfs: &self.sysfs,
                runner: &SystemRunner,
                timing: Timing {
                    bind_timeout: Duration::from_millis(1500),
                    module_attempts: 2,
                    module_retry_delay: Duration::from_millis(10),
                    command_timeout: Duration::from_secs(10),
                },
                vm: VmIdentity {
                    name: config.name.to_string(),
                    profile: config.profile_path.clone(),
                },
            },
            steps::plan(config, &paths),
            journal,
        )
    }
}

fn log() -> Log {
    Log::new(0, true)
}

fn available(host: &FakeHost, kind: &str) -> String {
    host.read(&format!("{GVT_DIR}/{kind}/available_instances"))
}

#[test]
fn a_session_creates_the_devices_with_stable_uuids_hands_over_their_groups_and_removes_them() {
    let host = gvt_host();
    let dir = crate::common::tempdir();
    let config = config(dir.path(), TWO);
    let uuids: Vec<String> = config.mdev.iter().map(|m| m.uuid.clone()).collect();
    assert_eq!(
        uuids,
        config_uuids_again(dir.path()),
        "the same VM gets the same UUIDs"
    );
    assert_ne!(uuids[0], uuids[1]);
    let before = host.snapshot();
    let rig = Rig::new(&host);
    let session = rig.session(&config, &dir.path().join("journal"));
    let kinds: Vec<String> = session.steps().iter().map(HostStep::kind).collect();
    let create = kinds.iter().position(|k| k == "create_mdev").unwrap();
    let grant = kinds
        .iter()
        .position(|k| k == "grant_device_access")
        .unwrap();
    assert!(create < grant, "{kinds:?}");
    let shown = serde_json::to_value(&session.steps()[grant]).unwrap();
    assert_eq!(shown["mdev"], serde_json::json!(uuids));

    session.apply(&log()).unwrap();
    let mut sorted = uuids.clone();
    sorted.sort();
    assert_eq!(host.mdevs(), sorted);
    assert_eq!(available(&host, "i915-GVTg_V5_4"), "0");
    for uuid in &uuids {
        let node = vfio_node(&host, uuid);
        assert_eq!(
            host.owner(&node),
            Some((65534, 65534, 0o600)),
            "{node} is QEMU's user's for the run"
        );
    }
    let journal = std::fs::read_to_string(dir.path().join("journal")).unwrap();
    assert!(
        journal.contains(&format!(r#""undo":"remove_mdev","uuid":"{}""#, uuids[0])),
        "{journal}"
    );

    session.undo_all(&log()).unwrap();
    assert!(host.mdevs().is_empty());
    assert_eq!(available(&host, "i915-GVTg_V5_4"), "2");
    let after = host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "not restored:\n{}",
        diff(&before, &after).join("\n")
    );
}

fn config_uuids_again(dir: &Path) -> Vec<String> {
    let again = tempfile::tempdir_in(dir).unwrap();
    config(again.path(), TWO)
        .mdev
        .iter()
        .map(|m| m.uuid.clone())
        .collect()
}

fn write_profile(dir: &Path, mdevs: &str) -> PathBuf {
    let path = dir.join("gvt.toml");
    std::fs::write(&path, profile_text(mdevs)).unwrap();
    path
}

#[test]
fn recover_removes_what_a_crashed_run_left_and_the_next_run_starts_afresh() {
    let host = gvt_host();
    let dir = crate::common::tempdir();
    let profile = write_profile(dir.path(), ONE);
    let config = config(dir.path(), ONE);
    let before = host.snapshot();
    let rig = Rig::new(&host);
    // The run's journal where the real vmrun keeps it; vmrun "dies" after the host is prepared.
    let journal = dir.path().join("state/gvt/journal");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    rig.session(&config, &journal).apply(&log()).unwrap();
    assert_eq!(host.mdevs(), [config.mdev[0].uuid.clone()]);

    let (code, stdout, stderr) = run(host.vmrun(dir.path()).arg("recover").arg(&profile));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(host.mdevs().is_empty(), "{stderr}");
    assert!(
        diff(&before, &host.snapshot()).is_empty(),
        "{}",
        diff(&before, &host.snapshot()).join("\n")
    );
    assert!(host
        .kernel_log()
        .contains(&format!("mdev remove {}", config.mdev[0].uuid)));

    // A device with the VM's UUID that no journal names (the journal was lost): the next run
    // removes it before creating the device again, so the guest gets a fresh one.
    std::fs::remove_dir_all(dir.path().join("state")).ok();
    std::fs::write(
        host.root.join(format!("{GVT_DIR}/i915-GVTg_V5_4/create")),
        &config.mdev[0].uuid,
    )
    .unwrap();
    crate::common::wait_for("the fake kernel", Duration::from_secs(5), || {
        host.mdevs().len() == 1
    });
    let session = rig.session(&config, &dir.path().join("journal"));
    session.apply(&log()).unwrap();
    let kernel = host.kernel_log();
    let uuid = &config.mdev[0].uuid;
    let at = |line: &str| kernel.iter().rposition(|l| l == line).unwrap();
    assert!(
        at(&format!("mdev remove {uuid}")) < at(&format!("mdev create {uuid}")),
        "{kernel:?}"
    );
    assert_eq!(host.mdevs(), std::slice::from_ref(uuid));
    session.undo_all(&log()).unwrap();
    assert!(host.mdevs().is_empty());
}

#[test]
fn check_lists_the_types_and_fails_a_missing_type_or_too_few_instances() {
    let host = gvt_host();
    let dir = crate::common::tempdir();
    let check = |mdevs: &str| {
        let profile = write_profile(dir.path(), mdevs);
        let (_, stdout, stderr) = run(host.vmrun(dir.path()).arg("check").arg(&profile));
        let lines: Vec<String> = stdout
            .lines()
            .chain(stderr.lines())
            .filter(|l| l.contains("mdev"))
            .map(str::to_string)
            .collect();
        lines.join("\n")
    };
    let lines = check(TWO);
    assert!(lines.contains("PASS"), "{lines}");
    assert!(
        lines.contains("i915-GVTg_V5_4 (GVTg_V5_4, vfio-pci, 2 available): low_gm_size: 128MB"),
        "{lines}"
    );
    assert!(
        lines.contains("i915-GVTg_V5_8 (GVTg_V5_8, vfio-pci, 1 available)"),
        "{lines}"
    );
    assert!(!lines.contains("FAIL"), "{lines}");

    let lines = check(
        "[[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_8\"\n\
         [[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_8\"\n",
    );
    assert!(
        lines.contains("FAIL") && lines.contains("1 instance(s) left and the profile asks for 2"),
        "{lines}"
    );

    let lines = check("[[mdev]]\nparent = \"00:02.0\"\ntype = \"nvidia-63\"\n");
    assert!(
        lines.contains("FAIL")
            && lines.contains("has no type `nvidia-63`; its types: i915-GVTg_V5_4"),
        "{lines}"
    );
    let lines = check("[[mdev]]\nparent = \"01:00.0\"\ntype = \"i915-GVTg_V5_4\"\n");
    assert!(
        lines.contains("FAIL") && lines.contains("offers no mediated devices"),
        "{lines}"
    );
    // `run` refuses the same before it changes anything.
    let profile = write_profile(
        dir.path(),
        "[[mdev]]\nparent = \"00:02.0\"\ntype = \"nvidia-63\"\n",
    );
    let before = host.snapshot();
    let (code, _, stderr) = run(host.vmrun(dir.path()).arg("run").arg(&profile));
    assert_eq!(code, 3, "{stderr}");
    assert!(diff(&before, &host.snapshot()).is_empty());
}

#[test]
fn qemu_gets_each_device_by_its_sysfs_path_and_display_adds_ramfb() {
    let dir = crate::common::tempdir();
    let show = |mdevs: &str| {
        let profile = write_profile(dir.path(), mdevs);
        let (code, stdout, stderr) = run(crate::common::vmrun(dir.path())
            .args(["show", "--json"])
            .arg(&profile));
        assert_eq!(code, 0, "{stderr}");
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let argv: Vec<String> = json["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        (json, argv)
    };
    let uuids: Vec<String> = config(dir.path(), TWO)
        .mdev
        .iter()
        .map(|m| m.uuid.clone())
        .collect();
    let (json, argv) = show(TWO);
    for (index, uuid) in uuids.iter().enumerate() {
        let device = format!("vfio-pci,sysfsdev=/sys/bus/mdev/devices/{uuid},id=mdev{index}");
        assert!(argv.contains(&device), "{device} missing: {argv:?}");
    }
    let steps = json["host_steps"].as_array().unwrap();
    let created: Vec<&serde_json::Value> = steps
        .iter()
        .filter(|s| s["step"] == "create_mdev")
        .collect();
    assert_eq!(created.len(), 2);
    assert_eq!(created[0]["uuid"], uuids[0].as_str());
    assert_eq!(created[0]["type"], "i915-GVTg_V5_4");

    let (_, argv) = show(&format!("{ONE}display = true\n"));
    let uuid = &uuids[0];
    assert!(
        argv.contains(&format!(
            "vfio-pci-nohotplug,sysfsdev=/sys/bus/mdev/devices/{uuid},id=mdev0,display=on,ramfb=on,x-igd-opregion=on"
        )),
        "{argv:?}"
    );

    // Two displays, a type that is a path and a missing parent: profile errors, exit 2.
    let (code, _, stderr) = run(crate::common::vmrun(dir.path()).arg("show").arg(write_profile(
        dir.path(),
        "[[mdev]]\nparent = \"00:02.0\"\ntype = \"i915-GVTg_V5_4\"\ndisplay = true\n\
         [[mdev]]\nparent = \"00:02.0\"\ntype = \"../../x\"\ndisplay = true\n[[mdev]]\ntype = \"a\"\n\
         [[mdev]]\nparent = \"01:00.0\"\ntype = \"a\"\n[[pci]]\naddress = \"0000:01:00.0\"\n",
    )));
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "mdev[1].display: mdev[0] already has display = true",
        "mdev[1].type: `../../x` is not a type name",
        "mdev[2].parent: every [[mdev]] needs `parent`",
        "mdev[3].parent: 0000:01:00.0 is pci[0] too",
    ] {
        assert!(stderr.contains(expected), "{expected} missing:\n{stderr}");
    }
}

#[test]
fn export_then_import_keeps_the_mediated_devices() {
    let dir = crate::common::tempdir();
    let mdevs = format!("{TWO}display = true\n");
    let profile = write_profile(dir.path(), &mdevs);
    let (code, xml, stderr) = run(crate::common::vmrun(dir.path())
        .arg("--state-dir")
        .arg("/var/lib/vmrun")
        .args(["export", "libvirt"])
        .arg(&profile));
    assert_eq!(code, 0, "{stderr}");
    let original = config(dir.path(), &mdevs);
    for device in &original.mdev {
        assert!(
            xml.contains(&format!("<address uuid='{}'/>", device.uuid)),
            "{xml}"
        );
    }
    assert!(
        xml.contains("type='mdev' model='vfio-pci' display='on' ramfb='on'"),
        "{xml}"
    );
    let xml_path = dir.path().join("gvt.xml");
    std::fs::write(&xml_path, &xml).unwrap();
    // libvirt's own schema takes it (virt-xml-validate comes with libvirt-clients, which the
    // libvirt tests require on CI).
    if Path::new("/usr/bin/virt-xml-validate").exists() {
        let (code, stdout, stderr) = run(std::process::Command::new("virt-xml-validate")
            .arg(&xml_path)
            .arg("domain"));
        assert_eq!(code, 0, "{stdout}{stderr}\n{xml}");
    }
    let (code, imported, stderr) = run(crate::common::vmrun(dir.path())
        .args(["import", "libvirt"])
        .arg(&xml_path));
    assert_eq!(code, 0, "{stderr}");
    let back = tempfile::tempdir_in(dir.path()).unwrap();
    let (round_trip, _) = validate_text(back.path(), "gvt", &imported).unwrap();
    assert_eq!(round_trip.mdev, original.mdev, "{imported}");

    // An mdev hostdev that vmrun did not write: noted, not guessed.
    let foreign = xml.replace(
        &format!("<address uuid='{}'/>", original.mdev[0].uuid),
        "<address uuid='c0ffee00-0000-4000-8000-000000000000'/>",
    );
    std::fs::write(&xml_path, foreign).unwrap();
    let (code, imported, stderr) = run(crate::common::vmrun(dir.path())
        .args(["import", "libvirt"])
        .arg(&xml_path));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        imported.contains("c0ffee00-0000-4000-8000-000000000000"),
        "{imported}"
    );
}

/// Real QEMU without the mediated devices: they exist only in the fake sysfs.
const QEMU_WITHOUT_MDEV: &str = r#"#!/bin/bash
args=()
while [ $# -gt 0 ]; do
    if [ "$1" = "-device" ] && [[ "$2" == vfio-pci,sysfsdev=* ]]; then shift 2; continue; fi
    args+=("$1"); shift
done
exec qemu-system-x86_64 "${args[@]}"
"#;

/// Stops the VM when the test ends, passed or failed.
struct Running<'a> {
    host: &'a FakeHost,
    dir: &'a Path,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = run(self
            .host
            .vmrun(self.dir)
            .args(["stop", "gvt", "--force", "--timeout", "1"]));
    }
}

#[test]
fn run_creates_the_device_for_qemu_and_stop_removes_it() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "QEMU runs as nobody with the device's node handed over: run as root (CI does)"
    );
    let host = gvt_host();
    let dir = crate::common::tempdir();
    let wrapper = dir.path().join("qemu-without-mdev");
    std::fs::write(&wrapper, QEMU_WITHOUT_MDEV).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Read first: `config` writes its own gvt.toml.
    let uuid = config(dir.path(), ONE).mdev[0].uuid.clone();
    let profile = write_profile(
        dir.path(),
        &format!("{ONE}[qemu]\nbinary = \"{}\"\n", wrapper.display()),
    );
    let before = host.snapshot();
    let (code, _, stderr) = run(host
        .vmrun(dir.path())
        .arg("run")
        .arg(&profile)
        .arg("--detach"));
    let running = Running {
        host: &host,
        dir: dir.path(),
    };
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(host.mdevs(), std::slice::from_ref(&uuid));
    let node = vfio_node(&host, &uuid);
    assert_eq!(
        host.owner(&node),
        Some((65534, 65534, 0o600)),
        "QEMU's user's"
    );
    let argv = std::fs::read_to_string(format!(
        "/proc/{}/cmdline",
        std::fs::read_to_string(dir.path().join("run/gvt/qemu.pid"))
            .unwrap()
            .trim()
    ))
    .unwrap_or_default();
    assert!(!argv.is_empty(), "QEMU runs");

    let (code, _, stderr) = run(host.vmrun(dir.path()).args(["stop", "gvt"]));
    drop(running);
    assert_eq!(
        code, 5,
        "SeaBIOS ignores ACPI, so the stop is forced: {stderr}"
    );
    assert!(host.mdevs().is_empty());
    assert!(
        diff(&before, &host.snapshot()).is_empty(),
        "not restored:\n{}",
        diff(&before, &host.snapshot()).join("\n")
    );
    assert!(host.kernel_log().contains(&format!("mdev remove {uuid}")));
}
