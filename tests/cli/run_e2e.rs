//! End to end: the real vmrun boots real QEMU and the tests check the result in /proc.
//! SeaBIOS guests run under KVM where vmrun could run them under KVM: QEMU, started as the user
//! vmrun runs it as, starts with `-accel kvm -cpu host` (a host may have no /dev/kvm, keep it
//! from that user, or abort under `-cpu host`); else under TCG. OVMF runs under TCG (it does
//! not run under nested KVM). Each test prints the accelerator it used and why. Every VM is
//! stopped by a guard when its test ends, failed or not. Needs root (SCHED_RR, CAP_SYS_NICE).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::{repo_root, require_root, run};

pub(crate) struct Vm {
    pub(crate) dir: crate::common::TestDir,
    pub(crate) name: String,
    pub(crate) profile: PathBuf,
}

/// The accelerator and CPU model for SeaBIOS guests, with the reason: KVM only where QEMU
/// really starts with it as the user vmrun runs it as (opening /dev/kvm as root proves nothing:
/// that user may lack it), with `-cpu host`, else `qemu64` (nested hosts refuse the host
/// model's MSRs); else TCG. Probed once.
pub(crate) fn accel_choice() -> &'static (Option<&'static str>, String) {
    static CHOICE: std::sync::OnceLock<(Option<&'static str>, String)> = std::sync::OnceLock::new();
    CHOICE.get_or_init(|| {
        let qemu = crate::common::test_qemu();
        let mut refusals = Vec::new();
        for model in ["host", "qemu64"] {
            match vmrun::check::kvm_for_default_user(&qemu, model) {
                Ok(why) => return (Some(model), why),
                // Only a refused CPU model is worth another model.
                Err(why) if vmrun::qemu_advice::is_kvm_refusal(&why) => {
                    refusals.push(format!("-cpu {model}: {why}"))
                }
                Err(why) => {
                    refusals.push(why);
                    break;
                }
            }
        }
        (
            None,
            format!("no KVM for vmrun's QEMU: {}", refusals.join("; ")),
        )
    })
}

/// The accelerator and CPU model for a SeaBIOS guest, printed with the reason for the choice.
pub(crate) fn seabios_accel(name: &str) -> (&'static str, &'static str) {
    let (model, why) = accel_choice();
    let (accel, model) = match model {
        Some(model) => ("kvm", *model),
        None => ("tcg", "max"),
    };
    eprintln!("[{name}] accelerator: {accel}, -cpu {model} (SeaBIOS guest; {why})");
    (accel, model)
}

impl Vm {
    /// A SeaBIOS guest without disks: it idles in the BIOS. Under KVM when usable.
    pub(crate) fn seabios(name: &str, pinning: &str, extra: &str) -> Self {
        let (accel, model) = seabios_accel(name);
        Self::new(
            name,
            &format!(
                "[machine]\nmemory = \"128M\"\naccel = \"{accel}\"\n[cpu]\nmodel = \"{model}\"\ncores = 2\n\
                 [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[shutdown]\ntimeout = 2\n{pinning}\n{extra}"
            ),
        )
    }

    /// An OVMF guest under TCG (OVMF does not run under our nested KVM).
    pub(crate) fn ovmf(name: &str, timeout: u32) -> Self {
        eprintln!("[{name}] accelerator: tcg (OVMF guest)");
        Self::new(
            name,
            &format!(
                "[machine]\nmemory = \"256M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[pinning]\nvcpus = [1]\n\
                 emulator = \"0\"\n[firmware]\ntype = \"ovmf\"\n[network]\nmode = \"none\"\n[console]\n\
                 serial = \"log\"\n[shutdown]\ntimeout = {timeout}\n"
            ),
        )
    }

    /// An OVMF guest under TCG whose UEFI shell runs `script` from a `startup.nsh` on a FAT
    /// disk, with `sections` added to its profile. The directory behind that disk is returned:
    /// keep it as long as the VM runs.
    pub(crate) fn ovmf_with_startup(
        name: &str,
        script: &str,
        sections: &str,
    ) -> (Self, crate::common::TestDir) {
        let esp = crate::common::tempdir();
        // QEMU, unprivileged, reads this directory itself (vvfat): readable by all.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(esp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(esp.path().join("startup.nsh"), script).unwrap();
        eprintln!("[{name}] accelerator: tcg (OVMF guest)");
        let vm = Self::new(
            name,
            &format!(
                "[machine]\nmemory = \"256M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n\
                 [firmware]\ntype = \"ovmf\"\n[network]\nmode = \"none\"\n{sections}\n[qemu]\n\
                 extra_args = [\"-blockdev\", \"driver=vvfat,node-name=esp,dir={},label=ESP,read-only=on\", \
                 \"-device\", \"virtio-blk-pci,drive=esp\"]\n",
                esp.path().display()
            ),
        );
        (vm, esp)
    }

    pub(crate) fn new(name: &str, text: &str) -> Self {
        require_root();
        let dir = crate::common::tempdir();
        let profile = dir.path().join(format!("{name}.toml"));
        std::fs::write(&profile, text).unwrap();
        Vm {
            dir,
            name: name.to_string(),
            profile,
        }
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(crate) fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub(crate) fn vmrun(&self) -> Command {
        let mut command = crate::common::vmrun(&repo_root());
        command
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--runtime-dir")
            .arg(self.runtime_dir());
        command
    }

    pub(crate) fn start_foreground(&self) -> Child {
        self.vmrun()
            .arg("run")
            .arg(&self.profile)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub(crate) fn detach(&self, extra: &[&str]) -> (i32, String) {
        let (code, _, stderr) = run(self
            .vmrun()
            .arg("run")
            .arg(&self.profile)
            .arg("--detach")
            .args(extra));
        (code, stderr)
    }

    pub(crate) fn status(&self) -> Value {
        let (_, stdout, stderr) = run(self.vmrun().args(["status", &self.name, "--json"]));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"))
    }

    pub(crate) fn wait_running(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // By its profile: until the run has made the VM's state directory, its bare name
            // is no VM vmrun knows (the profile is not on the search path).
            let (_, stdout, stderr) =
                run(self.vmrun().arg("status").arg(&self.profile).arg("--json"));
            let status: Value =
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
            if status["running"] == true && status["run_state"].is_string() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "not running after 20 s: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn stop(&self) -> i32 {
        run(self.vmrun().args(["stop", &self.name, "--force"])).0
    }

    pub(crate) fn runtime_leftovers(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.runtime_dir().join(&self.name)) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Vm {
    /// The guard: a VM its test left running (a failed assert) is stopped with the test.
    fn drop(&mut self) {
        let _ = self
            .vmrun()
            .args(["stop", &self.name, "--force", "--timeout", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Placement of every thread of `pid`, from /proc: (name, affinity list, policy, priority).
pub(crate) fn threads(pid: u32) -> Vec<(i32, String, String, String, u32)> {
    vmrun::run::threads::threads_of(pid)
        .unwrap()
        .into_iter()
        .map(|t| (t.tid, t.name, t.affinity, t.policy, t.priority))
        .collect()
}

/// Waits until `pid` no longer exists (or is a zombie, as a child of an exited parent can be).
pub(crate) fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if stat.is_empty() || zombie {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn vcpus_are_pinned_before_they_run_and_status_agrees_with_proc() {
    let vm = Vm::seabios(
        "e2e-pin",
        "[pinning]\nvcpus = [1, 0]\nemulator = \"0-1\"\nscheduler = \"fifo\"\npriority = 3\n",
        "",
    );
    let (code, stderr) = vm.detach(&["--paused"]);
    assert_eq!(code, 0, "{stderr}");
    let status = vm.wait_running();
    // Started with -S and never resumed: the vCPUs have not executed a single instruction.
    assert_eq!(status["run_state"], "prelaunch", "{status}");
    let pid = status["pid"].as_u64().unwrap() as u32;
    let placement = threads(pid);
    let vcpus: Vec<_> = placement
        .iter()
        .filter(|t| t.1.starts_with("CPU "))
        .collect();
    assert_eq!(vcpus.len(), 2, "{placement:?}");
    for (tid, name, affinity, policy, priority) in &vcpus {
        let index: usize = name[4..name.find('/').unwrap()].parse().unwrap();
        let expected_cpu = ["1", "0"][index];
        assert_eq!(
            (affinity.as_str(), policy.as_str(), *priority),
            (expected_cpu, "fifo", 3),
            "{name} ({tid})"
        );
        let reported = status["vcpus"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["index"] == index)
            .unwrap();
        assert_eq!(reported["thread_id"], *tid);
        assert_eq!(reported["affinity"], expected_cpu);
        assert_eq!(reported["policy"], "fifo");
        assert_eq!(reported["priority"], 3);
    }
    for (_, name, affinity, policy, _) in placement.iter().filter(|t| !t.1.starts_with("CPU ")) {
        assert_eq!(
            (affinity.as_str(), policy.as_str()),
            ("0-1", "other"),
            "{name}"
        );
    }
    // Resume through the second monitor; the guest runs and the pinning holds.
    let (code, stdout, stderr) = run(vm.vmrun().args(["qmp", &vm.name, "cont"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "{}");
    assert_eq!(vm.status()["run_state"], "running");
    std::thread::sleep(Duration::from_millis(1500));
    // KVM's own counters where the guest runs under KVM (QEMU 7.1+ has query-stats).
    let stats = &vm.status()["kvm_stats"];
    if accel_choice().0.is_some() {
        assert_eq!(stats["vcpus"], 2, "{stats}");
        assert!(stats["counters"]["exits"].as_u64().unwrap() > 0, "{stats}");
    } else {
        assert!(stats.is_null(), "TCG has no KVM statistics: {stats}");
    }
    for (_, name, affinity, policy, _) in threads(pid) {
        if !name.starts_with("CPU ") {
            assert_eq!(
                (affinity.as_str(), policy.as_str()),
                ("0-1", "other"),
                "{name} after resuming"
            );
        }
    }
    assert_eq!(vm.stop(), 5, "SeaBIOS ignores ACPI; --force quits QEMU");
    assert!(wait_gone(pid, Duration::from_secs(5)));
    assert!(
        vm.runtime_leftovers().is_empty(),
        "{:?}",
        vm.runtime_leftovers()
    );
}

#[test]
fn sigterm_powers_down_then_quits_after_the_timeout_and_vars_survive() {
    let vm = Vm::ovmf("e2e-term", 2);
    let mut vmrun = vm.start_foreground();
    let status = vm.wait_running();
    let qemu = status["pid"].as_u64().unwrap() as u32;
    let vars = vm.state_dir().join("e2e-term/OVMF_VARS.fd");
    assert!(vars.is_file());
    let started = Instant::now();
    kill(Pid::from_raw(vmrun.id() as i32), Signal::SIGTERM).unwrap();
    let exit = vmrun.wait().unwrap();
    let took = started.elapsed();
    assert_eq!(exit.code(), Some(5), "forced after the ACPI timeout");
    assert!(
        took >= Duration::from_secs(2),
        "the guest got its {took:?} < 2 s"
    );
    let log = std::fs::read_to_string(vm.state_dir().join("e2e-term/vmrun.log")).unwrap();
    let powerdown = log.find("stop: ACPI power-off").expect("powerdown first");
    let quit = log.find("stop: QMP quit").expect("then quit");
    assert!(powerdown < quit, "{log}");
    assert!(wait_gone(qemu, Duration::from_secs(5)), "QEMU still there");
    assert!(
        vm.runtime_leftovers().is_empty(),
        "{:?}",
        vm.runtime_leftovers()
    );

    // The VM's VARS copy is kept and the next run uses that same file.
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&vars).unwrap().ino();
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    assert_eq!(std::fs::metadata(&vars).unwrap().ino(), inode);
    let log = std::fs::read_to_string(vm.state_dir().join("e2e-term/vmrun.log")).unwrap();
    assert!(log.contains("keeping the VM's VARS"), "{log}");
    assert_eq!(vm.stop(), 5);
}

#[test]
fn a_second_run_is_refused_and_stop_from_another_process_tears_down() {
    let vm = Vm::seabios(
        "e2e-lock",
        "[pinning]\nvcpus = [1, 1]\nemulator = \"0\"\n",
        "",
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let status = vm.wait_running();
    let vmrun_pid = status["vmrun_pid"].as_u64().unwrap();
    let (code, _, stderr) = run(vm.vmrun().arg("run").arg(&vm.profile));
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains(&format!("already running (vmrun pid {vmrun_pid})")),
        "{stderr}"
    );
    let (code, _, stderr) = run(vm.vmrun().args(["stop", &vm.name, "--timeout", "1"]));
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("stopped by QMP quit"), "{stderr}");
    assert_eq!(vm.status()["running"], false);
    assert!(
        vm.runtime_leftovers().is_empty(),
        "{:?}",
        vm.runtime_leftovers()
    );
    let (code, _, stderr) = run(vm.vmrun().args(["stop", &vm.name]));
    assert_eq!(code, 0, "stopping a stopped VM is not an error: {stderr}");
    let (code, _, _) = run(vm.vmrun().args(["status", &vm.name]));
    assert_eq!(code, 7);
}

#[test]
fn kill_9_of_vmrun_leaves_no_qemu_and_the_next_run_starts_clean() {
    let vm = Vm::seabios(
        "e2e-kill",
        "[pinning]\nvcpus = [1, 1]\nemulator = \"0\"\n",
        "",
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let status = vm.wait_running();
    let (vmrun_pid, qemu) = (
        status["vmrun_pid"].as_u64().unwrap() as i32,
        status["pid"].as_u64().unwrap() as u32,
    );
    kill(Pid::from_raw(vmrun_pid), Signal::SIGKILL).unwrap();
    assert!(
        wait_gone(qemu, Duration::from_secs(5)),
        "QEMU {qemu} outlived its supervisor"
    );
    assert_eq!(vm.status()["running"], false);
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(
        code, 0,
        "a stale runtime directory does not block the next run: {stderr}"
    );
    vm.wait_running();
    assert_eq!(vm.stop(), 5);
}

#[test]
fn a_qemu_that_refuses_its_argv_is_reported_with_its_own_message() {
    let vm = Vm::seabios(
        "e2e-bad",
        "",
        "[qemu]\nextra_args = [\"-device\", \"no-such-device-model\"]\n",
    );
    let (code, _, stderr) = run(vm.vmrun().arg("run").arg(&vm.profile));
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("QEMU refused to start"), "{stderr}");
    assert!(
        stderr.contains("'no-such-device-model' is not a valid device model name"),
        "{stderr}"
    );
    assert!(vm.runtime_leftovers().is_empty());
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 6, "--detach reports the same failure: {stderr}");
    assert!(stderr.contains("no-such-device-model"), "{stderr}");
}

#[test]
fn a_guest_that_powers_itself_off_ends_the_run_with_exit_0() {
    // OVMF's shell runs startup.nsh from a FAT disk; `reset -s` is an ACPI power-off by the guest.
    let (vm, _esp) = Vm::ovmf_with_startup(
        "e2e-poweroff",
        "reset -s\r\n",
        "[pinning]\nvcpus = [1]\nemulator = \"0\"\n[console]\nserial = \"log\"\n",
    );
    let started = Instant::now();
    let (code, _, stderr) = run(vm.vmrun().arg("run").arg(&vm.profile));
    assert_eq!(code, 0, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(stderr.contains("the guest powered off"), "{stderr}");
    let log = std::fs::read_to_string(vm.state_dir().join("e2e-poweroff/vmrun.log")).unwrap();
    assert!(log.contains("SHUTDOWN, reason: guest-shutdown"), "{log}");
    assert!(vm.runtime_leftovers().is_empty());
    let last: Value = serde_json::from_str(
        &std::fs::read_to_string(vm.state_dir().join("e2e-poweroff/last-run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(last["exit_code"], 0);
}

#[test]
fn a_guest_panic_reaches_vmrun_through_pvpanic_and_gives_exit_6() {
    // The OVMF shell writes the pvpanic port (0x505) the way a guest kernel's panic notifier
    // does; QEMU reports GUEST_PANICKED.
    let (vm, _esp) = Vm::ovmf_with_startup(
        "e2e-panic",
        "mm 505 1 -w 1 -IO -n\r\n",
        "[pinning]\nvcpus = [1]\nemulator = \"0\"\n[console]\nserial = \"log\"\n",
    );
    let (code, _, stderr) = run(vm.vmrun().arg("run").arg(&vm.profile));
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("the guest panicked"), "{stderr}");
    let log = std::fs::read_to_string(vm.state_dir().join("e2e-panic/vmrun.log")).unwrap();
    assert!(log.contains("the guest panicked"), "{log}");
    let last: Value = serde_json::from_str(
        &std::fs::read_to_string(vm.state_dir().join("e2e-panic/last-run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(last["exit_code"], 6);
    assert!(vm.runtime_leftovers().is_empty());
}

#[test]
fn without_cap_sys_nice_a_realtime_profile_is_refused_before_qemu_starts() {
    let vm = Vm::seabios(
        "e2e-nocap",
        "[pinning]\nvcpus = [1, 1]\nemulator = \"0\"\nscheduler = \"rr\"\n",
        "",
    );
    let mut command = Command::new("setpriv");
    command
        .args(["--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--"])
        .arg(env!("CARGO_BIN_EXE_vmrun"))
        .arg("--state-dir")
        .arg(vm.state_dir())
        .arg("--runtime-dir")
        .arg(vm.runtime_dir())
        .arg("run")
        .arg(&vm.profile);
    let (code, _, stderr) = run(&mut command);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr
            .contains("needs CAP_SYS_NICE: run vmrun as root (sudo), or set scheduler = \"other\""),
        "{stderr}"
    );
    assert!(
        !vm.state_dir().join("e2e-nocap/qemu.log").exists(),
        "QEMU must not have been started"
    );
}

/// The inode of the socket behind `/proc/PID/fd/FD`, and the path it is bound to (from
/// /proc/net/unix), if it is a listening Unix socket.
fn listening_socket(pid: u32, fd: i32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let inode = target
        .to_string_lossy()
        .strip_prefix("socket:[")?
        .trim_end_matches(']')
        .to_string();
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path; flags 00010000 = listening.
        (fields.get(6) == Some(&inode.as_str()) && fields.get(3) == Some(&"00010000"))
            .then(|| fields.get(7).map(|p| p.to_string()).unwrap_or_default())
    })
}

#[test]
fn qemu_gets_its_monitors_as_listening_sockets_vmrun_bound() {
    let vm = Vm::seabios("e2e-fds", "", "");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let pid = vm.wait_running()["pid"].as_u64().unwrap() as u32;
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !cmdline.contains("qmp.sock") && !cmdline.contains("ctl.sock"),
        "QEMU must not be told a socket path: {cmdline:?}"
    );
    assert!(
        cmdline.contains("socket,id=qmp,fd=3,server=on"),
        "{cmdline:?}"
    );
    let runtime = vm.runtime_dir().join("e2e-fds");
    assert_eq!(
        listening_socket(pid, 3).as_deref(),
        Some(runtime.join("qmp.sock").to_str().unwrap()),
        "fd 3 of QEMU is the supervisor's monitor, listening at qmp.sock"
    );
    assert_eq!(
        listening_socket(pid, 4).as_deref(),
        Some(runtime.join("ctl.sock").to_str().unwrap()),
        "fd 4 of QEMU is the control monitor, listening at ctl.sock"
    );
    assert_eq!(vm.status()["run_state"], "running");
    assert_eq!(vm.stop(), 5);
    assert!(
        vm.runtime_leftovers().is_empty(),
        "{:?}",
        vm.runtime_leftovers()
    );
}

#[test]
fn stale_sockets_and_a_dead_run_do_not_confuse_start_status_or_stop() {
    let vm = Vm::seabios("e2e-stale", "", "");
    let runtime = vm.runtime_dir().join("e2e-stale");
    std::fs::create_dir_all(&runtime).unwrap();
    // What a power loss leaves: socket files nobody listens on, and the state of a dead run
    // (pids that are not a vmrun or a QEMU any more).
    for name in ["qmp.sock", "ctl.sock"] {
        drop(std::os::unix::net::UnixListener::bind(runtime.join(name)).unwrap());
    }
    std::fs::write(
        runtime.join("state.json"),
        r#"{"name":"e2e-stale","profile":"/gone.toml","vmrun_pid":999999,"qemu_pid":999998,"started_unix":1,"accel":"kvm"}"#,
    )
    .unwrap();
    let started = Instant::now();
    let (code, stdout, _) = run(vm.vmrun().args(["status", "e2e-stale", "--json"]));
    assert_eq!(code, 7, "a dead run is not running: {stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "status waited on a stale socket"
    );
    let (code, _, stderr) = run(vm.vmrun().args(["stop", "e2e-stale"]));
    assert_eq!(
        code, 0,
        "stopping a VM that does not run is not an error: {stderr}"
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let status = vm.wait_running();
    assert_eq!(status["run_state"], "running");
    let (code, stdout, _) = run(vm.vmrun().args(["qmp", "e2e-stale", "query-status"]));
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(vm.stop(), 5);
    assert!(
        vm.runtime_leftovers().is_empty(),
        "{:?}",
        vm.runtime_leftovers()
    );
}

/// A guest whose one vCPU spins forever: a boot sector that jumps to itself.
pub(crate) fn spinning_vm(name: &str) -> Vm {
    let (accel, model) = seabios_accel(name);
    let vm = Vm::new(
        name,
        &format!(
            "[machine]\nmemory = \"64M\"\naccel = \"{accel}\"\n[cpu]\nmodel = \"{model}\"\ncores = 1\n\
             [pinning]\nvcpus = [1]\nemulator = \"0\"\nscheduler = \"other\"\n\
             [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[display]\nvga = \"none\"\n\
             [[disk]]\npath = \"spin.img\"\nformat = \"raw\"\nbus = \"sata\"\n[shutdown]\ntimeout = 1\n"
        ),
    );
    // SeaBIOS does not boot a disk of one sector; 1 MiB it does.
    let mut image = vec![0u8; 1 << 20];
    image[..2].copy_from_slice(&[0xEB, 0xFE]); // jmp $
    image[510..512].copy_from_slice(&[0x55, 0xAA]);
    std::fs::write(vm.dir.path().join("spin.img"), image).unwrap();
    vm
}

/// Runs `vm` for a few seconds and returns its vCPU 0 as `status --json` reports it.
fn measured_vcpu(vm: &Vm) -> Value {
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    std::thread::sleep(Duration::from_secs(4));
    let status = vm.status();
    assert_eq!(vm.stop(), 5, "SeaBIOS ignores ACPI; --force quits QEMU");
    let vcpu = status["vcpus"][0].clone();
    eprintln!("[{}] vCPU 0: {vcpu}", vm.name);
    vcpu
}

/// Busy processes, killed however the test ends.
pub(crate) struct Hogs(pub(crate) Vec<Child>);

impl Hogs {
    /// Four busy loops on CPU 1, each in a session of its own (`setsid`): with autogroup
    /// scheduling each session gets an equal share of the CPU.
    pub(crate) fn on_cpu_1() -> Hogs {
        Hogs(
            (0..4)
                .map(|_| {
                    Command::new("setsid")
                        .args(["taskset", "-c", "1", "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let _ = hog.kill();
            let _ = hog.wait();
        }
    }
}

#[test]
fn status_shows_a_vcpu_sharing_its_cpu_with_busy_threads_waiting_longer_than_one_alone() {
    // The same CPU, one run after the other: whatever else this machine runs weighs on both.
    let alone = measured_vcpu(&spinning_vm("e2e-alone"));
    // Busy processes in sessions of their own: with autogroup scheduling each session gets an
    // equal share of the CPU, so four of them leave the vCPU (in vmrun's session) a fifth.
    let hogs = Hogs::on_cpu_1();
    let shared = measured_vcpu(&spinning_vm("e2e-shared"));
    drop(hogs);
    let rate = |vcpu: &Value, key: &str| {
        vcpu[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} in {vcpu}"))
    };
    for vcpu in [&alone, &shared] {
        assert_eq!(vcpu["affinity"], "1");
        assert!(rate(vcpu, "recent_seconds") >= 2.0, "{vcpu}");
        assert!(rate(vcpu, "run_delay_ms") >= 0.0);
        assert!(vcpu["involuntary_switches"].is_u64(), "{vcpu}");
    }
    // The shared vCPU waits about 800 ms every second; the one alone only as long as
    // whatever else this machine runs keeps its CPU.
    assert!(
        rate(&shared, "run_delay_ms_per_s") > 500.0,
        "shared: {shared}"
    );
    assert!(
        rate(&shared, "run_delay_ms_per_s") > rate(&alone, "run_delay_ms_per_s"),
        "alone: {alone}\nshared: {shared}"
    );
    assert!(
        rate(&shared, "recent_run_delay_ms_per_s") > rate(&alone, "recent_run_delay_ms_per_s"),
        "alone: {alone}\nshared: {shared}"
    );
    // Involuntary switches are reported but not compared: their count depends on how the
    // scheduler slices the CPU among the busy processes (longer slices, fewer switches), not on
    // how long the vCPU waited.
}

#[test]
fn check_refuses_real_time_vcpus_on_the_cpu_of_another_running_vms_real_time_vcpu() {
    require_root();
    let dir = crate::common::tempdir();
    let write = |name: &str, cpu: usize| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[pinning]\nvcpus = [{cpu}]\n\
                 emulator = \"{}\"\n[firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n\
                 [display]\nvga = \"none\"\n[shutdown]\ntimeout = 1\n",
                1 - cpu
            ),
        )
        .unwrap();
        path
    };
    let first = write("e2e-rt-first", 1);
    let same_cpu = write("e2e-rt-same", 1);
    let other_cpu = write("e2e-rt-other", 0);
    let vmrun = || {
        let mut command = crate::common::vmrun(&repo_root());
        command
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--runtime-dir")
            .arg(dir.path().join("run"));
        command
    };
    let (code, _, stderr) = run(vmrun().arg("run").arg(&first).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = run(vmrun().arg("check").arg(&same_cpu));
    let (other_code, other_stdout, _) = run(vmrun().arg("check").arg(&other_cpu));
    let (own_code, own_stdout, _) = run(vmrun().arg("check").arg(&first));
    run(vmrun().args(["stop", "e2e-rt-first", "--force"]));
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout.contains("share CPUs 1 with the real-time vCPUs of the running VM e2e-rt-first"),
        "{stdout}"
    );
    assert!(
        !other_stdout.contains("running VM"),
        "{other_code}: {other_stdout}"
    );
    assert!(
        !own_stdout.contains("running VM"),
        "a VM does not collide with itself: {own_code}: {own_stdout}"
    );
}

fn seccomp_mode(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn qemu_runs_in_its_seccomp_sandbox_unless_the_profile_opts_out() {
    for (name, extra, mode) in [
        ("e2e-sandbox", "", "2"),
        ("e2e-nosandbox", "[qemu]\nsandbox = false\n", "0"),
    ] {
        let vm = Vm::seabios(name, "", extra);
        let (code, stderr) = vm.detach(&[]);
        assert_eq!(code, 0, "{stderr}");
        let pid = vm.wait_running()["pid"].as_u64().unwrap() as u32;
        assert_eq!(
            seccomp_mode(pid),
            mode,
            "{name}: /proc/{pid}/status Seccomp (2 = filter)"
        );
        // The guest still runs and is stopped from outside: the filter spares what QEMU needs.
        assert_eq!(vm.status()["run_state"], "running");
        assert_eq!(vm.stop(), 5);
    }
}
