//! The sampling on a fake host root: two samples a second apart, with the files changed in
//! between as the kernel would change them.

use std::path::Path;

use super::probe::{Probe, VmTarget};
use super::report::{self, Report};
use super::ui;
use super::{History, Monitor};
use crate::host::Sysroot;

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A `stat` line with the fields `top` reads; the others are zero.
fn stat(
    tid: i32,
    name: &str,
    state: char,
    ticks: u64,
    processor: usize,
    rt: u32,
    policy: u32,
) -> String {
    let mut fields: Vec<String> = (3..=52).map(|_| "0".to_string()).collect();
    let mut set = |field: usize, value: String| fields[field - 3] = value;
    set(3, state.to_string());
    set(14, ticks.to_string());
    set(15, "0".into());
    set(39, processor.to_string());
    set(40, rt.to_string());
    set(41, policy.to_string());
    format!("{tid} ({name}) {}\n", fields.join(" "))
}

fn thread_status(affinity: &str, involuntary: u64) -> String {
    format!("Name:\tx\nCpus_allowed_list:\t{affinity}\nvoluntary_ctxt_switches:\t1\nnonvoluntary_ctxt_switches:\t{involuntary}\n")
}

fn interrupts(nvme_on_3: u64, loc_on_3: u64) -> String {
    format!(
        "           CPU0       CPU1       CPU2       CPU3\n\
         \x20 0:         22          0          0          0   IO-APIC   2-edge      timer\n\
         142:          0          0          0 {nvme_on_3:>10}   IR-PCI-MSI 524288-edge      nvme0q3\n\
         LOC:       1000       2000       3000 {loc_on_3:>10}   Local timer interrupts\n\
         ERR:          0\n"
    )
}

fn softirqs(net_rx_on_3: u64, timer_on_3: u64) -> String {
    format!(
        "                    CPU0       CPU1       CPU2       CPU3\n\
         \x20         HI:          0          0          0          0\n\
         \x20      TIMER:          5          5          5 {timer_on_3:>10}\n\
         \x20     NET_RX:          0          0          0 {net_rx_on_3:>10}\n"
    )
}

/// The host at one moment: QEMU (pid 100: main thread 100, vCPU 0 = thread 101 on CPU 3) and
/// firefox (pid 200, thread 201 runnable on CPU 3).
struct Moment {
    vcpu_wait_ns: u64,
    vcpu_run_ns: u64,
    vcpu_involuntary: u64,
    qemu_main_ticks: u64,
    qemu_main_run_ns: u64,
    firefox_ticks: u64,
    nvme: u64,
    loc: u64,
    net_rx: u64,
    timer: u64,
    cpu3_khz: u64,
    cpu3_governor: &'static str,
}

fn lay(root: &Path, m: &Moment) {
    write(root, "/sys/devices/system/cpu/online", "0-3\n");
    for cpu in 0..4 {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq");
        let (khz, governor) = if cpu == 3 {
            (m.cpu3_khz, m.cpu3_governor)
        } else {
            (3_600_000, "performance")
        };
        write(
            root,
            &format!("{dir}/scaling_cur_freq"),
            &format!("{khz}\n"),
        );
        write(root, &format!("{dir}/cpuinfo_max_freq"), "3600000\n");
        write(
            root,
            &format!("{dir}/scaling_governor"),
            &format!("{governor}\n"),
        );
    }
    write(root, "/proc/interrupts", &interrupts(m.nvme, m.loc));
    write(root, "/proc/softirqs", &softirqs(m.net_rx, m.timer));
    write(root, "/proc/100/comm", "qemu-system-x86\n");
    write(
        root,
        "/proc/100/status",
        "Name:\tqemu-system-x86\nVmRSS:\t  524288 kB\nHugetlbPages:\t 2097152 kB\n",
    );
    let main = "/proc/100/task/100";
    write(
        root,
        &format!("{main}/stat"),
        &stat(100, "qemu-system-x86", 'S', m.qemu_main_ticks, 3, 0, 0),
    );
    write(root, &format!("{main}/status"), &thread_status("0-3", 0));
    write(
        root,
        &format!("{main}/schedstat"),
        &format!("{} 0 1\n", m.qemu_main_run_ns),
    );
    let vcpu = "/proc/100/task/101";
    write(
        root,
        &format!("{vcpu}/stat"),
        &stat(101, "CPU 0/KVM", 'R', 50, 3, 0, 0),
    );
    write(
        root,
        &format!("{vcpu}/status"),
        &thread_status("3", m.vcpu_involuntary),
    );
    write(
        root,
        &format!("{vcpu}/schedstat"),
        &format!("{} {} 5\n", m.vcpu_run_ns, m.vcpu_wait_ns),
    );
    write(root, "/proc/200/comm", "firefox\n");
    write(
        root,
        "/proc/200/task/201/stat",
        &stat(201, "Web Content", 'R', m.firefox_ticks, 3, 0, 0),
    );
    write(
        root,
        "/proc/200/task/200/stat",
        &stat(200, "firefox", 'S', 7, 0, 0, 0),
    );
}

