//! Host preparation and restore over a fake host: the fake kernel answers sysfs writes, stub
//! systemctl/modprobe record their calls, and every test compares the whole tree (devices,
//! drivers, consoles, services, modules, hugepages, files) before and after.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmrun::host::context::{HostContext, Timing, VmIdentity};
use vmrun::host::journal::Journal;
use vmrun::host::runner::{CommandOutput, CommandRunner, RunnerError, SystemRunner};
use vmrun::host::session::HostSession;
use vmrun::host::steps::{self, HostStep};
use vmrun::host::{RealSysfs, Sysroot};
use vmrun::log::Log;
use vmrun::model::VmConfig;

use crate::common::{as_nobody, validate_text};
use crate::fake_host::{diff, FakeHost, FakeProcess, Options};

/// Runs `systemctl`/`modprobe` from the fake host's stub directory, anything else as given.
struct StubRunner {
    bin: PathBuf,
}

impl CommandRunner for StubRunner {
    fn run(
        &self,
        argv: &[String],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<CommandOutput, RunnerError> {
        let mut argv = argv.to_vec();
        let stub = self.bin.join(&argv[0]);
        if stub.exists() {
            argv[0] = stub.to_string_lossy().into_owned();
        }
        SystemRunner.run(&argv, env, timeout)
    }
}

fn single_gpu_host() -> FakeHost {
    FakeHost::new(
        "intel-shared-rootport.tsv",
        Options {
            processes: vec![FakeProcess::new(
                1234,
                "Xorg",
                0,
                "/system.slice/display-manager.service",
                &["/dev/nvidia0"],
            )],
            ..Options::single_gpu_desktop()
        },
    )
    .with_kernel()
}

/// The host layer pointed at a fake host: its tree as sysfs, its stubs as commands.
pub(crate) struct Rig {
    root: Sysroot,
    sysfs: RealSysfs,
    runner: StubRunner,
}

impl Rig {
    pub(crate) fn new(host: &FakeHost) -> Self {
        Rig {
            root: Sysroot::new(&host.root),
            sysfs: RealSysfs {
                root: Sysroot::new(&host.root),
            },
            runner: StubRunner {
                bin: host.bin.clone(),
            },
        }
    }

    /// The session `run` would use: the profile's planned steps over the fake host.
    pub(crate) fn prep<'a>(&'a self, config: &VmConfig, journal: &Path) -> HostSession<'a> {
        HostSession::new(
            HostContext {
                root: self.root.clone(),
                sysfs: &self.sysfs,
                runner: &self.runner,
                timing: quick(),
                vm: VmIdentity {
                    name: config.name.to_string(),
                    profile: config.profile_path.clone(),
                },
            },
            steps::plan(
                config,
                &vmrun::plan::VmPaths::new(
                    &vmrun::plan::BaseDirs {
                        state: journal.parent().unwrap().join("state"),
                        runtime: journal.parent().unwrap().join("run"),
                    },
                    &config.name,
                )
                .unwrap(),
            ),
            journal,
        )
    }
}

fn profile(dir: &Path, extra: &str) -> VmConfig {
    let hooks_log = dir.join("hooks.log");
    let text = format!(
        "name = \"sgpu\"\n[machine]\nmemory = \"1G\"\naccel = \"tcg\"\nhugepages = \"2M\"\n[cpu]\ncores = 1\n\
         [firmware]\ntype = \"seabios\"\n[[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n\
         [single_gpu]\nmodules = [\"nvidia_drm\", \"nvidia_modeset\", \"nvidia_uvm\", \"nvidia\"]\n\
         [looking_glass]\nsize = \"32M\"\npath = \"/dev/shm/looking-glass\"\nmode = \"0640\"\n\
         [hooks]\npre_start = [\"/bin/sh\", \"-c\", \"echo pre $VMRUN_VM $VMRUN_PHASE >> {log}\"]\n\
         post_stop = [\"/bin/sh\", \"-c\", \"echo post $VMRUN_VM $VMRUN_PHASE >> {log}\"]\n{extra}",
        log = hooks_log.display()
    );
    validate_text(dir, "sgpu", &text)
        .unwrap_or_else(|e| panic!("{e:#?}"))
        .0
}

fn quick() -> Timing {
    Timing {
        bind_timeout: Duration::from_millis(1500),
        module_attempts: 3,
        module_retry_delay: Duration::from_millis(20),
        command_timeout: Duration::from_secs(30),
    }
}

