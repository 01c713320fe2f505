//! The real vmrun binary against a fake host: a full single-GPU run and stop, and `kill -9` of
//! vmrun at every stage followed by `vmrun recover`. QEMU is real; a wrapper drops the vfio-pci
//! devices (and the evdev inputs) from its argv because no real device stands behind the fake
//! sysfs. QEMU runs as `nobody` (root without SUDO_UID): the device nodes it would open are
//! handed to it for the run and given back.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{run, run_in_foreground, wait_for};
use crate::fake_host::{diff, FakeHost, Options};

const QEMU_WITHOUT_VFIO: &str = r#"#!/bin/bash
# Real QEMU without -device vfio-pci,... and -object input-linux,...: the test host's devices
# exist only in a fake sysfs and /dev.
args=()
while [ $# -gt 0 ]; do
    if [ "$1" = "-device" ] && [[ "$2" == vfio-pci,* ]]; then shift 2; continue; fi
    if [ "$1" = "-object" ] && [[ "$2" == input-linux,* ]]; then shift 2; continue; fi
    args+=("$1"); shift
done
exec qemu-system-x86_64 "${args[@]}"
"#;

pub(crate) struct Setup {
    pub(crate) host: FakeHost,
    pub(crate) dir: crate::common::TestDir,
    pub(crate) profile: PathBuf,
}

/// `nobody`, whom QEMU runs as here, and its group.
const NOBODY: (u32, u32) = (65534, 65534);
/// The fake evdev node and the by-id link the profile names.
const EVENT: &str = "dev/input/event5";
const EVENT_LINK: &str = "usb-Fake_Keyboard-event-kbd";
/// The IOMMU group node of 01:00.0 and 01:00.1 in the fixture.
const VFIO_GROUP: &str = "dev/vfio/1";

pub(crate) fn wrapper(dir: &std::path::Path) -> PathBuf {
    let wrapper = dir.join("qemu-without-vfio");
    std::fs::write(&wrapper, QEMU_WITHOUT_VFIO).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

pub(crate) fn setup() -> Setup {
    crate::common::require_root();
    let host =
        FakeHost::new("intel-shared-rootport.tsv", Options::single_gpu_desktop()).with_kernel();
    let evdev = host.add_evdev("event5", EVENT_LINK);
    let dir = crate::common::tempdir();
    let wrapper = wrapper(dir.path());
    let profile = dir.path().join("sgpu.toml");
    std::fs::write(
        &profile,
        format!(
            "[machine]\nmemory = \"128M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[pinning]\nvcpus = [1]\nemulator = \"0\"\n\
             [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[display]\nvga = \"none\"\n\
             [[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n\
             [single_gpu]\nmodules = [\"nvidia_drm\", \"nvidia_modeset\", \"nvidia_uvm\", \"nvidia\"]\n\
             [input]\nevdev = [\"{evdev}\"]\n\
             [shutdown]\ntimeout = 1\n[qemu]\nbinary = \"{}\"\n",
            wrapper.display()
        ),
    )
    .unwrap();
    Setup { host, dir, profile }
}

impl Setup {
    pub(crate) fn vmrun(&self) -> Command {
        self.host.vmrun(self.dir.path())
    }

    pub(crate) fn journal(&self) -> PathBuf {
        self.dir.path().join("state/sgpu/journal")
    }

    fn journal_entries(&self) -> usize {
        std::fs::read_to_string(self.journal())
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

#[test]
fn a_single_gpu_run_takes_the_gpu_and_stop_gives_everything_back() {
    let s = setup();
    let before = s.host.snapshot();
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(s.host.driver("0000:01:00.0").as_deref(), Some("vfio-pci"));
    assert_eq!(s.host.driver("0000:01:00.1").as_deref(), Some("vfio-pci"));
    assert_eq!(
        s.host.read(".fake/services/display-manager.service"),
        "inactive"
    );
    assert_eq!(s.host.read("sys/class/vtconsole/vtcon1/bind"), "0");
    assert!(!s.host.read("proc/modules").contains("nvidia"));
    let (uid, gid) = NOBODY;
    assert_eq!(
        s.host.owner(VFIO_GROUP),
        Some((uid, gid, 0o600)),
        "the group's node, made root's by the (fake) kernel, is QEMU's for the run"
    );
    assert_eq!(
        s.host.owner(EVENT),
        Some((uid, gid, 0o660)),
        "the evdev node behind the by-id link is QEMU's"
    );
    // 19: each of the two bound functions also journals its runtime PM setting, which vfio-pci changes.
    assert_eq!(s.journal_entries(), 19, "every change journaled");
    let (code, stdout, _) = run(s.vmrun().args(["status", "sgpu"]));
    assert_eq!(code, 0, "{stdout}");
    let (code, _, stderr) = run(s.vmrun().args(["stop", "sgpu"]));
    assert_eq!(
        code, 5,
        "SeaBIOS ignores ACPI, so the stop is forced: {stderr}"
    );
    let after = s.host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "not restored:\n{}",
        diff(&before, &after).join("\n")
    );
    assert_eq!(s.host.owner(EVENT), Some((0, 0, 0o660)), "root's again");
    assert_eq!(
        s.host.owner(VFIO_GROUP),
        None,
        "the group left vfio-pci, so its node is gone"
    );
    assert!(!s.journal().exists());
    let calls = s.host.calls();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("systemctl start display-manager.service"),
        "{calls:#?}"
    );
    // How long giving the host back took once QEMU was gone (the log's phase times).
    let log = std::fs::read_to_string(s.dir.path().join("state/sgpu/vmrun.log")).unwrap();
    let phase = |name: &str| -> f64 {
        log.lines()
            .rev()
            .find_map(|l| l.split_once(&format!("phase {name} at ")))
            .and_then(|(_, at)| at.strip_suffix(" ms")?.parse().ok())
            .unwrap_or_else(|| panic!("no phase {name} in {log}"))
    };
    eprintln!(
        "[single-gpu] fake host restored {:.1} ms after QEMU exited",
        phase("host restored") - phase("QEMU exited")
    );
}

/// Runs vmrun in the foreground and kills it with SIGKILL once the journal has `stage` entries
/// (or once the VM runs, for `stage == None`); returns when its QEMU is gone too.
fn kill_vmrun_at(s: &Setup, stage: Option<usize>) {
    let mut vmrun = s
        .vmrun()
        .arg("run")
        .arg(&s.profile)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    match stage {
        Some(entries) => wait_for(
            &format!("journal entry {entries}"),
            Duration::from_secs(20),
            || s.journal_entries() >= entries,
        ),
        None => wait_for("the VM to run", Duration::from_secs(20), || {
            run(s.vmrun().args(["status", "sgpu"])).0 == 0
        }),
    }
    kill(Pid::from_raw(vmrun.id() as i32), Signal::SIGKILL).unwrap();
    let _ = vmrun.wait();
    // QEMU dies with its supervisor (parent-death signal); recover refuses while it runs.
    let pidfile = s.dir.path().join("run/sgpu/qemu.pid");
    let Some(qemu) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    else {
        return; // killed before QEMU was started
    };
    wait_for("QEMU to go", Duration::from_secs(10), || {
        !vmrun::run::state::process_alive(qemu, "qemu")
    });
}

/// `kill -9` of vmrun at `stage`, then `vmrun recover`: the host must be exactly as before.
fn crash_and_recover(stage: Option<usize>) {
    let s = setup();
    let before = s.host.snapshot();
    kill_vmrun_at(&s, stage);
    let (code, _, stderr) = run(s.vmrun().args(["recover"]).arg(&s.profile));
    assert_eq!(code, 0, "recover after a kill at stage {stage:?}: {stderr}");
    let after = s.host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "kill at stage {stage:?} then recover left:\n{}",
        diff(&before, &after).join("\n")
    );
    assert!(!s.journal().exists());
    let (code, _, _) = run(s.vmrun().args(["recover"]).arg(&s.profile));
    assert_eq!(code, 0, "a second recover has nothing to do");
}

#[test]
fn kill_9_at_every_stage_then_recover_restores_the_host() {
    for stage in 1..=17 {
        crash_and_recover(Some(stage));
    }
}

#[test]
fn kill_9_while_the_guest_runs_then_recover_restores_the_host() {
    crash_and_recover(None);
}

#[test]
fn recover_by_name_after_kill_9_of_a_vm_started_from_a_path() {
    let s = setup();
    // The profile is a path outside the search path; its post_stop hook records what it is told.
    let hook_log = s.dir.path().join("post-stop.log");
    let mut text = std::fs::read_to_string(&s.profile).unwrap();
    text.push_str(&format!(
        "[hooks]\npost_stop = [\"/bin/sh\", \"-c\", \"echo $VMRUN_VM $VMRUN_PHASE $VMRUN_PROFILE >> {}\"]\n",
        hook_log.display()
    ));
    std::fs::write(&s.profile, text).unwrap();
    let before = s.host.snapshot();
    kill_vmrun_at(&s, None);
    assert_eq!(s.host.driver("0000:01:00.0").as_deref(), Some("vfio-pci"));
    assert_eq!(s.host.owner(EVENT).map(|o| o.0), Some(NOBODY.0));
    let (code, _, stderr) = run(s.vmrun().args(["recover", "sgpu"]));
    assert_eq!(code, 0, "recover by name: {stderr}");
    assert!(
        diff(&before, &s.host.snapshot()).is_empty(),
        "recover by name left:\n{}",
        diff(&before, &s.host.snapshot()).join("\n")
    );
    assert!(!s.journal().exists());
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        format!("sgpu post_stop {}\n", s.profile.display()),
        "the hook ran once, told the profile the run used"
    );
    let (code, _, stderr) = run(s.vmrun().args(["recover", "no-such-vm"]));
    assert_eq!(code, 2, "a name that never ran is a usage error: {stderr}");
    assert!(stderr.contains("neither a profile"), "{stderr}");
}

