//! Start-up benchmark: time from start to "guest running with every vCPU pinned", for
//! `vmrun run --detach` and for the same argv started bare and driven by a minimal QMP client
//! (poll its socket every 1 ms, connect, query-cpus-fast, affinity + SCHED_RR per vCPU, cont).
//! For a SeaBIOS and an OVMF guest; runs alternate. Prints medians and their ratio, vmrun's
//! phase breakdown (from its log), `vmrun stop --force` until QEMU is gone and the host given
//! back, and the supervisor's peak RSS. No assertions on time.
//!
//! `cargo bench --bench startup` (as root). BENCH_ITERATIONS sets the number of runs (15).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmrun::model::{CpuSet, Scheduler};
use vmrun::qmp::Qmp;
use vmrun::run::threads;

mod common;

use common::{bare_argv, shown, vmrun};

/// One SCHED_RR vCPU on CPU 1, QEMU's other threads alone on CPU 0: a real host's layout.
fn profile_text(accel: &str, firmware: &str) -> String {
    let model = if accel == "kvm" { "host" } else { "max" };
    format!(
        "name = \"bench\"\n[machine]\nmemory = \"256M\"\naccel = \"{accel}\"\n[cpu]\nmodel = \"{model}\"\ncores = 1\n\
         [pinning]\nvcpus = [1]\nemulator = \"0\"\nscheduler = \"rr\"\npriority = 1\n\
         [firmware]\ntype = \"{firmware}\"\n[network]\nmode = \"none\"\n[shutdown]\ntimeout = 1\n"
    )
}

struct VmrunRun {
    start: Duration,
    stop: Duration,
    /// Each phase's time since vmrun started, from its log.
    phases: Vec<(String, f64)>,
}

