//! `vmrun logs`: which file each flag prints, and `-f` following a console as it grows, is
//! truncated by the next run, and goes on.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{repo_root, run, vmrun};

fn logs_command(state: &std::path::Path) -> std::process::Command {
    let mut command = vmrun(&repo_root());
    command.arg("--state-dir").arg(state).arg("logs");
    command
}

/// Lines of a child's stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if send.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    receive
}

fn next_line(lines: &mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(10))
        .expect("vmrun logs -f printed nothing new within 10 s")
}

#[test]
fn each_flag_prints_its_own_file_and_a_missing_log_says_why() {
    let dir = crate::common::tempdir();
    let vm = dir.path().join("desk");
    std::fs::create_dir_all(&vm).unwrap();
    std::fs::write(
        vm.join("vmrun.log"),
        "10:00:00.000 INFO  [1] starting desk\n",
    )
    .unwrap();
    std::fs::write(vm.join("qemu.log"), "qemu-system-x86_64: warning: x\n").unwrap();
    for (flags, expected) in [
        (&[][..], "10:00:00.000 INFO  [1] starting desk"),
        (&["--qemu"][..], "qemu-system-x86_64: warning: x"),
    ] {
        let (code, stdout, stderr) = run(logs_command(dir.path()).arg("desk").args(flags));
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.trim(), expected, "{flags:?}");
    }
    let (code, stdout, stderr) = run(logs_command(dir.path()).args(["desk", "--console"]));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains("desk has no serial console log yet"),
        "{stderr}"
    );
    assert!(stderr.contains("serial = \"log\""), "{stderr}");
    let (code, _, stderr) = run(logs_command(dir.path()).args(["desk", "--console", "--qemu"]));
    assert_eq!(code, 2, "{stderr}");
    // --raw only means something for the console.
    let (code, _, stderr) = run(logs_command(dir.path()).args(["desk", "--qemu", "--raw"]));
    assert_eq!(code, 2, "{stderr}");

    // An empty QEMU log prints nothing, and says why on stderr.
    std::fs::write(vm.join("qemu.log"), "").unwrap();
    let (code, stdout, stderr) = run(logs_command(dir.path()).args(["desk", "--qemu"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("qemu.log is empty: QEMU wrote nothing to stderr in its last run"),
        "{stderr}"
    );

    // The console without its escape sequences, unless --raw.
    std::fs::write(
        vm.join("console.log"),
        "\x1b[2J\x1b[01;01H\x1b[1m\x1b[33mShell> \x1b[0mver\r\nUEFI v2.70\r\n",
    )
    .unwrap();
    let (_, stdout, _) = run(logs_command(dir.path()).args(["desk", "--console"]));
    assert_eq!(stdout, "Shell> ver\nUEFI v2.70\n");
    let (_, stdout, _) = run(logs_command(dir.path()).args(["desk", "--console", "--raw"]));
    assert!(stdout.starts_with("\x1b[2J"), "{stdout:?}");
}

#[test]
fn follow_prints_a_growing_console_across_a_restart() {
    let dir = crate::common::tempdir();
    let console = dir.path().join("desk/console.log");
    let mut child = logs_command(dir.path())
        .args(["desk", "-f", "--console"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    // Not there yet: the VM has not started. It is waited for.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::create_dir_all(console.parent().unwrap()).unwrap();
    std::fs::write(&console, "BdsDxe: loading Boot0001\n").unwrap();
    assert_eq!(next_line(&lines), "BdsDxe: loading Boot0001");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&console)
        .unwrap();
    for n in 0..3 {
        writeln!(file, "Shell> line {n}").unwrap();
        assert_eq!(next_line(&lines), format!("Shell> line {n}"));
    }
    // The next run's QEMU truncates the console file.
    std::fs::write(&console, "second boot\n").unwrap();
    assert_eq!(next_line(&lines), "second boot");
    assert!(child.try_wait().unwrap().is_none(), "-f ended by itself");
    child.kill().unwrap();
    child.wait().unwrap();
}