#[test]
fn the_next_run_undoes_what_a_killed_run_left() {
    let s = setup();
    let before = s.host.snapshot();
    kill_vmrun_at(&s, None);
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    let log = std::fs::read_to_string(s.dir.path().join("state/sgpu/vmrun.log")).unwrap();
    assert!(log.contains("left host changes behind"), "{log}");
    assert_eq!(s.journal_entries(), 19, "one fresh set of changes, not two");
    assert_eq!(run(s.vmrun().args(["stop", "sgpu"])).0, 5);
    assert!(diff(&before, &s.host.snapshot()).is_empty());
}

#[test]
fn a_run_with_a_non_viable_group_is_refused_before_anything_changes() {
    let host = FakeHost::new("b550-ryzen5800x.tsv", Options::default()).with_kernel();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let profile = dir.path().join("rx550.toml");
    std::fs::write(
        &profile,
        "[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n[[pci]]\naddress = \"04:00.0\"\n[[pci]]\naddress = \"04:00.1\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(host.vmrun(dir.path()).arg("run").arg(&profile));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("IOMMU group 15 is not viable") && stderr.contains("0000:07:00.0"),
        "{stderr}"
    );
    assert!(host.calls().is_empty());
    assert!(diff(&before, &host.snapshot()).is_empty());
    assert!(!dir.path().join("state/rx550/journal").exists());
}

