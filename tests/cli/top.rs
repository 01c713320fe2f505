//! `vmrun top` against a real VM whose one vCPU shares its CPU with busy processes: on a real
//! terminal (tmux, read back with capture-pane) and as `--json`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::run;
use crate::run_e2e::{spinning_vm, Hogs, Vm};

/// Each test here runs a VM whose vCPU spins on CPU 1: one at a time, or they would be each
/// other's competitors.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The competitor a finding names: `is shared with pid P (NAME)`.
fn named_competitor(screen: &str) -> Option<(u32, String)> {
    let rest = screen.split_once("is shared with pid ")?.1;
    let (pid, rest) = rest.split_once(" (")?;
    let name = rest.split_once(')')?.0;
    Some((pid.parse().ok()?, name.to_string()))
}

/// Stops the VM however the test ends.
struct Running<'a>(&'a Vm);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A tmux server of the test's own (its own socket), killed however the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str, width: u16, height: u16) -> Tmux {
        let tmux = Tmux {
            socket: format!("vmrun-top-test-{}", std::process::id()),
        };
        let status = tmux
            .command()
            .args(["new-session", "-d", "-s", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(command)
            .status()
            .expect("tmux runs (scripts/install-deps.sh --tests installs it)");
        assert!(status.success(), "tmux new-session: {status}");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let status = self
            .command()
            .args(["send-keys", "-t", "top", keys])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The screen once `done` holds for it; fails with the last screen after `within`.
    fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The vCPU 0 row's run delay on the screen (`0    1    812.3 ...`).
fn delay_on_screen(screen: &str) -> Option<f64> {
    screen.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.first() == Some(&"0") && fields.get(1) == Some(&"1"))
            .then(|| fields.get(2)?.parse().ok())?
    })
}

#[test]
fn top_on_a_terminal_shows_the_vcpu_waiting_and_names_the_busy_process_on_its_cpu() {
    let _serial = one_at_a_time();
    let vm = spinning_vm("top-shared");
    let hogs = Hogs::on_cpu_1();
    let hog_pids: Vec<u32> = hogs.0.iter().map(|h| h.id()).collect();
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let running = Running(&vm);
    vm.wait_running();
    let vmrun = vm.vmrun();
    let mut words: Vec<String> = std::iter::once(vmrun.get_program())
        .chain(vmrun.get_args())
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    words.extend(["top".into(), vm.name.clone()]);
    let command = format!(
        "{}; echo top exited $?; sleep 60",
        shlex::try_join(words.iter().map(String::as_str)).unwrap()
    );
    // 100 columns: narrower than the full table, wide enough for a finding on one line.
    let tmux = Tmux::start(&command, 100, 30);
    let screen = tmux.wait_for(
        "finding that names the process sharing CPU 1",
        Duration::from_secs(30),
        |screen| named_competitor(screen).is_some() && delay_on_screen(screen).is_some(),
    );
    eprintln!("{screen}");
    assert!(screen.contains("vCPU CPU  wait ms/s"), "{screen}");
    let delay = delay_on_screen(&screen).unwrap();
    // Four busy processes leave the vCPU about a fifth of CPU 1: it waits most of each second.
    assert!(delay > 300.0, "vCPU 0 waits only {delay} ms/s:\n{screen}");
    assert!(
        screen.contains("! vCPU 0 waits ") && screen.contains("CPU 1 is shared with pid"),
        "{screen}"
    );
    // The competitor is named truly: one of the busy processes, or whatever else of this
    // machine ran there (checked against its /proc entry while it still exists).
    let (pid, name) = named_competitor(&screen).unwrap();
    if hog_pids.contains(&pid) {
        assert_eq!(name, "sh", "{screen}");
    } else if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        assert_eq!(name, comm.trim_end(), "{screen}");
    }
    tmux.keys("q");
    let after = tmux.wait_for("exit after q", Duration::from_secs(30), |screen| {
        screen.contains("top exited")
    });
    assert!(after.contains("top exited 0"), "{after}");
    drop(running);
    drop(hogs);
}

