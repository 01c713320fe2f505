//! `[[pci]] reset_method` and vendor-reset over the fake host, with the real `vmrun` (and real
//! QEMU, without the vfio devices: see `host_e2e`): what `check` says of each function's reset,
//! the methods written for the run and given back byte for byte after `stop` and after `kill -9`
//! + `recover`, vendor_reset loaded with `device_specific` selected and unloaded after.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{check_findings, run, wait_for};
use crate::fake_host::{diff, FakeHost, Options};

/// The running kernel's release in the fake tree, and where dkms installs vendor-reset for it.
const RELEASE: &str = "6.1.0-28-amd64";
const VENDOR_RESET_KO: &str = "lib/modules/6.1.0-28-amd64/updates/dkms/vendor-reset.ko.xz";

fn put(host: &FakeHost, path: &str, bytes: &str) {
    let path = host.root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn reset_method(host: &FakeHost, address: &str) -> Vec<u8> {
    std::fs::read(
        host.root
            .join(format!("sys/bus/pci/devices/{address}/reset_method")),
    )
    .unwrap()
}

/// The Polaris host as a current kernel shows it, with `reset_method` on both functions.
fn polaris() -> FakeHost {
    let host = FakeHost::new("amd-polaris.tsv", Options::default()).with_kernel();
    put(&host, "proc/sys/kernel/osrelease", &format!("{RELEASE}\n"));
    put(
        &host,
        "sys/bus/pci/devices/0000:0b:00.0/reset_method",
        "pm\n",
    );
    put(
        &host,
        "sys/bus/pci/devices/0000:0b:00.1/reset_method",
        "flr\n",
    );
    host
}

/// A profile passing `pci` (address, extra keys) with QEMU behind the wrapper that drops the
/// vfio devices; returns its path.
fn profile(dir: &Path, name: &str, pci: &[(&str, &str)]) -> std::path::PathBuf {
    let devices: String = pci
        .iter()
        .map(|(address, extra)| format!("[[pci]]\naddress = \"{address}\"\n{extra}"))
        .collect();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[machine]\nmemory = \"128M\"\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n\
             [network]\nmode = \"none\"\n[display]\nvga = \"none\"\n[shutdown]\ntimeout = 1\n\
             [qemu]\nbinary = \"{}\"\n{devices}",
            crate::host_e2e::wrapper(dir).display()
        ),
    )
    .unwrap();
    path
}

/// `check --json`'s findings named `reset`: (status, message).
fn reset_findings(host: &FakeHost, dir: &Path, profile: &Path) -> Vec<(String, String)> {
    let (_, stdout, stderr) = run(host.vmrun(dir).args(["check", "--json"]).arg(profile));
    check_findings(&stdout, &stderr)
        .into_iter()
        .filter(|(check, _, _)| check == "reset")
        .map(|(_, status, message)| (status, message))
        .collect()
}

#[test]
fn check_warns_of_a_polaris_card_without_vendor_reset_and_passes_it_once_installed() {
    let host = polaris();
    let dir = crate::common::tempdir();
    let vm = profile(dir.path(), "rx580", &[("0b:00.0", ""), ("0b:00.1", "")]);
    let found = reset_findings(&host, dir.path(), &vm);
    assert!(
        found.contains(&("pass".into(), "0000:0b:00.0 reset methods: pm".into())),
        "{found:#?}"
    );
    let warnings: Vec<&String> = found
        .iter()
        .filter(|(status, _)| status == "warn")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(warnings.len(), 1, "{found:#?}");
    assert!(
        warnings[0]
            .starts_with("0000:0b:00.0 is an AMD Polaris 10 GPU, which has the AMD reset bug")
            && warnings[0].contains(&format!(
                "neither loaded nor installed for this kernel ({RELEASE})"
            )),
        "{}",
        warnings[0]
    );
    put(&host, VENDOR_RESET_KO, "");
    let found = reset_findings(&host, dir.path(), &vm);
    assert!(
        found.iter().all(|(status, _)| status == "pass"),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|(_, m)| m.contains(
            "vendor_reset is installed: vmrun loads it for the run (and unloads it after); vmrun \
             selects device_specific for the run"
        )),
        "{found:#?}"
    );
}

