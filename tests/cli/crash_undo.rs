//! `kill -9` at random points of `stop` and of `recover` on the fake single-GPU host: after a
//! final `vmrun recover` the fake tree is byte for byte what it was before the run. Undo is
//! journaled per record (`{"done":N}` after each), so a killed undo is continued, never
//! replayed from the start: replaying "give 01:00.0 back to no driver" after the nvidia module
//! was loaded again would leave the GPU without its driver.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{run, wait_for};
use crate::fake_host::{diff, entries_by_key};
use crate::host_e2e::{setup, Setup};

/// Every file, link and directory of the fake tree with its exact bytes, mode and owner; the
/// fake kernel's and the stubs' logs excepted.
fn raw_tree(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for (key, path) in entries_by_key(base, dir) {
            if key == ".fake/removed"
                || [".fake/calls.log", ".fake/modules.tmp", ".fake/kernel.log"]
                    .contains(&key.as_str())
            {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let owner = format!("{}:{} {:o}", meta.uid(), meta.gid(), meta.mode());
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(key, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(key, format!("dir {owner}"));
                walk(base, &path, out);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                // Where a plain file stands in for a kernel attribute, the bytes a write left
                // are not what the kernel would show: an attribute reads back with its newline
                // whatever was written, a cleared override reads "(null)", and /proc/modules
                // is listed in the kernel's order, not the order of loading.
                let shown = if key == "proc/modules" {
                    let mut lines: Vec<&str> = text.lines().collect();
                    lines.sort();
                    lines.join("\n")
                } else if key.ends_with("/driver_override") && text.trim().is_empty() {
                    "(null)".to_string()
                } else if key.starts_with("sys/") {
                    text.trim_end().to_string()
                } else {
                    format!("{bytes:?}")
                };
                out.insert(key, format!("{owner} {shown:?}"));
            } else {
                out.insert(key, format!("node {owner} {}", meta.rdev()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A small xorshift generator: the points are random, the seed is printed to replay a failure
/// (`VMRUN_KILL_SEED`).
struct Points(u64);

impl Points {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Entries of the journal not undone yet.
fn pending(s: &Setup) -> usize {
    vmrun::host::journal::Journal::at(&s.journal())
        .pending()
        .map(|p| p.len())
        .unwrap_or(usize::MAX)
}

fn qemu_gone(s: &Setup) {
    let pidfile = s.dir.path().join("run/sgpu/qemu.pid");
    if let Some(qemu) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    {
        wait_for("QEMU to go", Duration::from_secs(10), || {
            !vmrun::run::state::process_alive(qemu, "qemu")
        });
    }
}

#[test]
fn kill_9_at_random_points_of_stop_and_recover_then_recover_restores_the_tree_byte_for_byte() {
    let s = setup();
    let rounds: u64 = std::env::var("VMRUN_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed = std::env::var("VMRUN_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("[kill-9] seed {seed} (VMRUN_KILL_SEED replays it)");
    let mut points = Points(seed);
    let before = raw_tree(&s.host.root);
    let (mut stop_mid_undo, mut stop_before_undo, mut recover_mid_undo) = (0, 0, 0);
    let started = Instant::now();
    for round in 0..rounds {
        let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
        assert_eq!(code, 0, "round {round}: {stderr}");
        let supervisor = vmrun::run::state::read_json::<vmrun::run::state::RunState>(
            &s.dir.path().join("run/sgpu/state.json"),
        )
        .expect("state.json")
        .vmrun_pid;
        let journaled = pending(&s);
        // `stop` (forced half the time: the undo starts at once; graceful: after the 1 s
        // shutdown timeout), and the supervisor killed at a random point of it.
        let force = points.below(2) == 0;
        let delay = if force {
            points.below(400)
        } else {
            700 + points.below(900)
        };
        let mut stop = s.vmrun();
        stop.args(["stop", "sgpu"]);
        if force {
            stop.arg("--force");
        }
        let mut stop = stop
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL);
        let _ = stop.wait();
        qemu_gone(&s);
        let left_by_stop = pending(&s);
        if left_by_stop == journaled {
            stop_before_undo += 1;
        } else if left_by_stop > 0 {
            stop_mid_undo += 1;
        }
        // `recover`, killed at a random point, then a `recover` that finishes.
        let delay = points.below(300);
        let mut recover = s
            .vmrun()
            .args(["recover", "sgpu"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = kill(Pid::from_raw(recover.id() as i32), Signal::SIGKILL);
        let _ = recover.wait();
        let left_by_recover = pending(&s);
        if left_by_recover > 0 && left_by_recover < left_by_stop {
            recover_mid_undo += 1;
        }
        let (code, _, stderr) = run(s.vmrun().args(["recover", "sgpu"]));
        assert_eq!(
            code, 0,
            "round {round} (seed {seed}): stop {} killed after {delay} ms, {left_by_stop} left, then recover killed, \
             {left_by_recover} left: {stderr}",
            if force { "--force" } else { "" }
        );
        let after = raw_tree(&s.host.root);
        let changed = diff(&before, &after);
        if !changed.is_empty() {
            let log = std::fs::read_to_string(s.dir.path().join("state/sgpu/vmrun.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("vmrun.log (last lines, newest first):\n{}", tail.join("\n"));
        }
        assert!(
            changed.is_empty(),
            "round {round} (seed {seed}): the fake host is not as before:\n{}",
            changed.join("\n")
        );
        assert!(!s.journal().exists(), "round {round}");
    }
    eprintln!(
        "[kill-9] {rounds} kills in stop ({stop_mid_undo} in the middle of its undo, {stop_before_undo} before it began), \
         {rounds} kills in recover ({recover_mid_undo} in the middle of its undo), host byte for byte as before each time, \
         {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The deterministic reproducer: the journal of a run that was fully undone, replayed
/// again. Each record acts only on what vmrun itself changed, so the second replay changes
/// nothing: the GPU stays on the nvidia driver its module's reload gave it back.
#[test]
fn a_journal_replayed_after_a_complete_undo_changes_nothing() {
    let s = setup();
    let before = raw_tree(&s.host.root);
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    let journal = std::fs::read(s.journal()).unwrap();
    let (code, _, stderr) = run(s.vmrun().args(["stop", "sgpu", "--force"]));
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(s.host.driver("0000:01:00.0").as_deref(), Some("nvidia"));
    std::fs::write(s.journal(), journal).unwrap();
    let (code, _, stderr) = run(s.vmrun().args(["recover", "sgpu"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        s.host.driver("0000:01:00.0").as_deref(),
        Some("nvidia"),
        "the replay took the GPU from its driver"
    );
    let changed = diff(&before, &raw_tree(&s.host.root));
    assert!(changed.is_empty(), "{}", changed.join("\n"));
}

/// Ctrl-C to the caller of `run --detach` while the VM starts cancels the start: the caller
/// says so and returns only once the supervisor has ended and given the host back. (Before, the
/// caller died silently and the VM started anyway.) A signal that comes after the VM was
/// reported running is too late to cancel: the VM runs and the caller exits 0.
#[test]
fn sigint_to_the_caller_of_run_detach_cancels_the_start_and_restores_the_host() {
    let s = setup();
    let before = raw_tree(&s.host.root);
    let (mut cancelled, mut too_late, mut before_fork) = (0, 0, 0);
    // `None`: as soon as the supervisor has begun to prepare the host (its journal exists),
    // which is always inside the start, whatever this machine's speed. The fixed delays land
    // where they land: before the fork, during the start or after it, as the machine goes (a
    // shell's background job even starts with SIGINT ignored until the caller's handler).
    for when in [None, Some(10), Some(200), Some(350), Some(500), Some(700)] {
        let delay = match when {
            Some(ms) => format!("{ms} ms"),
            None => "the journal's creation".to_string(),
        };
        let caller = s
            .vmrun()
            .arg("run")
            .arg(&s.profile)
            .arg("--detach")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        match when {
            Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
            None => {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while !s.journal().exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let _ = kill(Pid::from_raw(caller.id() as i32), Signal::SIGINT);
        let output = caller.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        use std::os::unix::process::ExitStatusExt;
        if output.status.signal() == Some(libc::SIGINT) {
            // Before the supervisor was forked (parsing, the preflight): nothing started, and
            // the checks below hold as for a cancelled start.
            before_fork += 1;
        } else if output.status.code() == Some(0) {
            assert!(stderr.contains("is running"), "{stderr}");
            too_late += 1;
            let (code, _, stderr) = run(s.vmrun().args(["stop", "sgpu", "--force"]));
            assert_eq!(code, 5, "{stderr}");
        } else {
            assert_eq!(
                output.status.code(),
                Some(1),
                "SIGINT after {delay}: the caller must not die of it: {:?} {stderr}",
                output.status
            );
            assert!(
                stderr.contains("SIGINT received while sgpu started: the start was cancelled"),
                "{stderr}"
            );
            cancelled += 1;
        }
        // By its profile: a start cancelled before it made the VM's state directory leaves
        // no VM of that bare name behind (exit 2, unknown), which is not what is asked here.
        let (code, _, _) = run(s.vmrun().arg("status").arg(&s.profile));
        assert_eq!(code, 7, "after SIGINT at {delay} the VM must not run");
        let changed = diff(&before, &raw_tree(&s.host.root));
        assert!(
            changed.is_empty(),
            "SIGINT at {delay} left:\n{}",
            changed.join("\n")
        );
        assert!(!s.journal().exists());
    }
    eprintln!(
        "[sigint] {cancelled} starts cancelled, {before_fork} callers interrupted before the fork, \
         {too_late} signals after the VM ran"
    );
    assert!(cancelled > 0, "no SIGINT came during a start");
}
