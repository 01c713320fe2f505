//! Latency benchmark: what pinning buys a vCPU when the host is busy. One VM whose vCPU is
//! always busy (a boot sector that jumps to itself), the host's CPUs kept busy by competing
//! processes (two per CPU, each ended by `timeout` after the measurement), and three layouts
//! measured in the same run, their order rotated every round:
//!
//! - unpinned: vmrun's QEMU command line started bare, as a plain script or quickemu would,
//!   every thread free to run anywhere, SCHED_OTHER;
//! - libvirt-like: the same bare QEMU with its vCPU pinned to CPU 1 and given SCHED_FIFO
//!   priority 1 by this benchmark through the affinity and scheduler syscalls, as libvirt's
//!   `<vcpupin vcpu="0" cpuset="1"/>` + `<vcpusched vcpus="0" scheduler="fifo" priority="1"/>`
//!   do; QEMU's other threads stay unpinned (no `<emulatorpin>`);
//! - vmrun: `vmrun run --detach` of a profile with `vcpus = [1]`, `emulator = "0"` and the
//!   default scheduler (SCHED_RR priority 1); no `[isolation]`, so no cgroup, IRQ or governor of
//!   the host is changed.
//!
//! Each layout's vCPU run delay (from /proc/PID/task/TID/schedstat, as `vmrun top` reads it) is
//! sampled every second; it prints the median and p99 of those one-second samples and vmrun's
//! ratio against the other two. No assertions.
//!
//! `cargo bench --bench latency` (as root). BENCH_SECONDS (10) sets the seconds measured per
//! layout and round, BENCH_ROUNDS (2) the rounds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmrun::model::{CpuSet, Scheduler};
use vmrun::qmp::Qmp;
use vmrun::run::threads;

mod common;

use common::{bare_argv, shown, vmrun};

const VCPU_CPU: usize = 1;

fn profile_text(accel: &str) -> String {
    let model = if accel == "kvm" { "host" } else { "max" };
    format!(
        "name = \"latency\"\n[machine]\nmemory = \"64M\"\naccel = \"{accel}\"\n[cpu]\nmodel = \"{model}\"\ncores = 1\n\
         [pinning]\nvcpus = [{VCPU_CPU}]\nemulator = \"0\"\n\
         [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[display]\nvga = \"none\"\n\
         [[disk]]\npath = \"spin.img\"\nformat = \"raw\"\nbus = \"sata\"\n[shutdown]\ntimeout = 1\n"
    )
}

/// A disk whose boot sector jumps to itself: the vCPU always wants its CPU.
fn spinning_disk(dir: &Path) {
    // SeaBIOS does not boot a disk of one sector; 1 MiB it does.
    let mut image = vec![0u8; 1 << 20];
    image[..2].copy_from_slice(&[0xEB, 0xFE]); // jmp $
    image[510..512].copy_from_slice(&[0x55, 0xAA]);
    std::fs::write(dir.join("spin.img"), image).unwrap();
}

/// A program started in a new session (`setsid`, which execs it: the pid stays the program's).
/// With autogroup scheduling each session gets an equal share of a CPU, so QEMU and every
/// competitor are each in one, as vmrun's detached QEMU is.
fn in_own_session(program: &str) -> Command {
    let mut command = Command::new("setsid");
    command.arg(program);
    command
}

/// The competing processes, ended by `timeout` even if the benchmark dies, and here on drop.
struct Load(Vec<Child>);