/// The `--json` schema; the unit tests check the same keys on a fake host.
fn check_schema(json: &Value) {
    let keys = |value: &Value| -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(json), ["interval_s", "unix_ms", "unreadable", "vms"]);
    assert!(json["unix_ms"].is_u64() && json["interval_s"].is_f64());
    assert!(json["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .all(Value::is_string));
    for vm in json["vms"].as_array().unwrap() {
        assert_eq!(
            keys(vm),
            [
                "accel",
                "findings",
                "kvm",
                "memory",
                "name",
                "other_threads",
                "pid",
                "vcpus"
            ]
        );
        assert_eq!(
            keys(&vm["kvm"]),
            [
                "exits_per_s",
                "halt_exits_per_s",
                "halt_poll_success_percent",
                "halt_polls_per_s",
                "unavailable"
            ]
        );
        assert_eq!(
            keys(&vm["memory"]),
            ["guest_mib", "hugepages_mib", "rss_mib"]
        );
        for vcpu in vm["vcpus"].as_array().unwrap() {
            assert_eq!(
                keys(vcpu),
                [
                    "affinity",
                    "competitors",
                    "cpu",
                    "cpu_max_mhz",
                    "cpu_mhz",
                    "cpu_percent",
                    "governor",
                    "index",
                    "interrupts",
                    "interrupts_per_s",
                    "involuntary_switches_per_s",
                    "policy",
                    "priority",
                    "run_delay_ms_per_s",
                    "softirqs",
                    "softirqs_per_s",
                    "thread_id"
                ]
            );
            assert!(vcpu["index"].is_u64() && vcpu["cpu"].is_u64());
            assert!(vcpu["thread_id"].is_i64() && vcpu["policy"].is_string());
            assert!(vcpu["run_delay_ms_per_s"].is_f64(), "{vcpu}");
            assert!(vcpu["interrupts_per_s"].is_f64() && vcpu["softirqs_per_s"].is_f64());
            let sources = vcpu["interrupts"].as_array().unwrap().iter();
            for source in sources.chain(vcpu["softirqs"].as_array().unwrap()) {
                assert_eq!(keys(source), ["name", "per_s", "source"]);
                assert!(source["per_s"].as_f64().unwrap() > 0.0);
            }
            for competitor in vcpu["competitors"].as_array().unwrap() {
                assert_eq!(
                    keys(competitor),
                    ["cpu_percent", "pid", "process", "runnable", "thread", "tid"]
                );
            }
        }
        for thread in vm["other_threads"].as_array().unwrap() {
            assert_eq!(
                keys(thread),
                ["affinity", "cpu", "cpu_percent", "name", "thread_id"]
            );
        }
        assert!(vm["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string));
    }
}

#[test]
fn top_json_prints_one_object_per_second_with_the_documented_schema() {
    let _serial = one_at_a_time();
    let vm = spinning_vm("top-json");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let running = Running(&vm);
    let status = vm.wait_running();
    // --once: one object; all running VMs without a name (this test's runtime dir has one).
    let (code, stdout, stderr) = run(vm.vmrun().args(["top", "--json", "--once"]));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let report: Value = serde_json::from_str(lines[0]).unwrap();
    check_schema(&report);
    let vms = report["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 1, "{report}");
    assert_eq!(vms[0]["name"], "top-json");
    assert_eq!(vms[0]["pid"], status["pid"]);
    let vcpu = &vms[0]["vcpus"][0];
    assert_eq!(vcpu["thread_id"], status["vcpus"][0]["thread_id"]);
    assert_eq!(
        (vcpu["cpu"].as_u64(), vcpu["affinity"].as_str()),
        (Some(1), Some("1"))
    );
    assert!(vcpu["cpu_percent"].is_f64(), "{vcpu}");
    let accel = status["accel"].as_str().unwrap();
    let kvm = &vms[0]["kvm"];
    if accel == "tcg" {
        assert!(kvm["unavailable"].is_string(), "{kvm}");
    }
    eprintln!("[top-json] accelerator {accel}, KVM statistics: {kvm}");
    // The guest's RAM from QMP.
    assert_eq!(vms[0]["memory"]["guest_mib"], 64, "{report}");

    // Without --once: an object per second until stopped.
    let mut child = vm
        .vmrun()
        .args(["top", &vm.name, "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let objects: Vec<Value> = (0..2)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    for object in &objects {
        check_schema(object);
    }
    assert!(objects[1]["unix_ms"].as_u64() > objects[0]["unix_ms"].as_u64());
    drop(running);

    // A stopped VM: exit 7 as for `status`.
    let (code, _, stderr) = run(vm.vmrun().args(["top", &vm.name, "--once"]));
    assert_eq!(code, 7, "{stderr}");
    assert!(stderr.contains("is not running"), "{stderr}");
}

#[test]
fn top_without_a_terminal_asks_for_json_or_once() {
    let _serial = one_at_a_time();
    let vm = spinning_vm("top-pipe");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let _running = Running(&vm);
    vm.wait_running();
    let (code, _, stderr) = run(vm.vmrun().args(["top", &vm.name]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--json"), "{stderr}");
    // --once as text: the table a pipe can read.
    let (code, stdout, stderr) = run(vm.vmrun().args(["top", &vm.name, "--once"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("vmrun top: 1 VM"), "{stdout}");
    assert!(stdout.contains("vCPU CPU  wait ms/s sched"), "{stdout}");
    assert!(stdout.contains("top-pipe pid "), "{stdout}");
}

#[test]
fn top_as_an_unprivileged_user_shows_what_it_can_read_and_names_what_it_cannot() {
    use std::os::unix::process::CommandExt;
    let _serial = one_at_a_time();
    let vm = spinning_vm("top-nobody");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let _running = Running(&vm);
    let status = vm.wait_running();
    let mut command = vm.vmrun();
    command
        .args(["top", &vm.name, "--once", "--json"])
        .uid(65534)
        .gid(65534);
    let (code, stdout, stderr) = run(&mut command);
    // The runtime directory belongs to QEMU's group: another user cannot even see the VM, and
    // is told so rather than that it does not run.
    if stderr.contains("cannot read") {
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("Permission denied"), "{stderr}");
        eprintln!("[top-nobody] QEMU does not run as nobody here: {stderr}");
        return;
    }
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    check_schema(&report);
    let vcpu = &report["vms"][0]["vcpus"][0];
    assert_eq!(vcpu["thread_id"], status["vcpus"][0]["thread_id"]);
    assert!(vcpu["run_delay_ms_per_s"].is_f64(), "{vcpu}");
    // Root's QMP monitor: either reachable (guest RAM known) or named as unreadable.
    let unreadable = report["unreadable"].to_string();
    let memory = &report["vms"][0]["memory"];
    assert!(
        memory["guest_mib"] == 64 || unreadable.contains("QMP of `top-nobody`"),
        "{memory} {unreadable}"
    );
    eprintln!("[top-nobody] unreadable: {unreadable}");
}
