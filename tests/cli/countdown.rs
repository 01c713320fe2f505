//! Long waits show a countdown on a terminal and nothing extra elsewhere.

use std::time::Duration;

use crate::common::run;
use crate::console::{vmrun_line, StopOnDrop, Tmux};
use crate::run_e2e::Vm;

fn seabios_vm(name: &str) -> Vm {
    // SeaBIOS without an OS ignores ACPI power-off: the stop waits out its whole timeout.
    Vm::seabios(name, "[pinning]\nvcpus = [1, 1]\nemulator = \"0\"\n", "")
}

#[test]
fn stop_without_a_terminal_prints_only_the_outcome() {
    let vm = seabios_vm("cd-pipe");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    let (code, stdout, stderr) = run(vm.vmrun().args(["stop", &vm.name, "--timeout", "2"]));
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "vmrun: cd-pipe: the guest did not shut down in time; stopped by QMP quit\n"
    );
}

#[test]
fn stop_on_a_terminal_counts_down_and_erases_the_line() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: script(1) from util-linux is not installed");
        return;
    }
    let vm = seabios_vm("cd-tty");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    let command = format!(
        "{} --state-dir {} --runtime-dir {} stop cd-tty --timeout 3",
        env!("CARGO_BIN_EXE_vmrun"),
        vm.state_dir().display(),
        vm.runtime_dir().display()
    );
    let transcript = vm.dir.path().join("typescript");
    let output = std::process::Command::new("script")
        .args(["-qec", &command])
        .arg(&transcript)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5));
    let text = String::from_utf8_lossy(&output.stdout);
    let waiting = "vmrun: stopping cd-tty: waiting for the guest to power off (ACPI): ";
    assert!(
        text.contains(&format!("{waiting}3 s left, then QEMU is forced off"))
            || text.contains(&format!("{waiting}2 s left, then QEMU is forced off")),
        "{text:?}"
    );
    assert!(
        text.contains(&format!("{waiting}1 s left, then QEMU is forced off")),
        "{text:?}"
    );
    // The countdown's line is erased before the outcome is printed on its own line.
    assert!(
        text.contains("\r\x1b[2Kvmrun: cd-tty: the guest did not shut down in time"),
        "{text:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn stop_in_a_terminal_says_what_it_waits_for_and_counts_the_profiles_timeout_down() {
    // Without --timeout: the profile's shutdown.timeout (2 s here), read from the profile the
    // supervisor runs.
    let vm = seabios_vm("cd-tmux");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let _stop = StopOnDrop(&vm);
    vm.wait_running();
    let Some(tmux) = Tmux::start(
        "stop",
        &format!(
            "{}; echo \"exit=$?\"; sleep 60",
            vmrun_line(&vm, "stop cd-tmux")
        ),
    ) else {
        return;
    };
    // The line is rewritten in place: collect what the screen showed over time.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let screen = tmux.screen();
        for line in screen.lines().filter(|l| l.contains("stopping cd-tmux")) {
            seen.insert(line.trim_end().to_string());
        }
        if screen.contains("exit=") {
            assert!(screen.contains("exit=5"), "{screen}");
            assert!(
                // By QMP quit, or by SIGTERM on a loaded machine where quit takes too long.
                screen.contains("vmrun: cd-tmux: the guest did not shut down in time; stopped by"),
                "{screen}"
            );
            assert!(
                !screen
                    .lines()
                    .any(|l| l.contains("s left") && l.contains("did not shut down")),
                "the countdown is erased before the outcome: {screen}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{screen}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.iter().any(|l| l
            == "vmrun: stopping cd-tmux: waiting for the guest to power off (ACPI): 1 s left, then QEMU is forced off"),
        "{seen:#?}"
    );
}

#[test]
fn stop_with_v_logs_what_it_waits_for() {
    let vm = seabios_vm("cd-verbose");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let _stop = StopOnDrop(&vm);
    vm.wait_running();
    let (code, _, stderr) = run(vm.vmrun().args(["-v", "stop", "cd-verbose"]));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("vmrun: stopping cd-verbose: waiting up to 2 s for the guest to power off (ACPI), then QMP quit, SIGTERM, SIGKILL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("vmrun: stopping cd-verbose: the guest did not power off in time; vmrun forces QEMU off"),
        "{stderr}"
    );
}
