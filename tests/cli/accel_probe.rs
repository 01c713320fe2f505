//! The accelerator probe: on hosts where /dev/kvm opens but QEMU aborts under KVM (a CPU model
//! whose MSRs the kernel refuses, as nested hosts do), `check` fails with QEMU's message and
//! the remedies, and `run` adds the same remedies to QEMU's abort. A wrapper first on PATH
//! aborts under `-accel kvm` exactly as such hosts do; the host root is a fake tree whose
//! /dev/kvm opens.

use std::os::unix::fs::PermissionsExt;

use crate::common::{repo_root, run, vmrun};

const ABORTS_UNDER_KVM: &str = r#"#!/bin/bash
# QEMU on a host whose KVM refuses the CPU's MSRs: aborts at the first vCPU reset.
for arg in "$@"; do
    if [ "$arg" = kvm ] || [[ "$arg" == kvm,* ]]; then
        echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2
        echo "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion \`ret == cpu->kvm_msr_buf->nmsrs' failed." >&2
        kill -ABRT $$
    fi
done
exec QEMU "$@"
"#;

struct Rig {
    dir: crate::common::TestDir,
}

impl Rig {
    fn new() -> Self {
        let dir = crate::common::tempdir();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let wrapper = bin.join("qemu-system-x86_64");
        let qemu = vmrun::check::find_program(&crate::common::test_qemu()).expect("QEMU");
        std::fs::write(
            &wrapper,
            ABORTS_UNDER_KVM.replace("exec QEMU", &format!("exec {}", qemu.display())),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("dev/kvm"), "").unwrap();
        // As udev leaves it on most distributions: every user may open it.
        std::fs::set_permissions(root.join("dev/kvm"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        std::fs::create_dir_all(root.join("sys/devices/system/cpu")).unwrap();
        std::fs::write(root.join("sys/devices/system/cpu/online"), "0-1\n").unwrap();
        std::fs::write(
            dir.path().join("guest.toml"),
            "[machine]\nmemory = \"128M\"\n[cpu]\ncores = 1\n[firmware]\ntype = \"seabios\"\n\
             [network]\nmode = \"none\"\n",
        )
        .unwrap();
        Rig { dir }
    }

    fn vmrun(&self, args: &[&str]) -> (i32, String, String) {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        run(vmrun(&repo_root())
            .env("PATH", path)
            .env("VMRUN_SYSROOT", self.dir.path().join("root"))
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--runtime-dir")
            .arg(self.dir.path().join("run"))
            .args(args)
            .arg(self.profile()))
    }

    fn profile(&self) -> std::path::PathBuf {
        self.dir.path().join("guest.toml")
    }
}

fn assert_remedies(text: &str) {
    for remedy in ["kvm.ignore_msrs=1", "[cpu] model", "accel = \"tcg\""] {
        assert!(text.contains(remedy), "no `{remedy}` in: {text}");
    }
}

#[test]
fn check_fails_when_qemu_aborts_under_kvm_and_names_the_remedies() {
    let rig = Rig::new();
    let (code, stdout, stderr) = rig.vmrun(&["check", "--json"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let accel: Vec<&serde_json::Value> = value["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "accel")
        .collect();
    let failed = accel
        .iter()
        .find(|f| f["status"] == "fail")
        .unwrap_or_else(|| panic!("no failed accel finding: {accel:?}"));
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("failed to set MSR 0x10a"), "{message}");
    assert_remedies(message);
    assert!(
        !accel.iter().any(|f| f["status"] == "pass"),
        "one thing never both passes and fails: {accel:?}"
    );
    assert!(
        value["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "kvm" && f["status"] == "pass"),
        "/dev/kvm itself opens: {value}"
    );
}

#[test]
fn check_passes_the_probe_where_qemu_starts_under_tcg() {
    let rig = Rig::new();
    let text = std::fs::read_to_string(rig.profile()).unwrap();
    std::fs::write(
        rig.profile(),
        text.replace("[machine]\n", "[machine]\naccel = \"tcg\"\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = rig.vmrun(&["check"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("under KVM with this CPU"), "{stdout}");
}

#[test]
fn run_adds_the_remedies_to_qemus_abort() {
    let rig = Rig::new();
    let (code, _, stderr) = rig.vmrun(&["run"]);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("QEMU refused to start"), "{stderr}");
    assert!(stderr.contains("failed to set MSR 0x10a"), "{stderr}");
    assert_remedies(&stderr);
}

#[test]
fn the_probe_runs_real_qemu_and_passes_where_it_starts() {
    // Under TCG on any machine: the probe's own arguments must be ones QEMU accepts.
    let qemu = crate::common::test_qemu();
    let argv = [
        qemu.as_str(),
        "-machine",
        "q35,pflash0=ovmf-code,memory-backend=ram",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2,sockets=1,cores=2,threads=1",
    ]
    .map(str::to_string);
    let finding = vmrun::check::accel_probe(&argv);
    assert_eq!(
        finding.status,
        vmrun::check::Status::Pass,
        "{}",
        finding.message
    );
    // What the end-to-end tests decide from: KVM as the user vmrun runs QEMU as.
    let (model, why) = crate::run_e2e::accel_choice();
    eprintln!(
        "[probe] this machine: {} ({why})",
        model.map_or("TCG".to_string(), |m| format!("KVM with -cpu {m}"))
    );
}
