//! `vmrun console` in a real terminal (tmux) against the demo VM: OVMF's UEFI shell under TCG
//! answers what is typed, Ctrl-] detaches and the VM runs on; `logs --console` shows the same
//! session without its escape sequences.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{repo_root, run};
use crate::run_e2e::Vm;

/// A tmux server of the test's own (its own socket), killed with everything in it on drop.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    /// None when tmux is not installed (scripts/install-deps.sh --tests installs it).
    pub(crate) fn start(name: &str, command: &str) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: tmux is not installed (apt-get install tmux)");
            return None;
        }
        let tmux = Tmux {
            socket: format!("vmrun-test-{name}-{}", std::process::id()),
        };
        let status = tmux
            .command()
            .args([
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "50",
                "sh",
                "-c",
                command,
            ])
            .status()
            .unwrap();
        assert!(status.success());
        Some(tmux)
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    /// The pane's text as a terminal shows it.
    pub(crate) fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-J"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Keys as tmux names them (`Enter`, `C-]`), or literal text with `literal`.
    pub(crate) fn send(&self, keys: &str, literal: bool) {
        let mut command = self.command();
        command.arg("send-keys");
        if literal {
            command.arg("-l");
        }
        assert!(command.arg(keys).status().unwrap().success());
    }

    pub(crate) fn wait_for_screen(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let last = self.screen();
            if done(&last) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not on the screen after {within:?}:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// Stops the VM however the test ends.
pub(crate) struct StopOnDrop<'a>(pub(crate) &'a Vm);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The command line of the real vmrun for this VM, for a shell in tmux.
pub(crate) fn vmrun_line(vm: &Vm, args: &str) -> String {
    format!(
        "{} --state-dir {} --runtime-dir {} {args}",
        env!("CARGO_BIN_EXE_vmrun"),
        vm.state_dir().display(),
        vm.runtime_dir().display()
    )
}

fn demo() -> Vm {
    let text = std::fs::read_to_string(repo_root().join("vm-profiles/demo.toml")).unwrap();
    Vm::new("demo", &text)
}

fn console_log(vm: &Vm) -> PathBuf {
    vm.state_dir().join("demo/console.log")
}

/// Polls the console log every 100 ms until it holds `text`.
fn wait_for_log(vm: &Vm, text: &str, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while !std::fs::read_to_string(console_log(vm)).is_ok_and(|log| log.contains(text)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{text:?} not in the console log after {within:?}: {:?}",
            std::fs::read_to_string(console_log(vm)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn console_types_into_the_uefi_shell_reads_its_answer_and_detaches_with_ctrl_bracket() {
    let vm = demo();
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let _stop = StopOnDrop(&vm);
    vm.wait_running();
    // OVMF under TCG takes a few seconds to reach its shell (and counts 5 s down first).
    wait_for_log(&vm, "Shell> ", Duration::from_secs(90));
    let Some(tmux) = Tmux::start(
        "console",
        &format!(
            "{}; echo \"exit=$?\"; sleep 60",
            vmrun_line(&vm, "console demo")
        ),
    ) else {
        return;
    };
    tmux.wait_for_screen("the banner", Duration::from_secs(10), |screen| {
        screen.contains("vmrun: connected to demo's serial console; detach with Ctrl-]")
    });
    tmux.send("echo vmrun-console-test", true);
    tmux.send("Enter", false);
    // The shell echoes what is typed, then answers on a line of its own.
    tmux.wait_for_screen("the shell's answer", Duration::from_secs(30), |screen| {
        screen.contains("echo vmrun-console-test")
            && screen
                .lines()
                .any(|line| line.trim() == "vmrun-console-test")
    });
    tmux.send("C-]", false);
    tmux.wait_for_screen("the detach", Duration::from_secs(10), |screen| {
        screen.contains("vmrun: detached from demo's console") && screen.contains("exit=0")
    });
    // The VM runs on, and the session is in the log.
    assert_eq!(vm.status()["running"], true);
    let (code, stripped, _) = run(vm.vmrun().args(["logs", "demo", "--console"]));
    assert_eq!(code, 0);
    assert!(stripped.contains("echo vmrun-console-test"), "{stripped}");
    assert!(
        stripped.lines().any(|line| line == "vmrun-console-test"),
        "{stripped}"
    );
    assert!(
        !stripped.contains('\x1b') && !stripped.contains('\r'),
        "{stripped:?}"
    );
    let (_, raw, _) = run(vm.vmrun().args(["logs", "demo", "--console", "--raw"]));
    assert!(
        raw.contains("\x1b[") && raw.contains("vmrun-console-test\r\n"),
        "{raw:?}"
    );
    // A second attach works once the first left: QEMU listens again.
    let mut again = vm
        .vmrun()
        .args(["console", "demo"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    again
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo second-client\r")
        .unwrap();
    // The end of its input: it prints the guest's answer until the guest is quiet.
    let output = again.wait_with_output().unwrap();
    assert!(output.status.success());
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(answer.contains("\r\nsecond-client\r\n"), "{answer:?}");
    wait_for_log(&vm, "\r\nsecond-client\r\n", Duration::from_secs(5));
}

#[test]
fn console_of_a_vm_that_is_not_running_exits_7() {
    let vm = demo();
    let (code, _, stderr) = run(vm.vmrun().args(["console", "demo"]));
    assert_eq!(code, 7, "{stderr}");
    assert!(stderr.contains("not running"), "{stderr}");
}