const BEFORE: Moment = Moment {
    vcpu_wait_ns: 1_000_000_000,
    vcpu_run_ns: 5_000_000_000,
    vcpu_involuntary: 10,
    qemu_main_ticks: 10,
    qemu_main_run_ns: 0,
    firefox_ticks: 100,
    nvme: 100_000,
    loc: 4000,
    net_rx: 0,
    timer: 10,
    cpu3_khz: 3_600_000,
    cpu3_governor: "powersave",
};

const AFTER: Moment = Moment {
    vcpu_wait_ns: 1_400_000_000,
    vcpu_run_ns: 5_600_000_000,
    vcpu_involuntary: 60,
    qemu_main_ticks: 20,
    qemu_main_run_ns: 100_000_000,
    firefox_ticks: 140,
    nvme: 102_900,
    loc: 4250,
    net_rx: 500,
    timer: 20,
    cpu3_khz: 800_000,
    cpu3_governor: "powersave",
};

fn target() -> VmTarget {
    VmTarget {
        name: "win10".into(),
        pid: 100,
        accel: "kvm".into(),
        ctl_socket: "/nonexistent/ctl.sock".into(),
    }
}

/// Two samples of the fake host one second apart.
fn sampled() -> Report {
    let root = tempfile::tempdir().unwrap();
    lay(root.path(), &BEFORE);
    let mut probe = Probe::new(Sysroot::new(root.path()), false);
    let first = probe.sample(&[target()], 1_000);
    lay(root.path(), &AFTER);
    let second = probe.sample(&[target()], 2_000);
    report::compute(&first, &second)
}

#[test]
fn interrupts_softirqs_and_frequency_are_rates_on_the_vcpus_cpu() {
    let report = sampled();
    let vcpu = &report.vms[0].vcpus[0];
    assert_eq!((vcpu.index, vcpu.thread_id, vcpu.cpu), (0, 101, 3));
    assert_eq!(vcpu.affinity, "3");
    let rates: Vec<(&str, &str, f64)> = vcpu
        .interrupts
        .iter()
        .map(|r| (r.source.as_str(), r.name.as_str(), r.per_s))
        .collect();
    assert_eq!(
        rates,
        [
            ("142", "nvme0q3", 2900.0),
            ("LOC", "Local timer interrupts", 250.0)
        ]
    );
    assert_eq!(vcpu.interrupts_per_s, 3150.0);
    let softirqs: Vec<(&str, f64)> = vcpu
        .softirqs
        .iter()
        .map(|r| (r.source.as_str(), r.per_s))
        .collect();
    assert_eq!(softirqs, [("NET_RX", 500.0), ("TIMER", 10.0)]);
    // The frequency is the one at the end of the interval, not the one before.
    assert_eq!(vcpu.cpu_mhz, Some(800.0));
    assert_eq!(vcpu.cpu_max_mhz, Some(3600.0));
    assert_eq!(vcpu.governor.as_deref(), Some("powersave"));
}