#[test]
fn check_names_the_devices_a_bus_reset_would_take_from_the_host() {
    // The GTX 1660's four functions share bus 01; the audio function has no reset of its own.
    let host = FakeHost::new(
        "i9-gtx1660.tsv",
        Options {
            no_reset: vec!["0000:01:00.1"],
            ..Options::default()
        },
    );
    let dir = crate::common::tempdir();
    let two = profile(dir.path(), "two", &[("01:00.0", ""), ("01:00.1", "")]);
    let found = reset_findings(&host, dir.path(), &two);
    let warnings: Vec<&String> = found
        .iter()
        .filter(|(status, _)| status == "warn")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(warnings.len(), 1, "{found:#?}");
    assert!(
        warnings[0].starts_with("0000:01:00.1 no reset method: its only reset is a reset of bus 0000:01")
            && warnings[0].contains("0000:01:00.2 (10de:1aec, xhci_hcd), 0000:01:00.3 (10de:1aed, nvidia-gpu) stay with the host"),
        "{}",
        warnings[0]
    );
    let all = profile(
        dir.path(),
        "all",
        &[
            ("01:00.0", ""),
            ("01:00.1", ""),
            ("01:00.2", ""),
            ("01:00.3", ""),
        ],
    );
    let found = reset_findings(&host, dir.path(), &all);
    assert!(
        found.iter().all(|(status, _)| status == "pass"),
        "{found:#?}"
    );
}

#[test]
fn a_method_the_device_does_not_offer_is_refused_before_anything_changes() {
    let host = polaris();
    let dir = crate::common::tempdir();
    let vm = profile(
        dir.path(),
        "rx580",
        &[("0b:00.0", "reset_method = \"flr bus\"\n"), ("0b:00.1", "")],
    );
    let before = host.snapshot();
    let (code, _, stderr) = run(host.vmrun(dir.path()).arg("run").arg(&vm));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(
            "0000:0b:00.0 does not offer the reset methods flr, bus (reset_method = \"flr bus\"); it offers: pm"
        ),
        "{stderr}"
    );
    assert!(host.calls().is_empty(), "{:?}", host.calls());
    assert!(diff(&before, &host.snapshot()).is_empty());
    // A kernel before 5.15 (no reset_method at all) cannot take the key either.
    std::fs::remove_file(
        host.root
            .join("sys/bus/pci/devices/0000:0b:00.0/reset_method"),
    )
    .unwrap();
    let found = reset_findings(&host, dir.path(), &vm);
    assert!(
        found.iter().any(|(status, m)| status == "fail"
            && m.contains("no reset_method attribute (Linux 5.15 added it)")),
        "{found:#?}"
    );
}

