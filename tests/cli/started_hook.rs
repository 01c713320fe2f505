//! The `started` hook: it starts once every vCPU is pinned and the guest runs (the hook itself
//! reads the vCPU threads' affinities from /proc), runs alongside the guest without holding up
//! supervision, and is ended at teardown before the host is given back.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::run;
use crate::run_e2e::{wait_gone, Vm};

fn wait_for_file(path: &Path, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {within:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A hook that records what it sees of QEMU's vCPU threads, then stays until SIGTERM.
fn write_hook(dir: &Path, ignore_term: bool) -> std::path::PathBuf {
    let script = dir.join("hook.sh");
    let on_term = if ignore_term {
        "trap 'echo term-ignored >> \"$out.events\"' TERM"
    } else {
        "trap 'echo term >> \"$out.events\"; exit 0' TERM"
    };
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nout=\"$1\"\n{on_term}\necho $$ > \"$out.pid\"\n\
             for t in /proc/$VMRUN_QEMU_PID/task/*; do\n\
               comm=$(cat $t/comm)\n\
               case \"$comm\" in \"CPU \"*) echo \"$comm $(grep Cpus_allowed_list $t/status | cut -f2)\" >> \"$out.tmp\";; esac\n\
             done\n\
             echo \"phase=$VMRUN_PHASE vm=$VMRUN_VM\" >> \"$out.tmp\"\n\
             mv \"$out.tmp\" \"$out\"\n\
             while :; do sleep 0.1; done\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn the_started_hook_sees_pinned_vcpus_and_is_ended_before_post_stop() {
    let dir = crate::common::tempdir();
    let out = dir.path().join("seen");
    let script = write_hook(dir.path(), false);
    let after = dir.path().join("post-stop");
    let vm = Vm::seabios(
        "hook-started",
        "[pinning]\nvcpus = [1, 0]\nemulator = \"0-1\"\n",
        &format!(
            "[hooks]\nstarted = [{script:?}, {out:?}]\n\
             post_stop = [\"sh\", \"-c\", \"if kill -0 $(cat {out_path}.pid) 2>/dev/null; then echo alive; else echo gone; fi > {after}\"]\n",
            out_path = out.display(),
            after = after.display(),
        ),
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let status = vm.wait_running();
    let seen = wait_for_file(&out, Duration::from_secs(10));
    let mut vcpus: Vec<&str> = seen.lines().filter(|l| l.starts_with("CPU ")).collect();
    vcpus.sort();
    assert_eq!(vcpus.len(), 2, "{seen}");
    assert!(
        vcpus[0].starts_with("CPU 0/") && vcpus[0].ends_with(" 1"),
        "{seen}"
    );
    assert!(
        vcpus[1].starts_with("CPU 1/") && vcpus[1].ends_with(" 0"),
        "{seen}"
    );
    assert!(seen.contains("phase=started vm=hook-started"), "{seen}");
    // The hook runs alongside the guest; supervision goes on (status answers).
    let hook_pid: u32 = wait_for_file(
        Path::new(&format!("{}.pid", out.display())),
        Duration::from_secs(5),
    )
    .trim()
    .parse()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !wait_gone(hook_pid, Duration::from_millis(10)),
        "the hook ended by itself"
    );
    assert_eq!(vm.status()["running"], true);

    assert_eq!(vm.stop(), 5);
    assert!(
        wait_gone(hook_pid, Duration::from_secs(5)),
        "the hook outlived the VM"
    );
    let events = std::fs::read_to_string(format!("{}.events", out.display())).unwrap();
    assert_eq!(events.trim(), "term", "ended by SIGTERM: {events}");
    assert_eq!(std::fs::read_to_string(&after).unwrap().trim(), "gone");
    let log = std::fs::read_to_string(vm.state_dir().join("hook-started/vmrun.log")).unwrap();
    let resumed = log.find("vCPUs resumed").expect("resumed");
    let started = log.find("started hook: ").expect("started");
    let ended = log.find("ended (SIGTERM)").expect("ended");
    let post_stop = log.find("post_stop hook: ").expect("post_stop");
    assert!(
        resumed < started && started < ended && ended < post_stop,
        "{log}"
    );
    let _ = status;
}

#[test]
fn a_started_hook_that_ignores_sigterm_is_killed_after_hooks_timeout() {
    let dir = crate::common::tempdir();
    let out = dir.path().join("seen");
    let script = write_hook(dir.path(), true);
    let vm = Vm::seabios(
        "hook-stubborn",
        "[pinning]\nvcpus = [1, 1]\nemulator = \"0\"\n",
        &format!("[hooks]\nstarted = [{script:?}, {out:?}]\ntimeout = 2\n"),
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    wait_for_file(&out, Duration::from_secs(10));
    let hook_pid: u32 = wait_for_file(
        Path::new(&format!("{}.pid", out.display())),
        Duration::from_secs(5),
    )
    .trim()
    .parse()
    .unwrap();
    let started = Instant::now();
    let (code, _, stderr) = run(vm.vmrun().args(["stop", &vm.name, "--force"]));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(wait_gone(hook_pid, Duration::from_secs(1)));
    let log = std::fs::read_to_string(vm.state_dir().join("hook-stubborn/vmrun.log")).unwrap();
    assert!(
        log.contains("was still running 2 s after SIGTERM and was killed"),
        "{log}"
    );
}