#[test]
fn run_delay_switches_and_competitors_come_from_the_threads_counters() {
    let report = sampled();
    let vm = &report.vms[0];
    let vcpu = &vm.vcpus[0];
    assert_eq!(vcpu.run_delay_ms_per_s, Some(400.0));
    assert_eq!(vcpu.involuntary_switches_per_s, Some(50.0));
    assert_eq!(vcpu.cpu_percent, Some(60.0));
    assert_eq!((vcpu.policy.as_str(), vcpu.priority), ("other", 0));
    let who: Vec<(u32, i32, &str, &str, bool)> = vcpu
        .competitors
        .iter()
        .map(|c| {
            (
                c.pid,
                c.tid,
                c.process.as_str(),
                c.thread.as_str(),
                c.runnable,
            )
        })
        .collect();
    // firefox ran 40 ticks on CPU 3 and is runnable; QEMU's main thread ran 10; firefox's
    // idle main thread on CPU 0 is no competitor.
    assert_eq!(
        who,
        [
            (200, 201, "firefox", "Web Content", true),
            (100, 100, "qemu-system-x86", "qemu-system-x86", false)
        ]
    );
    assert_eq!(vm.other_threads.len(), 1);
    assert_eq!(vm.other_threads[0].cpu_percent, Some(10.0));
    assert_eq!(vm.memory.rss_mib, Some(512));
    assert_eq!(vm.memory.hugepages_mib, Some(2048));
    assert_eq!(vm.kvm.unavailable.as_deref(), Some("QMP not asked"));
}

#[test]
fn findings_name_the_competitor_the_irq_the_softirq_and_the_slow_cpu() {
    let report = sampled();
    assert_eq!(
        report.vms[0].findings,
        [
            "vCPU 0 waits 400 ms/s: CPU 3 is shared with pid 200 (firefox) and 1 more (SCHED_OTHER)",
            "IRQ 142 nvme0q3 fires 2900/s on vCPU 0's CPU 3",
            "softirq NET_RX runs 500/s on vCPU 0's CPU 3",
            "CPU 3 at 800 MHz of 3600 MHz (powersave), under vCPU 0",
            "QEMU thread 100 (qemu-system-x86) used 10% of a CPU on vCPU 0's CPU 3",
        ]
    );
}

#[test]
fn a_quiet_host_has_no_findings() {
    let root = tempfile::tempdir().unwrap();
    lay(root.path(), &BEFORE);
    let mut probe = Probe::new(Sysroot::new(root.path()), false);
    let first = probe.sample(&[target()], 1_000);
    let quiet = Moment {
        cpu3_governor: "performance",
        vcpu_run_ns: 5_900_000_000,
        ..BEFORE
    };
    lay(root.path(), &quiet);
    let second = probe.sample(&[target()], 2_000);
    let report = report::compute(&first, &second);
    assert_eq!(report.vms[0].vcpus[0].run_delay_ms_per_s, Some(0.0));
    assert!(report.vms[0].vcpus[0].interrupts.is_empty());
    assert!(
        report.vms[0].findings.is_empty(),
        "{:?}",
        report.vms[0].findings
    );
}

#[test]
fn what_cannot_be_read_is_named_and_the_rest_still_sampled() {
    let root = tempfile::tempdir().unwrap();
    lay(root.path(), &BEFORE);
    // A directory where the file should be: reading it fails as a denied read would.
    std::fs::remove_file(root.path().join("proc/interrupts")).unwrap();
    std::fs::create_dir(root.path().join("proc/interrupts")).unwrap();
    for cpu in 0..4 {
        std::fs::remove_dir_all(root.path().join(format!("sys/devices/system/cpu/cpu{cpu}")))
            .unwrap();
    }
    let mut probe = Probe::new(Sysroot::new(root.path()), false);
    let first = probe.sample(&[target()], 1_000);
    lay_without_cpufreq_and_interrupts(root.path());
    let second = probe.sample(&[target()], 2_000);
    let report = report::compute(&first, &second);
    let unreadable = report.unreadable.join("\n");
    assert!(unreadable.contains("/proc/interrupts: "), "{unreadable}");
    assert!(
        unreadable.contains("CPU frequencies: no cpufreq"),
        "{unreadable}"
    );
    let vcpu = &report.vms[0].vcpus[0];
    assert!(vcpu.interrupts.is_empty());
    assert_eq!(vcpu.cpu_mhz, None);
    assert_eq!(vcpu.run_delay_ms_per_s, Some(400.0));
    assert_eq!(vcpu.softirqs_per_s, 510.0);
}

fn lay_without_cpufreq_and_interrupts(root: &Path) {
    let interrupts_dir = root.join("proc/interrupts");
    lay_keeping(root, &AFTER, &interrupts_dir);
    for cpu in 0..4 {
        let _ = std::fs::remove_dir_all(root.join(format!("sys/devices/system/cpu/cpu{cpu}")));
    }
}