/// A GPU left on vfio-pci by the host (its `/dev/vfio/16` exists before and after the run):
/// the node is QEMU's only while the VM runs; `stop`, and `recover` after `kill -9`, give it
/// back to root with its mode.
#[test]
fn a_group_already_on_vfio_pci_is_root_s_again_after_stop_and_after_recover() {
    let host = FakeHost::new("b550-ryzen5800x.tsv", Options::default()).with_kernel();
    let dir = crate::common::tempdir();
    let profile = dir.path().join("vfio.toml");
    std::fs::write(
        &profile,
        format!(
            "[machine]\nmemory = \"128M\"\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n\
             [network]\nmode = \"none\"\n[display]\nvga = \"none\"\n[shutdown]\ntimeout = 1\n\
             [[pci]]\naddress = \"08:00.0\"\n[[pci]]\naddress = \"08:00.1\"\n\
             [qemu]\nbinary = \"{}\"\n",
            wrapper(dir.path()).display()
        ),
    )
    .unwrap();
    let vmrun = || host.vmrun(dir.path());
    let node = "dev/vfio/16";
    assert_eq!(host.owner(node), Some((0, 0, 0o600)), "made by the kernel");
    let before = host.snapshot();

    let (code, _, stderr) = run(vmrun().arg("run").arg(&profile).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(host.owner(node), Some((NOBODY.0, NOBODY.1, 0o600)));
    let journal = std::fs::read_to_string(dir.path().join("state/vfio/journal")).unwrap();
    assert!(
        journal.contains(r#""undo":"restore_owner""#)
            && journal.contains(r#""path":"/dev/vfio/16""#),
        "{journal}"
    );
    assert_eq!(run(vmrun().args(["stop", "vfio"])).0, 5);
    assert_eq!(
        host.owner(node),
        Some((0, 0, 0o600)),
        "root's again after stop"
    );
    assert!(diff(&before, &host.snapshot()).is_empty());

    // kill -9 of vmrun while the guest runs, then recover.
    let running = run_in_foreground(vmrun, &profile, "vfio", &dir.path().join("run"));
    assert_eq!(host.owner(node).map(|o| o.0), Some(NOBODY.0));
    running.kill_9();
    assert_eq!(
        host.owner(node).map(|o| o.0),
        Some(NOBODY.0),
        "still QEMU's after the crash"
    );
    let (code, _, stderr) = run(vmrun().arg("recover").arg("vfio"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        host.owner(node),
        Some((0, 0, 0o600)),
        "root's again after recover"
    );
    assert!(diff(&before, &host.snapshot()).is_empty());
}
