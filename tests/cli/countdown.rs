//! Long waits show a countdown on a terminal and nothing extra elsewhere.

use std::time::Duration;

use crate::common::run;
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
    assert!(
        text.contains("vmrun: stopping cd-tty: 3 s left")
            || text.contains("vmrun: stopping cd-tty: 2 s left"),
        "{text:?}"
    );
    assert!(
        text.contains("vmrun: stopping cd-tty: 1 s left"),
        "{text:?}"
    );
    // The countdown's line is erased before the outcome is printed on its own line.
    assert!(
        text.contains("\r\x1b[2Kvmrun: cd-tty: the guest did not shut down in time"),
        "{text:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
}
