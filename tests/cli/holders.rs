//! Holders of the passed devices over the fake single-GPU host: named by `check` and `run`
//! before anything changes, refused unless the profile lets vmrun stop them, stopped and
//! started again when it does; NVIDIA's persistence daemon stopped for the run; a second GPU's
//! users left out. QEMU is real (through the wrapper that drops the fake devices from its argv).

use std::path::PathBuf;

use crate::common::{check_findings, run};
use crate::fake_host::{diff, FakeHost, FakeProcess, Options};

/// Sunshine streaming the desktop from the GPU's render node, as alice.
fn sunshine() -> FakeProcess {
    FakeProcess::new(
        4242,
        "sunshine",
        1000,
        "/system.slice/sunshine.service",
        &["/dev/null", "/dev/dri/renderD128"],
    )
}

/// The display manager's X server on the GPU's NVIDIA node.
fn xorg() -> FakeProcess {
    FakeProcess::new(
        1234,
        "Xorg",
        0,
        "/system.slice/display-manager.service",
        &["/dev/nvidia0", "/dev/nvidiactl"],
    )
}

fn desktop(processes: Vec<FakeProcess>, services: &[(&'static str, bool)]) -> FakeHost {
    let mut options = Options::single_gpu_desktop();
    options.services.extend_from_slice(services);
    options.processes = processes;
    FakeHost::new("intel-shared-rootport.tsv", options).with_kernel()
}

struct Vm {
    host: FakeHost,
    dir: crate::common::TestDir,
    profile: PathBuf,
}

impl Vm {
    /// A profile passing `pci` (the GPU's functions by default, single-GPU) plus `extra`.
    fn new(host: FakeHost, devices: &str, extra: &str) -> Self {
        let dir = crate::common::tempdir();
        let wrapper = crate::host_e2e::wrapper(dir.path());
        let profile = dir.path().join("sgpu.toml");
        std::fs::write(
            &profile,
            format!(
                "[machine]\nmemory = \"128M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n\
                 [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[display]\nvga = \"none\"\n\
                 {devices}[shutdown]\ntimeout = 1\n[qemu]\nbinary = \"{}\"\n{extra}",
                wrapper.display()
            ),
        )
        .unwrap();
        Vm { host, dir, profile }
    }

    fn single_gpu(host: FakeHost, extra: &str) -> Self {
        Vm::new(
            host,
            "[[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n\
             [single_gpu]\nmodules = [\"nvidia_drm\", \"nvidia_modeset\", \"nvidia_uvm\", \"nvidia\"]\n",
            extra,
        )
    }

    fn vmrun(&self) -> std::process::Command {
        self.host.vmrun(self.dir.path())
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("state/sgpu/journal")
    }

    /// `check --json`'s findings of `kind` (`holders`, `nvidia`), as (status, message).
    fn findings(&self, kind: &str) -> Vec<(String, String)> {
        let (_, stdout, stderr) = run(self.vmrun().args(["check", "--json"]).arg(&self.profile));
        check_findings(&stdout, &stderr)
            .into_iter()
            .filter(|(check, _, _)| check == kind)
            .map(|(_, status, message)| (status, message))
            .collect()
    }

    /// `run --detach`, then `stop`: the host as it was before, with the calls made.
    fn run_and_stop(&self) -> Vec<String> {
        let before = self.host.snapshot();
        let (code, _, stderr) = run(self.vmrun().arg("run").arg(&self.profile).arg("--detach"));
        assert_eq!(code, 0, "{stderr}");
        let during = self.host.calls();
        let (code, _, stderr) = run(self.vmrun().args(["stop", "sgpu"]));
        assert_eq!(code, 5, "SeaBIOS ignores ACPI: a forced stop: {stderr}");
        let after = self.host.snapshot();
        assert!(
            diff(&before, &after).is_empty(),
            "not restored:\n{}",
            diff(&before, &after).join("\n")
        );
        assert!(!self.journal().exists());
        during
    }
}

#[test]
fn a_holder_vmrun_may_not_stop_is_named_and_run_refuses_with_nothing_changed() {
    let vm = Vm::single_gpu(
        desktop(vec![xorg(), sunshine()], &[("sunshine.service", true)]),
        "",
    );
    let holders = vm.findings("holders");
    assert_eq!(holders.len(), 2, "{holders:#?}");
    assert_eq!(holders[0].0, "pass", "{holders:#?}");
    assert!(
        holders[0].1.starts_with(
            "Xorg (pid 1234, user root, unit display-manager.service) holds /dev/nvidia0, /dev/nvidiactl \
             of 0000:01:00.0: display-manager.service will be stopped for the run and started after"
        ),
        "{holders:#?}"
    );
    assert_eq!(holders[1].0, "fail");
    let named =
        "sunshine (pid 4242, user alice, unit sunshine.service) holds /dev/dri/renderD128 of \
                 0000:01:00.0 and vmrun may not stop it";
    assert!(holders[1].1.starts_with(named), "{holders:#?}");
    assert!(
        holders[1]
            .1
            .contains("`[holders] stop = [\"sunshine.service\"]`"),
        "{holders:#?}"
    );

    let before = vm.host.snapshot();
    let calls_before = vm.host.calls();
    let (code, _, stderr) = run(vm.vmrun().arg("run").arg(&vm.profile));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains(named), "{stderr}");
    let after = vm.host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "changed:\n{}",
        diff(&before, &after).join("\n")
    );
    assert!(!vm.journal().exists(), "nothing journaled");
    let calls = vm.host.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.contains(" stop ") || c.starts_with("modprobe")),
        "nothing stopped or unloaded: {calls:#?}"
    );
    assert_eq!(calls.len() - calls_before.len(), 1, "{calls:#?}");
    assert_eq!(
        calls.last().unwrap(),
        "systemctl is-active nvidia-persistenced.service"
    );
    assert_eq!(vm.host.driver("0000:01:00.0").as_deref(), Some("nvidia"));
    assert_eq!(vm.host.read(".fake/services/sunshine.service"), "active");
}