/// `lay`, except for a path that is a directory in this test.
fn lay_keeping(root: &Path, moment: &Moment, keep: &Path) {
    let saved = tempfile::tempdir().unwrap();
    std::fs::rename(keep, saved.path().join("kept")).unwrap();
    lay(root, moment);
    std::fs::remove_file(keep).unwrap();
    std::fs::rename(saved.path().join("kept"), keep).unwrap();
}

#[test]
fn the_json_object_has_the_documented_keys_and_types() {
    let report = sampled();
    let json = serde_json::to_value(&report).unwrap();
    // The full schema is checked on the real command's output (tests/cli/top.rs).
    let vcpu = &json["vms"][0]["vcpus"][0];
    assert_eq!(vcpu["run_delay_ms_per_s"], 400.0);
    assert_eq!(vcpu["interrupts"][0]["source"], "142");
    assert_eq!(vcpu["competitors"][0]["process"], "firefox");
    assert_eq!(json["vms"][0]["kvm"]["unavailable"], "QMP not asked");
    // What scripts parse comes back as the same report.
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

/// A fixed report with a minute of history behind it.
fn fixed() -> (Report, History) {
    let mut report = sampled();
    report.unreadable = vec!["QMP of `win10`: permission denied".into()];
    let mut history = History::default();
    let vcpu = report.vms[0].vcpus[0].clone();
    for second in 0..60 {
        report.vms[0].vcpus[0].run_delay_ms_per_s = Some(f64::from(second % 12) * 40.0);
        history.record(&report);
    }
    report.vms[0].vcpus[0] = vcpu;
    (report, history)
}

fn golden(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        text,
        expected,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn a_narrow_terminal_still_shows_the_vcpu_table() {
    let (report, history) = fixed();
    let text = ui::render_text(
        &report,
        &history,
        "vmrun top: 1 VM, every 1 s, q quits",
        40,
        16,
    );
    golden("top-narrow-40x16.txt", &text);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("vCPU CPU  wait ms/s")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("0    3    400.0")),
        "{text}"
    );
}

#[test]
fn a_wide_terminal_shows_every_column_and_the_last_minute() {
    let (report, history) = fixed();
    let height = ui::height(&report, 160);
    let text = ui::render_text(&report, &history, "vmrun top", 160, height);
    for header in [
        "sched",
        "last 60 s",
        "preempt/s",
        "MHz",
        "IRQ/s",
        "softirq/s",
        "governor",
        "busiest IRQ /s",
    ] {
        assert!(text.contains(header), "{header} in\n{text}");
    }
    assert!(text.contains("142 nvme0q3 2900"), "{text}");
    assert!(text.contains("powersave"), "{text}");
    assert!(
        text.contains("! vCPU 0 waits 400 ms/s: CPU 3 is shared with pid 200 (firefox)"),
        "{text}"
    );
    assert!(
        text.contains("cannot read QMP of `win10`: permission denied"),
        "{text}"
    );
    // Everything fits: the last line is the last unreadable item.
    assert_eq!(
        text.lines().last().unwrap(),
        "cannot read QMP of `win10`: permission denied"
    );
    // The sparkline's highest bar is full, its zeros blank.
    assert!(text.contains('█'), "{text}");
}

#[test]
fn the_sparkline_scales_to_its_largest_value_and_keeps_the_newest() {
    assert_eq!(ui::sparkline(&[0.0, 50.0, 100.0], 5), "   ▄█");
    assert_eq!(ui::sparkline(&[0.0, 400.0, 800.0], 2), "▄█");
    // Small delays against the 100 ms/s floor still show.
    assert_eq!(ui::sparkline(&[1.0, 10.0], 2), "▁▁");
}

#[test]
fn the_monitor_reports_from_its_second_tick_and_keeps_a_minute() {
    let root = tempfile::tempdir().unwrap();
    lay(root.path(), &BEFORE);
    let mut monitor = Monitor::new(Probe::new(Sysroot::new(root.path()), false));
    assert!(monitor.tick(&[target()]).is_none());
    for _ in 0..65 {
        assert!(monitor.tick(&[target()]).is_some());
    }
    assert_eq!(
        monitor.history.of(100, 0).unwrap().len(),
        super::HISTORY_SECONDS
    );
    // A VM that stopped leaves the history.
    monitor.tick(&[]);
    assert!(monitor.history.of(100, 0).is_none());
}