fn time_vmrun(dir: &Path, profile: &Path) -> VmrunRun {
    let log = dir.join("state/bench/vmrun.log");
    let _ = std::fs::remove_file(&log);
    let started = Instant::now();
    let status = vmrun(dir)
        .arg("run")
        .arg(profile)
        .arg("--detach")
        .status()
        .expect("vmrun runs");
    let start = started.elapsed();
    assert!(status.success(), "vmrun run --detach failed: {status}");
    let stopping = Instant::now();
    let _ = vmrun(dir).args(["stop", "bench", "--force"]).status();
    let stop = stopping.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let phases = text
        .lines()
        .filter_map(|line| line.split_once("phase ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.rsplit_once(" at "))
        .filter_map(|(name, at)| Some((name.to_string(), at.strip_suffix(" ms")?.parse().ok()?)))
        .collect();
    VmrunRun {
        start,
        stop,
        phases,
    }
}

fn time_bare(argv: &[String], qmp_socket: &Path, runtime: &Path) -> Duration {
    std::fs::create_dir_all(runtime).unwrap();
    let _ = std::fs::remove_file(qmp_socket);
    let started = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("QEMU starts");
    let stream = loop {
        match std::os::unix::net::UnixStream::connect(qmp_socket) {
            Ok(stream) => break stream,
            Err(_) => {
                if child.try_wait().unwrap().is_some() {
                    let output = child.wait_with_output().unwrap();
                    panic!(
                        "bare QEMU exited: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                std::thread::sleep(Duration::from_millis(1))
            }
        }
    };
    let mut qmp = Qmp::handshake(stream, Duration::from_secs(10)).expect("QMP");
    let cpus = qmp
        .execute("query-cpus-fast", None)
        .expect("query-cpus-fast");
    for cpu in cpus.as_array().unwrap() {
        let tid = cpu["thread-id"].as_i64().unwrap() as i32;
        threads::set_affinity(tid, &CpuSet::from_cpus([1])).unwrap();
        threads::set_policy(tid, Scheduler::RoundRobin, 1).unwrap();
    }
    qmp.execute("cont", None).expect("cont");
    let elapsed = started.elapsed();
    let _ = qmp.quit();
    let _ = child.wait();
    elapsed
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn peak_rss_kib(dir: &Path, profile: &Path) -> (u64, u64) {
    let status = vmrun(dir)
        .arg("run")
        .arg(profile)
        .arg("--detach")
        .status()
        .unwrap();
    assert!(status.success());
    let output = vmrun(dir)
        .args(["status", "bench", "--json"])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let pid = value["vmrun_pid"].as_u64().unwrap();
    // Let the supervisor settle into its loop (QMP events, thread sweeps) for a while.
    std::thread::sleep(Duration::from_secs(5));
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let rss = (field("VmHWM:"), field("VmRSS:"));
    let _ = vmrun(dir).args(["stop", "bench", "--force"]).status();
    rss
}

fn bench(firmware: &str, accel: &str, iterations: usize) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let profile: PathBuf = dir.join("bench.toml");
    std::fs::write(&profile, profile_text(accel, firmware)).unwrap();
    // One untimed run of each warms the page cache (and creates OVMF's VARS copy).
    time_vmrun(&dir, &profile);
    let runtime = dir.join("run/bench");
    let (argv, qmp_socket) = bare_argv(&shown(&dir, &profile), &runtime);
    time_bare(&argv, &qmp_socket, &runtime);
    let (mut bare, mut ours, mut stops) = (Vec::new(), Vec::new(), Vec::new());
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for round in 0..iterations {
        // Alternating which goes first, so neither always runs on a warmer machine.
        let run_ours = |ours: &mut Vec<f64>,
                        stops: &mut Vec<f64>,
                        phases: &mut BTreeMap<String, Vec<f64>>,
                        order: &mut Vec<String>| {
            let run = time_vmrun(&dir, &profile);
            ours.push(ms(run.start));
            stops.push(ms(run.stop));
            for (name, at) in run.phases {
                if !order.contains(&name) {
                    order.push(name.clone());
                }
                phases.entry(name).or_default().push(at);
            }
        };
        if round % 2 == 0 {
            bare.push(ms(time_bare(&argv, &qmp_socket, &runtime)));
            run_ours(&mut ours, &mut stops, &mut phases, &mut order);
        } else {
            run_ours(&mut ours, &mut stops, &mut phases, &mut order);
            bare.push(ms(time_bare(&argv, &qmp_socket, &runtime)));
        }
    }
    let (bare_median, ours_median) = (median(bare.clone()), median(ours.clone()));
    println!("{firmware} guest, 1 SCHED_RR vCPU on CPU 1, emulator on CPU 0, accelerator {accel}, {iterations} runs each, alternating:");
    println!("  bare QEMU + minimal QMP client (polls every 1 ms): median {bare_median:>7.1} ms");
    println!("  vmrun run --detach:                                median {ours_median:>7.1} ms");
    println!(
        "  ratio vmrun / bare:                                {:.3}x",
        ours_median / bare_median
    );
    println!("  vmrun's phases (median time since vmrun started):");
    for name in &order {
        println!("    {name:<14} {:>7.1} ms", median(phases[name].clone()));
    }
    println!(
        "  vmrun stop --force until QEMU is gone and the host given back: median {:.1} ms",
        median(stops)
    );
    dir
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark pins threads with SCHED_RR: run it as root"
    );
    // Opening /dev/kvm proves nothing: only starting QEMU does, as the user vmrun runs it as
    // (who may lack /dev/kvm; nested hosts refuse `-cpu host`).
    let (accel, why) = match vmrun::check::kvm_for_default_user("qemu-system-x86_64", "host") {
        Ok(why) => ("kvm", why),
        Err(why) => ("tcg", why),
    };
    println!("accelerator: {accel} ({why})");
    // The benchmark is the host's own work: on CPU 0 with the emulator, never on the
    // real-time vCPU's CPU, where it would wait for RT throttling to be scheduled.
    threads::set_affinity(0, &CpuSet::from_cpus([0])).unwrap();
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let seabios = bench("seabios", accel, iterations);
    let ovmf = bench("ovmf", accel, iterations);
    let profile = seabios.join("bench.toml");
    let (hwm, rss) = peak_rss_kib(&seabios, &profile);
    println!(
        "vmrun supervisor memory after 5 s of supervision: peak RSS {:.2} MiB, RSS {:.2} MiB",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    for dir in [seabios, ovmf] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
