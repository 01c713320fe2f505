//! `[isolation]` on a fake host (a two-CPU topology, IRQs, workqueue cpumask, cgroup v2,
//! governors; stub `systemctl` recording calls) with the real vmrun and real QEMU pinned to the
//! real CPUs 0 and 1: applied while the VM runs, restored exactly after, also after `kill -9`
//! and `vmrun recover`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::{run, wait_for};
use crate::fake_host::{diff, inhibitor_pid, FakeHost, Options};

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
}

struct Setup {
    host: FakeHost,
    dir: crate::common::TestDir,
    profile: PathBuf,
}

fn setup(isolation: &str) -> Setup {
    crate::common::require_root();
    let host = FakeHost::new(
        "intel-shared-rootport.tsv",
        Options {
            topology: Some("two-cpus.lscpu"),
            ..Options::default()
        },
    );
    let dir = crate::common::tempdir();
    let profile = dir.path().join("iso.toml");
    std::fs::write(
        &profile,
        format!(
            "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[pinning]\nvcpus = [1]\nemulator = \"0\"\n\
             [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[display]\nvga = \"none\"\n\
             [shutdown]\ntimeout = 1\n[isolation]\n{isolation}\n"
        ),
    )
    .unwrap();
    Setup { host, dir, profile }
}

impl Setup {
    fn vmrun(&self) -> Command {
        self.host.vmrun(self.dir.path())
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("state/iso/journal")
    }

    fn assert_isolated(&self) {
        let h = &self.host;
        for unit in ["system.slice", "user.slice", "init.scope"] {
            assert_eq!(
                h.read(&format!(".fake/properties/{unit}.AllowedCPUs")),
                "0",
                "{unit}"
            );
        }
        assert_eq!(h.read("sys/devices/virtual/workqueue/cpumask"), "1");
        assert_eq!(h.read("proc/irq/default_smp_affinity"), "1");
        for irq in [0, 1, 8, 9, 16, 24, 120] {
            assert_eq!(
                h.read(&format!("proc/irq/{irq}/smp_affinity_list")),
                "0",
                "IRQ {irq}"
            );
        }
        assert_eq!(
            h.read("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"),
            "performance"
        );
        assert_eq!(
            h.read("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "schedutil",
            "only the vCPUs' CPUs change governor"
        );
    }
}

#[test]
fn without_a_system_bus_no_inhibitor_is_started_and_the_log_says_why() {
    let s = setup("");
    std::fs::remove_file(s.host.root.join("run/dbus/system_bus_socket")).unwrap();
    let (code, _, stderr) = run(s
        .vmrun()
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .arg("run")
        .arg(&s.profile)
        .arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    let log = s.dir.path().join("state/iso/vmrun.log");
    wait_for("the inhibitor's decision", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("no system D-Bus"))
    });
    let (code, _, stderr) = run(s.vmrun().args(["stop", "iso", "--force"]));
    assert_eq!(code, 5, "stopped by QMP quit: {stderr}");
    let calls = s.host.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("systemd-inhibit")),
        "{calls:#?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("run/dbus/system_bus_socket): no logind sleep inhibitor"),
        "{text}"
    );
}

#[test]
fn isolation_holds_while_the_vm_runs_and_everything_is_restored_after() {
    let s = setup("host_cpus = \"auto\"");
    let before = s.host.snapshot();
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    s.assert_isolated();
    // Taken once the guest runs, after --detach has already returned.
    wait_for("the inhibitor", Duration::from_secs(5), || {
        inhibitor_pid(&s.host.calls()).is_some()
    });
    let calls = s.host.calls();
    let inhibitor = inhibitor_pid(&calls).unwrap_or_else(|| panic!("no inhibitor: {calls:#?}"));
    assert!(
        calls.iter().any(|c| {
            c.starts_with(
            "systemd-inhibit --what=sleep:idle --who=vmrun --why=VM iso is running --mode=block cat"
        )
        }),
        "{calls:#?}"
    );
    assert!(alive(inhibitor), "the inhibitor is held while the VM runs");
    let (code, _, stderr) = run(s.vmrun().args(["stop", "iso"]));
    assert_eq!(code, 5, "SeaBIOS ignores ACPI: {stderr}");
    assert!(!alive(inhibitor), "the inhibitor is gone with the run");
    let after = s.host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "not restored:\n{}",
        diff(&before, &after).join("\n")
    );
    assert!(!s.journal().exists());
    let calls = s.host.calls();
    for unit in ["system.slice", "user.slice", "init.scope"] {
        let set = format!("systemctl set-property --runtime {unit} AllowedCPUs=0");
        let reset = format!("systemctl set-property --runtime {unit} AllowedCPUs=");
        let set_at = calls.iter().position(|c| *c == set);
        let reset_at = calls.iter().position(|c| *c == reset);
        assert!(
            set_at.is_some() && reset_at > set_at,
            "{unit} set then reset, runtime only: {calls:#?}"
        );
    }
}

#[test]
fn a_slice_with_its_own_allowed_cpus_gets_that_value_back() {
    let s = setup("host_cpus = \"0\"\ngovernor = \"keep\"");
    std::fs::write(
        s.host
            .root
            .join(".fake/properties/system.slice.AllowedCPUs"),
        "0-1\n",
    )
    .unwrap();
    let before = s.host.snapshot();
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        s.host.read(".fake/properties/system.slice.AllowedCPUs"),
        "0"
    );
    assert_eq!(
        s.host
            .read("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"),
        "schedutil",
        "governor = \"keep\""
    );
    run(s.vmrun().args(["stop", "iso"]));
    assert!(diff(&before, &s.host.snapshot()).is_empty());
    assert!(s
        .host
        .calls()
        .contains(&"systemctl set-property --runtime system.slice AllowedCPUs=0-1".to_string()));
}