#[test]
fn an_allowed_holder_is_stopped_for_the_run_and_started_after() {
    let vm = Vm::single_gpu(
        desktop(vec![xorg(), sunshine()], &[("sunshine.service", true)]),
        "[holders]\nstop = [\"sunshine.service\"]\n",
    );
    let holders = vm.findings("holders");
    assert!(
        holders.iter().all(|(status, _)| status == "pass"),
        "{holders:#?}"
    );
    assert!(
        holders[1]
            .1
            .ends_with("sunshine.service will be stopped for the run and started after"),
        "{holders:#?}"
    );
    let during = vm.run_and_stop();
    let stops: Vec<&String> = during.iter().filter(|c| c.contains(" stop ")).collect();
    assert_eq!(
        stops,
        [
            "systemctl stop display-manager.service",
            "systemctl stop sunshine.service"
        ],
        "{during:#?}"
    );
    let calls = vm.host.calls();
    let starts: Vec<&String> = calls.iter().filter(|c| c.contains(" start ")).collect();
    assert_eq!(
        starts,
        [
            "systemctl start sunshine.service",
            "systemctl start display-manager.service"
        ],
        "started again in reverse: {calls:#?}"
    );
    assert!(vm.host.root.join("proc/4242/comm").exists(), "back");
}

#[test]
fn nvidia_persistence_is_stopped_for_an_nvidia_gpu_and_started_after() {
    let persistenced = FakeProcess::new(
        800,
        "nvidia-persiste",
        0,
        "/system.slice/nvidia-persistenced.service",
        &["/dev/nvidiactl", "/dev/nvidia0"],
    );
    let vm = Vm::single_gpu(
        desktop(vec![persistenced], &[("nvidia-persistenced.service", true)]),
        "",
    );
    let nvidia = vm.findings("nvidia");
    assert_eq!(nvidia.len(), 1, "{nvidia:#?}");
    assert!(
        nvidia[0].1.contains("will be stopped for the run"),
        "{nvidia:#?}"
    );
    // Allowed without being named: its own step stops it first.
    let holders = vm.findings("holders");
    assert_eq!(holders[0].0, "pass", "{holders:#?}");
    let during = vm.run_and_stop();
    assert!(
        during
            .iter()
            .any(|c| c == "systemctl stop nvidia-persistenced.service"),
        "{during:#?}"
    );
    assert_eq!(
        vm.host
            .calls()
            .iter()
            .filter(|c| c.as_str() == "systemctl start nvidia-persistenced.service")
            .count(),
        1
    );
    assert_eq!(
        vm.host.read(".fake/services/nvidia-persistenced.service"),
        "active"
    );
}