pub(crate) fn log() -> Log {
    Log::new(0, true)
}

#[test]
fn a_single_gpu_session_is_prepared_in_order_and_restored_exactly() {
    let host = single_gpu_host();
    let dir = crate::common::tempdir();
    let config = profile(dir.path(), "");
    let before = host.snapshot();
    let rig = Rig::new(&host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    prep.apply(&log()).unwrap();

    // The journal is the plan carried out: every planned step, in order, left its undo records.
    let planned: Vec<(usize, String)> = prep
        .steps()
        .iter()
        .enumerate()
        // Nothing journaled for these here: the hook changes nothing of its own, an NVIDIA
        // card without `reset_method` keeps the kernel's reset, the display manager took its
        // Xorg with it and no persistence daemon runs.
        .filter(|(_, step)| {
            !matches!(
                step,
                HostStep::PreStartHook(_)
                    | HostStep::SetResetMethod(_)
                    | HostStep::StopNvidiaPersistence(_)
                    | HostStep::StopHolders(_)
            )
        })
        .map(|(index, step)| (index, step.kind()))
        .collect();
    let mut applied: Vec<(usize, String)> = Vec::new();
    for entry in Journal::at(&dir.path().join("journal")).entries().unwrap() {
        let index = entry.step.expect("every entry names its step");
        let kind = prep.steps()[index].kind();
        if applied.last() != Some(&(index, kind.clone())) {
            applied.push((index, kind));
        }
    }
    assert_eq!(applied, planned);
    assert_eq!(
        planned
            .iter()
            .map(|(_, kind)| kind.as_str())
            .collect::<Vec<_>>(),
        [
            "post_stop_hooks",
            "stop_display_manager",
            "unbind_vtconsoles",
            "unbind_framebuffers",
            "unload_module",
            "unload_module",
            "unload_module",
            "unload_module",
            "load_vfio_pci",
            "bind_vfio",
            "bind_vfio",
            "keep_pci_powered",
            "keep_pci_powered",
            "reserve_hugepages",
            "create_shm_file",
        ]
    );

    assert_eq!(
        host.read(".fake/services/display-manager.service"),
        "inactive"
    );
    assert_eq!(host.read("sys/class/vtconsole/vtcon0/bind"), "0");
    assert_eq!(host.read("sys/class/vtconsole/vtcon1/bind"), "0");
    assert!(host
        .root
        .join("sys/bus/platform/devices/efi-framebuffer.0/driver")
        .symlink_metadata()
        .is_err());
    let modules = host.read("proc/modules");
    assert!(!modules.contains("nvidia"), "{modules}");
    assert!(modules.contains("vfio_pci"), "{modules}");
    assert_eq!(host.driver("0000:01:00.0").as_deref(), Some("vfio-pci"));
    assert_eq!(host.driver("0000:01:00.1").as_deref(), Some("vfio-pci"));
    assert_eq!(
        host.read("sys/bus/pci/devices/0000:01:00.1/driver_override"),
        "vfio-pci"
    );
    assert_eq!(
        host.driver("0000:00:01.0").as_deref(),
        Some("pcieport"),
        "the root port stays"
    );
    assert_eq!(
        host.read("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
        "512"
    );
    assert_eq!(
        host.read("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"),
        "512"
    );
    use std::os::unix::fs::PermissionsExt;
    let lg = std::fs::metadata(host.root.join("dev/shm/looking-glass")).unwrap();
    assert_eq!(lg.permissions().mode() & 0o777, 0o640);
    let calls = host.calls();
    assert_eq!(
        calls,
        [
            "systemctl is-active display-manager.service",
            "systemctl stop display-manager.service",
            "systemctl is-active nvidia-persistenced.service",
            "modprobe -r nvidia_drm",
            "modprobe -r nvidia_modeset",
            "modprobe -r nvidia_uvm",
            "modprobe -r nvidia",
            "modprobe vfio-pci",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hooks.log")).unwrap(),
        "pre sgpu pre_start\n"
    );

    prep.undo_all(&log()).unwrap();
    let after = host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "not restored:\n{}",
        diff(&before, &after).join("\n")
    );
    let calls = host.calls();
    assert_eq!(
        calls[8..],
        [
            "modprobe -r vfio-pci",
            "modprobe nvidia",
            "modprobe nvidia_uvm",
            "modprobe nvidia_modeset",
            "modprobe nvidia_drm",
            "systemctl start display-manager.service",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hooks.log")).unwrap(),
        "pre sgpu pre_start\npost sgpu post_stop\n"
    );
    assert!(
        !dir.path().join("journal").exists(),
        "a fully restored host leaves no journal"
    );
}

fn failing_prepare(host: &FakeHost, extra: &str) -> (String, crate::common::TestDir) {
    let dir = crate::common::tempdir();
    let config = profile(dir.path(), extra);
    let rig = Rig::new(host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    let error = prep.prepare(&log()).unwrap_err();
    (error, dir)
}

#[test]
fn a_module_that_stays_in_use_names_its_holder_and_everything_is_restored() {
    // What still holds the GPU then is no passed function's node (the display manager took
    // Xorg with it): plymouthd on efifb's /dev/fb0, a platform device's.
    let host = FakeHost::new(
        "intel-shared-rootport.tsv",
        Options {
            processes: vec![
                FakeProcess::new(
                    1234,
                    "Xorg",
                    0,
                    "/system.slice/display-manager.service",
                    &["/dev/nvidia0"],
                ),
                FakeProcess::new(300, "plymouthd", 0, "/", &["/dev/fb0"]),
            ],
            ..Options::single_gpu_desktop()
        },
    )
    .with_kernel();
    let before = host.snapshot();
    host.module_busy("nvidia", 100);
    let (error, dir) = failing_prepare(&host, "");
    assert!(
        error.contains("module nvidia is still in use after 3 attempts"),
        "{error}"
    );
    assert!(
        error.contains("plymouthd (pid 300) holds /dev/fb0"),
        "{error}"
    );
    // The busy counter is test state, not host state.
    std::fs::remove_dir_all(host.root.join(".fake/inuse")).unwrap();
    let after = host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "not restored:\n{}",
        diff(&before, &after).join("\n")
    );
    assert!(!dir.path().join("journal").exists());
}

#[test]
fn a_bind_that_times_out_restores_everything_already_changed() {
    let host = single_gpu_host();
    let before = host.snapshot();
    host.refuse_vfio("0000:01:00.1");
    let (error, _dir) = failing_prepare(&host, "");
    assert!(
        error.contains("0000:01:00.1 did not move to vfio-pci"),
        "{error}"
    );
    let after = host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "not restored:\n{}",
        diff(&before, &after).join("\n")
    );
    assert_eq!(host.driver("0000:01:00.0").as_deref(), Some("nvidia"));
    assert_eq!(
        host.driver("0000:01:00.1").as_deref(),
        Some("snd_hda_intel")
    );
}

#[test]
fn a_failing_pre_start_hook_aborts_before_any_host_change() {
    let host = single_gpu_host();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let text = "name = \"hooked\"\n[[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n[single_gpu]\nmodules = [\"nvidia\"]\n\
                [hooks]\npre_start = [\"/bin/sh\", \"-c\", \"echo no GPU today >&2; exit 3\"]\n";
    let config = validate_text(dir.path(), "hooked", text).unwrap().0;
    let rig = Rig::new(&host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    let error = prep.prepare(&log()).unwrap_err();
    assert!(
        error.contains("pre_start hook") && error.contains("no GPU today"),
        "{error}"
    );
    assert!(
        host.calls().is_empty(),
        "nothing else ran: {:?}",
        host.calls()
    );
    assert!(diff(&before, &host.snapshot()).is_empty());
}

#[test]
fn a_device_already_on_vfio_is_left_alone() {
    let host = FakeHost::new("b550-ryzen5800x.tsv", Options::default()).with_kernel();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let config = validate_text(
        dir.path(),
        "gtx",
        "[[pci]]\naddress = \"08:00.0\"\n[[pci]]\naddress = \"08:00.1\"\n",
    )
    .unwrap()
    .0;
    let rig = Rig::new(&host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    prep.apply(&log()).unwrap();
    assert!(host.calls().is_empty());
    // The binding is left alone; only the power settings of the two functions change (two
    // attributes each), and they are restored with the rest.
    let entries = Journal::at(&dir.path().join("journal")).entries().unwrap();
    assert_eq!(entries.len(), 4, "{entries:?}");
    assert!(
        entries
            .iter()
            .all(|entry| matches!(entry.undo, steps::Undo::RestorePciPower(_))),
        "{entries:?}"
    );
    assert_eq!(
        host.read("sys/bus/pci/devices/0000:08:00.0/power/control"),
        "on"
    );
    prep.undo_all(&log()).unwrap();
    assert!(diff(&before, &host.snapshot()).is_empty());
}

#[test]
fn a_hanging_pre_start_hook_is_killed_at_its_timeout_and_the_host_is_restored() {
    let host = single_gpu_host();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let hooks_log = dir.path().join("hooks.log");
    let text = format!(
        "name = \"hung\"\n[[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n[single_gpu]\nmodules = [\"nvidia\"]\n\
         [hooks]\ntimeout = 1\npre_start = [\"/bin/sh\", \"-c\", \"sleep 60\"]\n\
         post_stop = [\"/bin/sh\", \"-c\", \"echo post $VMRUN_PHASE >> {}\"]\n",
        hooks_log.display()
    );
    let config = validate_text(dir.path(), "hung", &text).unwrap().0;
    let rig = Rig::new(&host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    let started = std::time::Instant::now();
    let error = prep.prepare(&log()).unwrap_err();
    let waited = started.elapsed();
    assert!(
        error.contains("still running after 1 s and was killed"),
        "{error}"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(host.calls().is_empty(), "{:?}", host.calls());
    assert_eq!(
        std::fs::read_to_string(&hooks_log).unwrap(),
        "post post_stop\n",
        "the armed post_stop hook ran as part of the rollback"
    );
    assert!(diff(&before, &host.snapshot()).is_empty());
    assert!(!dir.path().join("journal").exists());
}

#[test]
fn a_hanging_post_stop_hook_is_killed_and_stays_journaled_for_recover() {
    let host = single_gpu_host();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let text = "name = \"slowstop\"\n[[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n\
                [single_gpu]\nmodules = [\"nvidia\"]\n[hooks]\ntimeout = 1\npost_stop = [\"/bin/sleep\", \"60\"]\n";
    let config = validate_text(dir.path(), "slowstop", text).unwrap().0;
    let rig = Rig::new(&host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    prep.apply(&log()).unwrap();
    let left = prep.undo_all(&log()).unwrap_err();
    assert!(
        left.iter()
            .any(|problem| problem.contains("still running after 1 s")),
        "{left:?}"
    );
    // Everything else came back; only the hook is left for `vmrun recover`.
    assert!(diff(&before, &host.snapshot()).is_empty());
    let entries = Journal::at(&dir.path().join("journal")).entries().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(matches!(entries[0].undo, steps::Undo::RunPostStop(_)));
}

#[test]
fn rescan_removes_the_device_and_rescans_before_binding_and_comes_back_after() {
    let host = FakeHost::new("intel-shared-rootport.tsv", Options::default()).with_kernel();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let config = validate_text(
        dir.path(),
        "bar",
        "[[pci]]\naddress = \"01:00.0\"\nrescan = true\n[[pci]]\naddress = \"01:00.1\"\n",
    )
    .unwrap()
    .0;
    let rig = Rig::new(&host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    let kinds: Vec<String> = prep.steps().iter().map(HostStep::kind).collect();
    assert_eq!(
        kinds,
        [
            "stop_nvidia_persistence",
            "stop_holders",
            "release_boot_framebuffer",
            "load_vfio_pci",
            "rescan_pci_device",
            "bind_vfio",
            "bind_vfio",
            "keep_pci_powered",
            "keep_pci_powered",
            "set_reset_method",
            "set_reset_method"
        ],
        "the rescan comes before any device is bound"
    );
    prep.apply(&log()).unwrap();
    assert_eq!(host.kernel_log(), ["remove 0000:01:00.0", "rescan"]);
    assert_eq!(host.driver("0000:01:00.0").as_deref(), Some("vfio-pci"));
    assert_eq!(host.driver("0000:01:00.1").as_deref(), Some("vfio-pci"));
    prep.undo_all(&log()).unwrap();
    assert_eq!(host.driver("0000:01:00.0").as_deref(), Some("nvidia"));
    assert!(
        diff(&before, &host.snapshot()).is_empty(),
        "{}",
        diff(&before, &host.snapshot()).join("\n")
    );
}

#[test]
fn a_device_left_removed_by_a_crash_comes_back_with_recover() {
    let host = FakeHost::new("intel-shared-rootport.tsv", Options::default()).with_kernel();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let config = validate_text(
        dir.path(),
        "bar",
        "[[pci]]\naddress = \"01:00.0\"\nrescan = true\n[[pci]]\naddress = \"01:00.1\"\n",
    )
    .unwrap()
    .0;
    let rig = Rig::new(&host);
    // vmrun died between the remove and the rescan: the device is gone, the journal says so.
    let journal = dir.path().join("journal");
    std::fs::write(
        &journal,
        "{\"step\":1,\"undo\":\"rescan_pci_bus\",\"address\":\"0000:01:00.0\"}\n",
    )
    .unwrap();
    std::fs::write(
        host.root.join("sys/bus/pci/devices/0000:01:00.0/remove"),
        "1",
    )
    .unwrap();
    let gone = std::time::Instant::now();
    while host.root.join("sys/bus/pci/devices/0000:01:00.0").exists() {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "the fake kernel did not remove it"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let prep = rig.prep(&config, &journal);
    prep.undo_all(&log()).unwrap();
    assert_eq!(host.driver("0000:01:00.0").as_deref(), Some("nvidia"));
    assert!(
        diff(&before, &host.snapshot()).is_empty(),
        "{}",
        diff(&before, &host.snapshot()).join("\n")
    );
    assert!(!journal.exists());
}

#[test]
fn hugepages_short_on_fragmented_memory_are_compacted_and_asked_for_again() {
    let host = FakeHost::new("intel-shared-rootport.tsv", Options::default()).with_kernel();
    std::fs::write(host.root.join(".fake/fragmented"), "").unwrap();
    let mut before = host.snapshot();
    let dir = crate::common::tempdir();
    let text = "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\nhugepages = \"2M\"\n[firmware]\ntype = \"seabios\"\n";
    let config = validate_text(dir.path(), "pages", text).unwrap().0;
    let rig = Rig::new(&host);
    let session = rig.prep(&config, &dir.path().join("journal"));
    session.prepare(&log()).unwrap();
    let pages = "sys/kernel/mm/hugepages/hugepages-2048kB";
    assert_eq!(host.read(&format!("{pages}/free_hugepages")), "32");
    assert_eq!(host.read(&format!("{pages}/nr_hugepages")), "32");
    assert_eq!(host.kernel_log(), ["compact_memory"], "compacted once");
    session.restore(&log());
    // The fake kernel answers the release a tick later.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while host.read(&format!("{pages}/free_hugepages")) != "0" {
        assert!(std::time::Instant::now() < deadline, "pages not released");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut after = host.snapshot();
    // The fake kernel's fragmentation marker, gone with the compaction: not host state.
    before.remove(".fake/fragmented");
    after.remove(".fake/fragmented");
    assert!(
        diff(&before, &after).is_empty(),
        "{:?}",
        diff(&before, &after)
    );
}

fn dual_gpu(boot_vga: &'static str) -> FakeHost {
    FakeHost::new(
        "intel-shared-rootport.tsv",
        Options {
            boot_vga: vec![boot_vga],
            console: true,
            services: vec![("display-manager.service", true)],
            ..Options::default()
        },
    )
    .with_kernel()
}

const DUAL_GPU: &str = "[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n\
                        [[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n";

#[test]
fn a_passed_boot_gpu_loses_its_framebuffer_and_consoles_but_the_display_manager_runs_on() {
    let host = dual_gpu("0000:01:00.0");
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let config = validate_text(dir.path(), "dual", DUAL_GPU).unwrap().0;
    let rig = Rig::new(&host);
    let session = rig.prep(&config, &dir.path().join("journal"));
    session.prepare(&log()).unwrap();
    assert_eq!(host.read("sys/class/vtconsole/vtcon1/bind"), "0");
    assert!(host
        .root
        .join("sys/bus/platform/devices/efi-framebuffer.0/driver")
        .symlink_metadata()
        .is_err());
    assert_eq!(host.driver("0000:01:00.0").as_deref(), Some("vfio-pci"));
    assert!(
        !host.calls().iter().any(|c| c.contains("display-manager")),
        "{:?}",
        host.calls()
    );
    session.restore(&log());
    assert!(diff(&before, &host.snapshot()).is_empty());
}

#[test]
fn a_passed_gpu_that_is_not_the_boot_gpu_leaves_the_framebuffer_alone() {
    let host = dual_gpu("0000:00:02.0");
    let dir = crate::common::tempdir();
    let config = validate_text(dir.path(), "dual", DUAL_GPU).unwrap().0;
    let rig = Rig::new(&host);
    let session = rig.prep(&config, &dir.path().join("journal"));
    session.prepare(&log()).unwrap();
    assert_eq!(host.read("sys/class/vtconsole/vtcon1/bind"), "1");
    assert!(host
        .root
        .join("sys/bus/platform/devices/efi-framebuffer.0/driver")
        .symlink_metadata()
        .is_ok());
    session.restore(&log());
}

#[test]
fn hugepages_are_reserved_on_the_node_of_the_pinned_vcpus_and_released_there() {
    let host = FakeHost::new(
        "intel-shared-rootport.tsv",
        Options {
            topology: Some("xeon-e5-2660v2-2s.lscpu"),
            ..Options::default()
        },
    )
    .with_kernel();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let text =
        "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\nhugepages = \"2M\"\n[cpu]\ncores = 2\n\
                [pinning]\nvcpus = \"auto\"\n[firmware]\ntype = \"seabios\"\n";
    let config = validate_text(dir.path(), "numa", text).unwrap().0;
    let root = Sysroot::new(&host.root);
    let facts = vmrun::plan::HostFacts {
        online_cpus: vmrun::host::online_cpus(&root),
        topology: Some(vmrun::host::topology::read_topology(&root).unwrap()),
        ..Default::default()
    };
    let config = vmrun::plan::resolve(config, &facts).unwrap();
    let rig = Rig::new(&host);
    let session = rig.prep(&config, &dir.path().join("journal"));
    session.prepare(&log()).unwrap();
    let node1 = "sys/devices/system/node/node1/hugepages/hugepages-2048kB";
    assert_eq!(host.read(&format!("{node1}/nr_hugepages")), "32");
    assert_eq!(
        host.read("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"),
        "0"
    );
    assert_eq!(
        host.read("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
        "0"
    );
    session.restore(&log());
    // The fake kernel answers the release a tick later; on a loaded machine, later still.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while host.read(&format!("{node1}/free_hugepages")) != "0" {
        assert!(std::time::Instant::now() < deadline, "pages not released");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        diff(&before, &host.snapshot()).is_empty(),
        "{:?}",
        diff(&before, &host.snapshot())
    );
}

#[test]
fn a_bridged_vm_gets_a_tap_vmrun_makes_and_deletes() {
    let host = FakeHost::new("b550-ryzen5800x.tsv", Options::default()).with_kernel();
    std::fs::create_dir_all(host.root.join("sys/class/net/br0/bridge")).unwrap();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let config = validate_text(
        dir.path(),
        "bridged",
        "[network]\nmode = \"bridge\"\nbridge = \"br0\"\n",
    )
    .unwrap()
    .0;
    let rig = Rig::new(&host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    let tap = vmrun::plan::argv::tap_name(&config.name);
    assert!(tap.len() <= 15, "{tap} is too long for an interface name");
    prep.apply(&log()).unwrap();
    assert_eq!(
        host.calls(),
        [
            format!("ip tuntap add dev {tap} mode tap"),
            format!("ip link set dev {tap} master br0"),
            format!("ip link set dev {tap} up"),
        ]
    );
    assert_eq!(host.read(&format!("sys/class/net/{tap}/master")), "br0");
    prep.undo_all(&log()).unwrap();
    assert_eq!(
        host.calls().last().unwrap(),
        &format!("ip link del dev {tap}")
    );
    assert!(diff(&before, &host.snapshot()).is_empty());

    // Without the bridge, the preflight says so before anything changes.
    let missing = validate_text(
        dir.path(),
        "nobridge",
        "[network]\nmode = \"bridge\"\nbridge = \"br9\"\n",
    )
    .unwrap()
    .0;
    let prep = rig.prep(&missing, &dir.path().join("journal2"));
    let ctx_findings: Vec<String> = prep
        .steps()
        .iter()
        .flat_map(|step| step.preflight(prep.host()))
        .filter(|f| f.status == vmrun::check::Status::Fail)
        .map(|f| f.message)
        .collect();
    assert!(
        ctx_findings
            .iter()
            .any(|m| m.contains("br9 is not a bridge")),
        "{ctx_findings:?}"
    );
}

#[test]
fn device_nodes_go_to_the_qemu_user_for_the_session_and_back() {
    let host = single_gpu_host();
    let evdev = host.add_evdev("event3", "usb-Fake_Mouse-event-mouse");
    let dir = crate::common::tempdir();
    let config = as_nobody(profile(
        dir.path(),
        &format!("[input]\nevdev = [\"{evdev}\"]\n"),
    ));
    let before = host.snapshot();
    let rig = Rig::new(&host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    let kinds: Vec<String> = prep.steps().iter().map(HostStep::kind).collect();
    let grant = kinds
        .iter()
        .position(|k| k == "grant_device_access")
        .expect("planned for an unprivileged QEMU");
    let last_bind = kinds.iter().rposition(|k| k == "bind_vfio").unwrap();
    assert!(grant > last_bind, "after the devices are bound: {kinds:?}");
    let shown = serde_json::to_value(&prep.steps()[grant]).unwrap();
    assert_eq!(shown["user"], "nobody");
    assert_eq!(shown["uid"], 65534);
    assert_eq!(
        shown["pci"],
        serde_json::json!(["0000:01:00.0", "0000:01:00.1"])
    );
    assert_eq!(shown["evdev"], serde_json::json!([evdev]));

    prep.apply(&log()).unwrap();
    assert_eq!(host.owner("dev/vfio/1"), Some((65534, 65534, 0o600)));
    assert_eq!(host.owner("dev/input/event3"), Some((65534, 65534, 0o660)));
    let journal = std::fs::read_to_string(dir.path().join("journal")).unwrap();
    assert!(
        journal.contains(
            r#""undo":"restore_owner","path":"/dev/input/event3","uid":0,"gid":0,"mode":432"#
        ),
        "the resolved node, its owner and mode are journaled: {journal}"
    );

    prep.undo_all(&log()).unwrap();
    assert_eq!(host.owner("dev/input/event3"), Some((0, 0, 0o660)));
    assert_eq!(
        host.owner("dev/vfio/1"),
        None,
        "gone with the group's binding"
    );
    let after = host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "not restored:\n{}",
        diff(&before, &after).join("\n")
    );
}

#[test]
fn a_missing_vfio_node_stops_the_session_with_what_to_do() {
    let host = single_gpu_host();
    let dir = crate::common::tempdir();
    let rig = Rig::new(&host);
    // Only the grant, so 01:00.0 stays on nvidia and its group has no /dev/vfio node.
    let step = HostStep::GrantDeviceAccess(steps::device_access::GrantDeviceAccess {
        user: "nobody".into(),
        uid: 65534,
        gid: 65534,
        pci: vec!["01:00.0".parse().unwrap()],
        mdev: Vec::new(),
        evdev: Vec::new(),
        usb: Vec::new(),
    });
    let session = HostSession::new(
        HostContext {
            root: rig.root.clone(),
            sysfs: &rig.sysfs,
            runner: &rig.runner,
            timing: quick(),
            vm: VmIdentity {
                name: "sgpu".into(),
                profile: dir.path().join("sgpu.toml"),
            },
        },
        vec![step],
        &dir.path().join("journal"),
    );
    let error = session.apply(&log()).unwrap_err().to_string();
    assert!(
        error.contains("/dev/vfio/1")
            && error.contains("0000:01:00.0 is not bound to vfio-pci")
            && error.contains("nvidia"),
        "{error}"
    );
    assert!(!dir.path().join("journal").exists(), "nothing changed");
}

/// Two VMs grow the same hugepage pool and stop in either order: each gives back the pages it
/// added, so the pool ends where it began and the VM still running keeps its pages. (Restored
/// as absolute counts, the first to stop shrank the pool under the other and the second put
/// the first one's pages back for good.)
#[test]
fn two_vms_that_grew_the_same_hugepage_pool_give_back_their_own_pages_in_any_order() {
    const POOL: &str = "sys/kernel/mm/hugepages/hugepages-2048kB";
    for first_to_stop in ["a", "b"] {
        let host = FakeHost::new("intel-shared-rootport.tsv", Options::default()).with_kernel();
        let before = host.snapshot();
        let dir = crate::common::tempdir();
        let rig = Rig::new(&host);
        let text =
            "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\nhugepages = \"2M\"\n[cpu]\ncores = 1\n\
                    [firmware]\ntype = \"seabios\"\n";
        let wait_free = |free: &str| {
            crate::common::wait_for(
                &format!("{free} free pages"),
                Duration::from_secs(5),
                || host.read(&format!("{POOL}/free_hugepages")) == free,
            )
        };
        // QEMU takes or gives back its 32 pages (the kernel's free count moves, not the pool).
        let qemu_pages = |delta: i64| {
            let free: i64 = host
                .read(&format!("{POOL}/free_hugepages"))
                .parse()
                .unwrap();
            std::fs::write(
                host.root.join(POOL).join("free_hugepages"),
                format!("{}\n", free + delta),
            )
            .unwrap();
        };
        let config = |name: &str| validate_text(dir.path(), name, text).unwrap().0;
        let (a, b) = (config("a"), config("b"));
        let session_a = rig.prep(&a, &dir.path().join("a.journal"));
        let session_b = rig.prep(&b, &dir.path().join("b.journal"));
        session_a.prepare(&log()).unwrap();
        wait_free("32");
        qemu_pages(-32);
        session_b.prepare(&log()).unwrap();
        wait_free("32");
        qemu_pages(-32);
        assert_eq!(host.read(&format!("{POOL}/nr_hugepages")), "64");
        let (first, second) = if first_to_stop == "a" {
            (&session_a, &session_b)
        } else {
            (&session_b, &session_a)
        };
        qemu_pages(32);
        first.restore(&log());
        wait_free("0");
        assert_eq!(
            host.read(&format!("{POOL}/nr_hugepages")),
            "32",
            "{first_to_stop} stopped first: the other VM keeps its 32 pages"
        );
        qemu_pages(32);
        second.restore(&log());
        wait_free("0");
        assert_eq!(host.read(&format!("{POOL}/nr_hugepages")), "0");
        assert!(
            diff(&before, &host.snapshot()).is_empty(),
            "{:?}",
            diff(&before, &host.snapshot())
        );
    }
}

/// Two isolated VMs on the same host change the workqueue mask, the slices' AllowedCPUs and
/// (on a shared CPU) the governor; stopped in either order, both end as they were before either VM. (Restored as the
/// values each VM found, the VM that started second put back the first one's changes for good.)
#[test]
fn two_isolated_vms_give_back_the_workqueue_mask_and_governors_in_any_order() {
    const MASK: &str = "sys/devices/virtual/workqueue/cpumask";
    let governor = |cpu: usize| format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor");
    for first_to_stop in ["a", "b"] {
        let host = FakeHost::new(
            "intel-shared-rootport.tsv",
            Options {
                topology: Some("i5-9600k.lscpu"),
                ..Options::default()
            },
        );
        let (mask, gov2, gov3) = (
            host.read(MASK),
            host.read(&governor(2)),
            host.read(&governor(3)),
        );
        assert_ne!(gov2, "performance", "the fixture must start elsewhere");
        let dir = crate::common::tempdir();
        let rig = Rig::new(&host);
        // Both use CPU 2 (A for its vCPU, B for its vCPU and CPU 3): a shared governor.
        let config = |name: &str, vcpus: &str| {
            let text = format!(
                "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = {}\n[pinning]\nvcpus = [{vcpus}]\n\
                 emulator = \"0\"\n[firmware]\ntype = \"seabios\"\n[isolation]\nhost_cpus = \"0-1\"\n",
                vcpus.split(',').count()
            );
            validate_text(dir.path(), name, &text).unwrap().0
        };
        let (a, b) = (config("a", "2"), config("b", "2, 3"));
        let session_a = rig.prep(&a, &dir.path().join("a.journal"));
        let session_b = rig.prep(&b, &dir.path().join("b.journal"));
        session_a.prepare(&log()).unwrap();
        session_b.prepare(&log()).unwrap();
        assert_eq!(host.read(&governor(2)), "performance");
        assert_eq!(host.read(&governor(3)), "performance");
        let (first, second) = if first_to_stop == "a" {
            (&session_a, &session_b)
        } else {
            (&session_b, &session_a)
        };
        first.restore(&log());
        second.restore(&log());
        assert_eq!(host.read(MASK), mask, "{first_to_stop} stopped first");
        assert_eq!(
            host.read(&governor(2)),
            gov2,
            "{first_to_stop} stopped first"
        );
        assert_eq!(
            host.read(&governor(3)),
            gov3,
            "{first_to_stop} stopped first"
        );
    }
}