#[test]
fn kill_9_of_an_isolated_run_then_recover_restores_the_host() {
    let s = setup("");
    let before = s.host.snapshot();
    let mut vmrun = s
        .vmrun()
        .arg("run")
        .arg(&s.profile)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the VM to run", Duration::from_secs(20), || {
        run(s.vmrun().args(["status", "iso"])).0 == 0
    });
    s.assert_isolated();
    // Taken once the guest runs, a moment after `status` first sees the VM.
    wait_for("the inhibitor", Duration::from_secs(5), || {
        inhibitor_pid(&s.host.calls()).is_some()
    });
    let inhibitor = inhibitor_pid(&s.host.calls()).unwrap();
    kill(Pid::from_raw(vmrun.id() as i32), Signal::SIGKILL).unwrap();
    let _ = vmrun.wait();
    wait_for(
        "the inhibitor to go with vmrun",
        Duration::from_secs(5),
        || !alive(inhibitor),
    );
    // QEMU dies with its supervisor; recover refuses while it runs.
    wait_for("QEMU to go", Duration::from_secs(10), || {
        run(s.vmrun().args(["recover", "iso"])).0 == 0
    });
    let after = s.host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "kill -9 then recover left:\n{}",
        diff(&before, &after).join("\n")
    );
    assert!(!s.journal().exists());
}

fn check(s: &Setup) -> (i32, Vec<Value>) {
    let (code, stdout, stderr) = run(s.vmrun().args(["check", "--json"]).arg(&s.profile));
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (code, json["findings"].as_array().unwrap().clone())
}

fn failure(findings: &[Value], check: &str) -> String {
    findings
        .iter()
        .filter(|f| f["check"] == check && f["status"] == "fail")
        .map(|f| f["message"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn preflight_needs_cgroup_v2_cpuset_and_vmrun_outside_the_restricted_slices() {
    let s = setup("");
    let (_, findings) = check(&s);
    assert_eq!(failure(&findings, "isolation"), "", "{findings:#?}");
    std::fs::write(
        s.host.root.join("sys/fs/cgroup/cgroup.controllers"),
        "cpu io memory pids\n",
    )
    .unwrap();
    let (code, findings) = check(&s);
    assert_eq!(code, 3);
    assert!(
        failure(&findings, "isolation").contains("cpuset controller is not available"),
        "{findings:#?}"
    );
    std::fs::remove_file(s.host.root.join("sys/fs/cgroup/cgroup.controllers")).unwrap();
    let (_, findings) = check(&s);
    assert!(failure(&findings, "isolation").contains("needs cgroup v2"));
    std::fs::write(
        s.host.root.join("sys/fs/cgroup/cgroup.controllers"),
        "cpuset cpu\n",
    )
    .unwrap();
    let session = "/user.slice/user-0.slice/session-1.scope";
    std::fs::create_dir_all(s.host.root.join("proc/self")).unwrap();
    std::fs::write(
        s.host.root.join("proc/self/cgroup"),
        format!("0::{session}\n"),
    )
    .unwrap();
    let (_, findings) = check(&s);
    let message = failure(&findings, "isolation");
    assert!(
        message.contains(&format!("vmrun runs in {session}, inside user.slice"))
            && message.contains("systemd-run --scope --slice=machine.slice"),
        "{message}"
    );
    // A cgroup whose cpuset leaves out the vCPU's CPU: pinning would fail with EINVAL.
    let cgroup = s.host.root.join(format!("sys/fs/cgroup{session}"));
    std::fs::create_dir_all(&cgroup).unwrap();
    std::fs::write(cgroup.join("cpuset.cpus.effective"), "0\n").unwrap();
    let (_, findings) = check(&s);
    let message = failure(&findings, "cgroup");
    assert!(
        message.contains("allows only CPUs 0") && message.contains("EINVAL"),
        "{findings:#?}"
    );
}

#[test]
fn show_lists_the_isolation_steps_and_the_profile_rules_hold() {
    let s = setup("host_cpus = \"auto\"");
    let (code, stdout, stderr) = run(s.vmrun().args(["show", "--json"]).arg(&s.profile));
    assert_eq!(code, 0, "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let kinds: Vec<&str> = json["host_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "restrict_slices",
            "restrict_workqueues",
            "move_irqs",
            "set_governor"
        ]
    );
    assert_eq!(json["host_steps"][0]["host_cpus"], "0");
    assert_eq!(json["host_steps"][3]["governor"], "performance");
    let dir = crate::common::tempdir();
    let text = "[machine]\naccel = \"tcg\"\n[isolation]\nhost_cpus = \"0\"\n";
    let errors = crate::common::validate_text(dir.path(), "nopin", text).unwrap_err();
    assert!(
        errors.iter().any(|d| d.to_string().contains("nopin.toml:3")
            && d.to_string().contains("without [pinning]")),
        "{errors:?}"
    );
    let text = "[machine]\naccel = \"tcg\"\n[cpu]\ncores = 2\n[pinning]\nvcpus = [1, 2]\n[isolation]\nhost_cpus = \"0-1\"\n";
    let errors = crate::common::validate_text(dir.path(), "overlap", text).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|d| d.to_string().contains("overlap.toml:8")
                && d.to_string().contains("isolation.host_cpus")
                && d.to_string().contains("CPUs 1")),
        "{errors:?}"
    );
}