#[test]
fn nvidia_persistence_is_left_alone_for_a_device_that_is_not_nvidia() {
    let persistenced = FakeProcess::new(
        800,
        "nvidia-persiste",
        0,
        "/system.slice/nvidia-persistenced.service",
        &["/dev/nvidiactl", "/dev/nvidia0"],
    );
    // The Intel audio and network functions of one IOMMU group; the NVIDIA GPU stays.
    let vm = Vm::new(
        desktop(vec![persistenced], &[("nvidia-persistenced.service", true)]),
        "[[pci]]\naddress = \"00:1f.3\"\n[[pci]]\naddress = \"00:1f.6\"\n",
        "",
    );
    assert!(vm.findings("nvidia").is_empty());
    let holders = vm.findings("holders");
    assert_eq!(holders.len(), 1);
    assert!(
        holders[0]
            .1
            .starts_with("no process holds the nodes of 0000:00:1f.3, 0000:00:1f.6"),
        "the daemon holds the kept NVIDIA GPU only: {holders:#?}"
    );
    vm.run_and_stop();
    assert!(
        !vm.host
            .calls()
            .iter()
            .any(|c| c.contains("nvidia-persistenced")),
        "{:#?}",
        vm.host.calls()
    );
}

#[test]
fn the_users_of_a_second_gpu_the_host_keeps_are_not_reported() {
    // The RX 560 (04:00.0, amdgpu: card0, renderD128) drives the desktop; the GTX 1060
    // (08:00.0, on vfio-pci) is passed.
    let host = FakeHost::new(
        "b550-ryzen5800x.tsv",
        Options {
            processes: vec![
                FakeProcess::new(
                    1500,
                    "kwin_wayland",
                    1000,
                    "/user.slice/user-1000.slice/session-2.scope",
                    &["/dev/dri/card0", "/dev/dri/renderD128"],
                ),
                FakeProcess::new(
                    1600,
                    "firefox",
                    1000,
                    "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope",
                    &["/dev/dri/renderD128"],
                ),
            ],
            ..Options::default()
        },
    );
    let dir = crate::common::tempdir();
    let profile = dir.path().join("gtx.toml");
    std::fs::write(
        &profile,
        "[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n\
         [[pci]]\naddress = \"08:00.0\"\n[[pci]]\naddress = \"08:00.1\"\n",
    )
    .unwrap();
    let (_, stdout, stderr) = run(host
        .vmrun(dir.path())
        .args(["check", "--json"])
        .arg(&profile));
    let holders: Vec<(String, String, String)> = check_findings(&stdout, &stderr)
        .into_iter()
        .filter(|(check, _, _)| check == "holders")
        .collect();
    assert_eq!(holders.len(), 1, "{holders:#?}");
    assert_eq!(holders[0].1, "pass");
    assert!(
        holders[0]
            .2
            .starts_with("no process holds the nodes of 0000:08:00.0, 0000:08:00.1"),
        "{holders:#?}"
    );
    assert!(!holders[0].2.contains("/dev/dri/card0"), "{holders:#?}");
}