impl Load {
    fn start(count: usize, seconds: u64) -> Load {
        Load(
            (0..count)
                .map(|_| {
                    in_own_session("timeout")
                        .args([&seconds.to_string(), "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("timeout and sh run")
                })
                .collect(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // Each `timeout` leads its own session and process group, its `sh` in it: the whole
        // group goes (killing `timeout` alone would leave the `sh` spinning).
        for child in &mut self.0 {
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    Unpinned,
    LibvirtLike,
    Vmrun,
}

impl Layout {
    fn label(self) -> &'static str {
        match self {
            Layout::Unpinned => "QEMU unpinned (a plain script)",
            Layout::LibvirtLike => "libvirt-like: vcpupin 1 + vcpusched fifo 1",
            Layout::Vmrun => "vmrun profile: vCPU on 1 (rr 1), emulator on 0",
        }
    }
}

/// A running VM of one layout: QEMU's pid and its vCPU's thread.
enum Running {
    Bare {
        child: Child,
        qmp: Box<Qmp>,
        tid: i32,
    },
    Vmrun {
        pid: u32,
        tid: i32,
    },
}

struct Bench {
    dir: PathBuf,
    profile: PathBuf,
    argv: Vec<String>,
    qmp_socket: PathBuf,
    runtime: PathBuf,
}

impl Bench {
    fn start(&self, layout: Layout) -> Running {
        match layout {
            Layout::Vmrun => {
                let status = vmrun(&self.dir)
                    .arg("run")
                    .arg(&self.profile)
                    .arg("--detach")
                    .status()
                    .unwrap();
                assert!(status.success(), "vmrun run --detach: {status}");
                let output = vmrun(&self.dir)
                    .args(["status", "latency", "--json"])
                    .output()
                    .unwrap();
                let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
                Running::Vmrun {
                    pid: status["pid"].as_u64().unwrap() as u32,
                    tid: status["vcpus"][0]["thread_id"].as_i64().unwrap() as i32,
                }
            }
            Layout::Unpinned | Layout::LibvirtLike => {
                std::fs::create_dir_all(&self.runtime).unwrap();
                let _ = std::fs::remove_file(&self.qmp_socket);
                let mut child = in_own_session(&self.argv[0])
                    .args(&self.argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("QEMU starts");
                let deadline = Instant::now() + Duration::from_secs(20);
                let stream = loop {
                    if let Ok(stream) = std::os::unix::net::UnixStream::connect(&self.qmp_socket) {
                        break stream;
                    }
                    assert!(child.try_wait().unwrap().is_none(), "bare QEMU exited");
                    assert!(Instant::now() < deadline, "no QMP socket from bare QEMU");
                    std::thread::sleep(Duration::from_millis(5));
                };
                let mut qmp = Qmp::handshake(stream, Duration::from_secs(10)).expect("QMP");
                let cpus = qmp
                    .execute("query-cpus-fast", None)
                    .expect("query-cpus-fast");
                let tid = cpus[0]["thread-id"].as_i64().unwrap() as i32;
                if layout == Layout::LibvirtLike {
                    threads::set_affinity(tid, &CpuSet::from_cpus([VCPU_CPU])).unwrap();
                    threads::set_policy(tid, Scheduler::Fifo, 1).unwrap();
                }
                qmp.execute("cont", None).expect("cont");
                Running::Bare {
                    child,
                    qmp: Box::new(qmp),
                    tid,
                }
            }
        }
    }

    fn stop(&self, running: Running) {
        match running {
            Running::Bare {
                mut child, mut qmp, ..
            } => {
                let _ = qmp.quit();
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::Vmrun { .. } => {
                let _ = vmrun(&self.dir)
                    .args(["stop", "latency", "--force"])
                    .status();
            }
        }
    }

    /// One-second samples of the vCPU's run delay, in ms per second.
    fn measure(&self, layout: Layout, seconds: u64, load: usize) -> Vec<f64> {
        let _load = Load::start(load, seconds + 10);
        let running = self.start(layout);
        let (pid, tid) = match &running {
            Running::Bare { child, tid, .. } => (child.id(), *tid),
            Running::Vmrun { pid, tid } => (*pid, *tid),
        };
        // The guest reaches its spinning boot sector within the first second.
        std::thread::sleep(Duration::from_secs(1));
        let mut samples = Vec::new();
        let mut last = (Instant::now(), threads::sched_counters(pid, tid));
        for _ in 0..seconds {
            std::thread::sleep(Duration::from_secs(1));
            let now = (Instant::now(), threads::sched_counters(pid, tid));
            if let (Some(before), Some(after)) = (last.1, now.1) {
                let waited_ms = after.wait_ns.saturating_sub(before.wait_ns) as f64 / 1e6;
                samples.push(waited_ms / now.0.duration_since(last.0).as_secs_f64());
            }
            last = now;
        }
        self.stop(running);
        samples
    }
}

fn percentile(values: &[f64], fraction: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 {
        format!("{:.3}", ours / theirs)
    } else {
        "n/a (0 ms/s)".into()
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark pins threads with real-time policies: run it as root"
    );
    let setting = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (seconds, rounds) = (setting("BENCH_SECONDS", 10), setting("BENCH_ROUNDS", 2));
    // Opening /dev/kvm proves nothing: only starting QEMU does, as the user vmrun runs it as
    // (who may lack /dev/kvm; nested hosts refuse `-cpu host`). Every layout uses the answer.
    let (accel, why) = match vmrun::check::kvm_for_default_user("qemu-system-x86_64", "host") {
        Ok(why) => ("kvm", why),
        Err(why) => ("tcg", why),
    };
    println!("accelerator: {accel} ({why})");
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let load = 2 * cpus;
    let dir = tempfile::tempdir().unwrap().keep();
    let profile = dir.join("latency.toml");
    std::fs::write(&profile, profile_text(accel)).unwrap();
    spinning_disk(&dir);
    let shown = shown(&dir, &profile);
    let runtime = dir.join("run/latency-bare");
    let (argv, qmp_socket) = bare_argv(&shown, &runtime);
    let bench = Bench {
        dir: dir.clone(),
        profile,
        argv,
        qmp_socket,
        runtime,
    };
    println!(
        "accelerator {accel}; one always-busy vCPU; {load} competing busy processes on {cpus} CPUs; \
         {rounds} rounds of {seconds} s per layout, order rotated each round"
    );
    let layouts = [Layout::Unpinned, Layout::LibvirtLike, Layout::Vmrun];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); layouts.len()];
    for round in 0..rounds as usize {
        for step in 0..layouts.len() {
            let which = (round + step) % layouts.len();
            samples[which].extend(bench.measure(layouts[which], seconds, load));
        }
    }
    println!("vCPU run delay, ms per second (one-second samples):");
    println!("  {:<50} {:>8} {:>8} {:>4}", "layout", "median", "p99", "n");
    let mut medians = Vec::new();
    for (layout, values) in layouts.iter().zip(&samples) {
        let (median, p99) = (percentile(values, 0.5), percentile(values, 0.99));
        medians.push((median, p99));
        println!(
            "  {:<50} {median:>8.1} {p99:>8.1} {:>4}",
            layout.label(),
            values.len()
        );
    }
    let (vmrun_median, vmrun_p99) = medians[2];
    println!(
        "  vmrun / unpinned:     median {}, p99 {}",
        ratio(vmrun_median, medians[0].0),
        ratio(vmrun_p99, medians[0].1)
    );
    println!(
        "  vmrun / libvirt-like: median {}, p99 {}",
        ratio(vmrun_median, medians[1].0),
        ratio(vmrun_p99, medians[1].1)
    );
    let _ = std::fs::remove_dir_all(dir);
}
