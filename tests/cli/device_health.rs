//! A passed device that does not answer after the guest (config space all ones) never goes
//! back to its host driver: one remove + rescan, then it stays on vfio-pci (or off the bus),
//! everything else is given back, the journal keeps its entry, `run`/`stop`/`recover` exit 8
//! until it answers again. Over the fake host: its kernel does not add a function that reads
//! all ones at a rescan, as the real one does not.

use vmrun::host::journal::Journal;
use vmrun::host::steps::Undo;

use crate::common::{run, validate_text};
use crate::fake_host::{diff, FakeHost, Options};
use crate::host_e2e::{setup, Setup};
use crate::host_session::{log, Rig};

const GPU: &str = "0000:01:00.0";
const AUDIO: &str = "0000:01:00.1";

/// Stops the VM (by force) when the test ends, failed or not.
struct StopOnDrop<'a>(&'a Setup);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = run(self.0.vmrun().args(["stop", "--force", "sgpu"]));
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_gpu_dead_after_the_guest_stays_off_its_driver_exit_8_and_recover_brings_it_back() {
    let s = setup();
    let before = s.host.snapshot();
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    let _guard = StopOnDrop(&s);

    // While it runs, status shows each passed function with its driver and power state.
    let (code, stdout, _) = run(s.vmrun().args(["status", "sgpu", "--json"]));
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        json(&stdout)["pci"],
        serde_json::json!([
            {"address": GPU, "driver": "vfio-pci", "power_state": "D0"},
            {"address": AUDIO, "driver": "vfio-pci", "power_state": "D0"},
        ])
    );
    let (_, text, _) = run(s.vmrun().args(["status", "sgpu"]));
    assert!(
        text.contains(&format!("  pci {GPU}: driver vfio-pci, power_state D0")),
        "{text}"
    );

    // The guest leaves the GPU dead; stop returns the run's code.
    s.host.kill_device(GPU, false);
    let (code, _, stderr) = run(s.vmrun().args(["stop", "sgpu"]));
    assert_eq!(code, 8, "{stderr}");
    for said in [
        "0000:01:00.0 does not answer after the guest",
        "vendor ffff device ffff",
        "vmrun removed it and rescanned the PCI bus once",
        "it did not come back (the kernel does not add a function that does not answer); it is off the bus, where no driver can touch it",
        "Suspend and resume the host (or reboot), then run `vmrun recover sgpu`",
    ] {
        assert!(stderr.contains(said), "{said:?} not in {stderr}");
    }
    assert_eq!(
        s.host.kernel_log(),
        [
            "remove 0000:01:00.0",
            "rescan",
            "rescan: 0000:01:00.0 does not answer, not added"
        ]
    );
    // Everything else came back: the audio function, the modules, the console, the session.
    assert_eq!(s.host.driver(AUDIO).as_deref(), Some("snd_hda_intel"));
    assert!(s.host.read("proc/modules").contains("nvidia_drm"));
    assert_eq!(s.host.read("sys/class/vtconsole/vtcon1/bind"), "1");
    assert_eq!(
        s.host.read(".fake/services/display-manager.service"),
        "active"
    );
    let entries = Journal::at(&s.journal()).entries().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        matches!(&entries[0].undo, Undo::RestorePciDriver(r) if r.address == GPU),
        "{entries:?}"
    );
    let (code, stdout, _) = run(s.vmrun().args(["status", "sgpu", "--json"]));
    assert_eq!(code, 7);
    let status = json(&stdout);
    assert_eq!(status["last_run"]["exit_code"], 8, "{status}");
    assert_eq!(
        status["pci"],
        serde_json::json!([{"address": GPU, "driver": null, "power_state": null}])
    );
    let (_, text, _) = run(s.vmrun().args(["status", "sgpu"]));
    assert!(text.contains("exit code 8"), "{text}");
    assert!(
        text.contains(&format!(
            "  pci {GPU}: not given back yet (driver none, power_state unknown): `vmrun recover sgpu`"
        )),
        "{text}"
    );

    // Still dead: recover tries again and says so.
    let (code, _, stderr) = run(s.vmrun().args(["recover", "sgpu"]));
    assert_eq!(code, 8, "{stderr}");
    assert!(
        stderr.contains("does not answer after the guest"),
        "{stderr}"
    );
    assert_eq!(Journal::at(&s.journal()).entries().unwrap().len(), 1);

    // A new run finds the device gone from the bus and refuses before changing anything.
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(&format!("{GPU} does not exist on this host")),
        "{stderr}"
    );
    assert_eq!(Journal::at(&s.journal()).entries().unwrap().len(), 1);

    // A suspend and resume later it answers: recover gives it back to nvidia.
    s.host.revive_device(GPU);
    let (code, _, stderr) = run(s.vmrun().args(["recover", "sgpu"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(s.host.driver(GPU).as_deref(), Some("nvidia"));
    assert!(!s.journal().exists());
    let after = s.host.snapshot();
    assert!(
        diff(&before, &after).is_empty(),
        "not restored:\n{}",
        diff(&before, &after).join("\n")
    );
    let log = std::fs::read_to_string(s.dir.path().join("state/sgpu/vmrun.log")).unwrap();
    assert!(
        log.contains("0000:01:00.1 answers (vendor 10de device 0fb9, power_state D0): returning it to its driver")
            && log.contains("0000:01:00.0 answers again after the remove and rescan (vendor 10de device 1c82, power_state D0)"),
        "{log}"
    );
}

fn two_functions(dir: &std::path::Path) -> vmrun::model::VmConfig {
    validate_text(
        dir,
        "pair",
        "[[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddress = \"01:00.1\"\n",
    )
    .unwrap()
    .0
}

#[test]
fn a_device_that_answers_after_one_remove_and_rescan_goes_back_to_its_driver() {
    let host = FakeHost::new("intel-shared-rootport.tsv", Options::default()).with_kernel();
    let before = host.snapshot();
    let dir = crate::common::tempdir();
    let config = two_functions(dir.path());
    let rig = Rig::new(&host);
    let prep = rig.prep(&config, &dir.path().join("journal"));
    prep.apply(&log()).unwrap();
    assert_eq!(host.driver(GPU).as_deref(), Some("vfio-pci"));
    host.kill_device(GPU, true);
    prep.undo_all(&log()).unwrap();
    assert_eq!(host.kernel_log(), ["remove 0000:01:00.0", "rescan"]);
    assert_eq!(host.driver(GPU).as_deref(), Some("nvidia"));
    assert!(prep.stuck_devices().is_empty());
    assert!(
        diff(&before, &host.snapshot()).is_empty(),
        "{}",
        diff(&before, &host.snapshot()).join("\n")
    );
}

#[test]
fn a_dead_device_the_kernel_will_not_remove_stays_on_vfio_pci_with_its_entry_kept() {
    let host = FakeHost::new("intel-shared-rootport.tsv", Options::default()).with_kernel();
    let dir = crate::common::tempdir();
    let config = two_functions(dir.path());
    let rig = Rig::new(&host);
    let journal = dir.path().join("journal");
    let prep = rig.prep(&config, &journal);
    prep.apply(&log()).unwrap();
    host.kill_device(GPU, false);
    let remove = host.root.join("sys/bus/pci/devices/0000:01:00.0/remove");
    std::fs::remove_file(&remove).unwrap();
    let problems = prep.undo_all(&log()).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(
            "vmrun could not remove and rescan it, and its config space reads vendor ffff"
        ),
        "{problems:?}"
    );
    assert!(
        problems[0].contains("it stays on vfio-pci with driver_override vfio-pci, so that nvidia cannot hang the host on it"),
        "{problems:?}"
    );
    assert_eq!(prep.stuck_devices(), problems);
    assert_eq!(host.driver(GPU).as_deref(), Some("vfio-pci"));
    assert_eq!(
        host.read("sys/bus/pci/devices/0000:01:00.0/driver_override"),
        "vfio-pci"
    );
    // The other function is home; vfio-pci stays loaded because it keeps the GPU.
    assert_eq!(host.driver(AUDIO).as_deref(), Some("snd_hda_intel"));
    assert!(host.read("proc/modules").contains("vfio_pci"));
    let entries = Journal::at(&journal).entries().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(matches!(&entries[0].undo, Undo::RestorePciDriver(r) if r.address == GPU));

    // A new session meets it first: it does not start (`run` exits 8 on this), and the
    // device stays where it is.
    let next = rig.prep(&config, &journal);
    assert!(next.prepare(&log()).is_err());
    assert_eq!(next.stuck_devices().len(), 1);
    assert_eq!(host.driver(GPU).as_deref(), Some("vfio-pci"));
    assert_eq!(Journal::at(&journal).entries().unwrap().len(), 1);

    // Answering again, it goes home on the next undo (what `recover` runs).
    host.revive_device(GPU);
    std::fs::write(&remove, "").unwrap();
    prep.undo_all(&log()).unwrap();
    assert_eq!(host.driver(GPU).as_deref(), Some("nvidia"));
    // Cleared (the kernel would show "(null)").
    assert_eq!(
        host.read("sys/bus/pci/devices/0000:01:00.0/driver_override"),
        ""
    );
    assert!(!journal.exists());
}
