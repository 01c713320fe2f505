//! Start-up benchmark: time from start to "guest running with every vCPU pinned", for
//! `vmrun run --detach` and for the same argv started bare and driven by a minimal QMP client
//! (connect, query-cpus-fast, affinity + SCHED_RR per vCPU, cont). Runs alternate; medians and
//! their ratio are printed, then vmrun's peak RSS while supervising. No assertions on time.
//!
//! `cargo bench --bench startup` (as root). BENCH_ITERATIONS sets the number of runs (15).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmrun::model::{CpuSet, Scheduler};
use vmrun::plan::{BaseDirs, BootFirmware, Plan};
use vmrun::profile::ProfileSource;
use vmrun::qmp::Qmp;
use vmrun::run::threads;

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");

fn profile_text(accel: &str) -> String {
    let model = if accel == "kvm" { "host" } else { "max" };
    format!(
        "name = \"bench\"\n[machine]\nmemory = \"256M\"\naccel = \"{accel}\"\n[cpu]\nmodel = \"{model}\"\ncores = 2\n\
         [pinning]\nvcpus = [1, 1]\nemulator = \"0\"\nscheduler = \"rr\"\npriority = 1\n\
         [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[shutdown]\ntimeout = 1\n"
    )
}

fn vmrun(dir: &Path) -> Command {
    let mut command = Command::new(VMRUN);
    command
        .arg("-q")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"));
    command
}

fn time_vmrun(dir: &Path, profile: &Path) -> Duration {
    let started = Instant::now();
    let status = vmrun(dir)
        .arg("run")
        .arg(profile)
        .arg("--detach")
        .status()
        .expect("vmrun runs");
    let elapsed = started.elapsed();
    assert!(status.success(), "vmrun run --detach failed: {status}");
    let _ = vmrun(dir).args(["stop", "bench", "--force"]).status();
    elapsed
}

fn time_bare(dir: &Path, plan: &Plan) -> Duration {
    std::fs::create_dir_all(&plan.paths.runtime_dir).unwrap();
    let started = Instant::now();
    let mut child = Command::new(&plan.argv[0])
        .args(&plan.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("QEMU starts");
    let mut qmp = Qmp::connect(&plan.paths.qmp_socket, Duration::from_secs(10)).expect("QMP");
    let cpus = qmp
        .execute("query-cpus-fast", None)
        .expect("query-cpus-fast");
    for (index, cpu) in cpus.as_array().unwrap().iter().enumerate() {
        let tid = cpu["thread-id"].as_i64().unwrap() as i32;
        let host_cpu = [1, 1][index];
        threads::set_affinity(tid, &CpuSet::from_cpus([host_cpu])).unwrap();
        threads::set_policy(tid, Scheduler::RoundRobin, 1).unwrap();
    }
    qmp.execute("cont", None).expect("cont");
    let elapsed = started.elapsed();
    let _ = qmp.quit();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir.join("run"));
    elapsed
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark pins threads with SCHED_RR: run it as root"
    );
    // Opening /dev/kvm proves nothing: only starting QEMU does (nested hosts refuse `-cpu host`).
    let accel = if vmrun::check::kvm_starts("qemu-system-x86_64", "host") {
        "kvm"
    } else {
        "tcg"
    };
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let dir = tempfile::tempdir().unwrap();
    let profile_path: PathBuf = dir.path().join("bench.toml");
    std::fs::write(&profile_path, profile_text(accel)).unwrap();
    let source = ProfileSource::read(&profile_path).unwrap();
    let raw = vmrun::model::parse(&source).unwrap();
    let (config, _) = vmrun::model::validate(&source, &raw).unwrap();
    let base = BaseDirs {
        state: dir.path().join("bare-state"),
        runtime: dir.path().join("run"),
    };
    let plan = Plan::new(
        &config,
        &BootFirmware::SeaBios,
        &base,
        &vmrun::plan::HostFacts::default(),
    )
    .unwrap();

    // One untimed run of each warms the page cache.
    time_bare(dir.path(), &plan);
    time_vmrun(dir.path(), &profile_path);
    let (mut bare, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        bare.push(time_bare(dir.path(), &plan));
        ours.push(time_vmrun(dir.path(), &profile_path));
    }
    let (bare_median, ours_median) = (median(bare.clone()), median(ours.clone()));
    println!("startup to running-and-pinned, SeaBIOS guest, 2 vCPUs, accelerator {accel}, {iterations} runs each");
    println!(
        "  bare QEMU + minimal QMP client: median {:>7.1} ms (min {:.1})",
        bare_median.as_secs_f64() * 1e3,
        bare.iter().min().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "  vmrun run --detach:             median {:>7.1} ms (min {:.1})",
        ours_median.as_secs_f64() * 1e3,
        ours.iter().min().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "  ratio vmrun / bare:             {:.3}x",
        ours_median.as_secs_f64() / bare_median.as_secs_f64()
    );
    let (hwm, rss) = peak_rss_kib(dir.path(), &profile_path);
    println!(
        "vmrun supervisor memory after 5 s of supervision: peak RSS {:.2} MiB, RSS {:.2} MiB",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
}