#[test]
fn reset_method_is_written_for_the_run_and_restored_after_stop_and_after_kill_9_and_recover() {
    let host = FakeHost::new("b550-ryzen5800x.tsv", Options::default()).with_kernel();
    let (gpu, audio) = ("0000:08:00.0", "0000:08:00.1");
    put(
        &host,
        &format!("sys/bus/pci/devices/{gpu}/reset_method"),
        "flr bus\n",
    );
    put(
        &host,
        &format!("sys/bus/pci/devices/{audio}/reset_method"),
        "flr\n",
    );
    let dir = crate::common::tempdir();
    let vm = profile(
        dir.path(),
        "nic",
        &[
            ("08:00.0", "reset_method = \"bus\"\n"),
            ("08:00.1", "reset_method = \"flr\"\n"),
        ],
    );
    let vmrun = || host.vmrun(dir.path());
    let before = host.snapshot();

    let (code, _, stderr) = run(vmrun().arg("run").arg(&vm).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reset_method(&host, gpu), b"bus");
    assert_eq!(
        reset_method(&host, audio),
        b"flr\n",
        "already so: left alone"
    );
    let journal = std::fs::read_to_string(dir.path().join("state/nic/journal")).unwrap();
    assert_eq!(
        journal.matches(r#""undo":"restore_reset_method""#).count(),
        1,
        "{journal}"
    );
    assert!(journal.contains(r#""value":"flr bus\n""#), "{journal}");
    assert_eq!(run(vmrun().args(["stop", "nic"])).0, 5);
    assert_eq!(
        reset_method(&host, gpu),
        b"flr bus\n",
        "byte for byte after stop"
    );
    assert!(diff(&before, &host.snapshot()).is_empty());

    // kill -9 of vmrun while the guest runs, then recover.
    let mut child = vmrun()
        .arg("run")
        .arg(&vm)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the VM to run", Duration::from_secs(20), || {
        run(vmrun().args(["status", "nic"])).0 == 0
    });
    let qemu: u32 = std::fs::read_to_string(dir.path().join("run/nic/qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    wait_for("QEMU to go", Duration::from_secs(10), || {
        !vmrun::run::state::process_alive(qemu, "qemu")
    });
    assert_eq!(
        reset_method(&host, gpu),
        b"bus",
        "still the run's after the crash"
    );
    let (code, _, stderr) = run(vmrun().arg("recover").arg("nic"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        reset_method(&host, gpu),
        b"flr bus\n",
        "byte for byte after recover"
    );
    assert!(diff(&before, &host.snapshot()).is_empty());
}

#[test]
fn vendor_reset_is_loaded_with_device_specific_for_the_run_and_unloaded_after_stop_and_recover() {
    let host = polaris();
    put(&host, VENDOR_RESET_KO, "");
    let dir = crate::common::tempdir();
    let vm = profile(dir.path(), "rx580", &[("0b:00.0", ""), ("0b:00.1", "")]);
    let before = host.snapshot();
    let (code, _, stderr) = run(host.vmrun(dir.path()).arg("run").arg(&vm).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    assert!(host
        .read("proc/modules")
        .lines()
        .any(|m| m == "vendor_reset"));
    assert_eq!(reset_method(&host, "0000:0b:00.0"), b"device_specific");
    assert_eq!(
        reset_method(&host, "0000:0b:00.1"),
        b"flr\n",
        "not a GPU: untouched"
    );
    assert!(
        host.calls().contains(&"modprobe vendor_reset".to_string()),
        "{:?}",
        host.calls()
    );
    assert_eq!(run(host.vmrun(dir.path()).args(["stop", "rx580"])).0, 5);
    assert_eq!(reset_method(&host, "0000:0b:00.0"), b"pm\n");
    assert!(!host
        .read("proc/modules")
        .lines()
        .any(|m| m == "vendor_reset"));
    let calls = host.calls();
    assert!(
        calls.contains(&"modprobe -r vendor_reset".to_string()),
        "{calls:?}"
    );
    assert!(
        diff(&before, &host.snapshot()).is_empty(),
        "{}",
        diff(&before, &host.snapshot()).join("\n")
    );
    assert_eq!(host.driver("0000:0b:00.0").as_deref(), Some("amdgpu"));

    // kill -9 of vmrun while the guest runs: `recover` (another process, from the journal)
    // selects the old methods again and unloads the module.
    let mut child = host
        .vmrun(dir.path())
        .arg("run")
        .arg(&vm)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the VM to run", Duration::from_secs(20), || {
        run(host.vmrun(dir.path()).args(["status", "rx580"])).0 == 0
    });
    let qemu: u32 = std::fs::read_to_string(dir.path().join("run/rx580/qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    wait_for("QEMU to go", Duration::from_secs(10), || {
        !vmrun::run::state::process_alive(qemu, "qemu")
    });
    assert_eq!(reset_method(&host, "0000:0b:00.0"), b"device_specific");
    let (code, _, stderr) = run(host.vmrun(dir.path()).arg("recover").arg("rx580"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reset_method(&host, "0000:0b:00.0"), b"pm\n");
    assert!(!host
        .read("proc/modules")
        .lines()
        .any(|m| m == "vendor_reset"));
    assert!(
        diff(&before, &host.snapshot()).is_empty(),
        "{}",
        diff(&before, &host.snapshot()).join("\n")
    );

    // A vendor_reset the host loaded itself stays loaded.
    put(
        &host,
        "proc/modules",
        &format!("{}\nvendor_reset\n", host.read("proc/modules")),
    );
    let before = host.snapshot();
    let (code, _, stderr) = run(host.vmrun(dir.path()).arg("run").arg(&vm).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reset_method(&host, "0000:0b:00.0"), b"device_specific");
    assert_eq!(run(host.vmrun(dir.path()).args(["stop", "rx580"])).0, 5);
    assert!(host
        .read("proc/modules")
        .lines()
        .any(|m| m == "vendor_reset"));
    assert!(diff(&before, &host.snapshot()).is_empty());
}
