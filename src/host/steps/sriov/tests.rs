use std::os::unix::fs::symlink;

use super::*;
use crate::host::finding::Status;
use crate::host::session::HostSession;
use crate::host::steps::testing::{self, FakeHost};
use crate::host::steps::HostStep;
use crate::host::{RealSysfs, SysfsIo, Sysroot};

const PF: &str = "0000:03:00.0";

/// sysfs as the kernel answers `sriov_numvfs`: a non-zero count changes only through 0;
/// writing it removes the PF's VFs and makes that many (`virtfnN`, the VF's directory with
/// `physfn`, its own IOMMU group), each probed by `igbvf` unless the PF's
/// `sriov_drivers_autoprobe` is 0.
struct SriovKernel {
    inner: RealSysfs,
    root: PathBuf,
}

impl SriovKernel {
    fn new(fake: &FakeHost) -> Self {
        SriovKernel {
            inner: RealSysfs {
                root: Sysroot::new(fake.root()),
            },
            root: fake.root().to_path_buf(),
        }
    }

    /// The PF as its driver or another program left it: `count` VFs made before vmrun runs.
    fn enable(&self, count: u16) {
        self.write(
            &format!("/sys/bus/pci/devices/{PF}/sriov_numvfs"),
            count.to_string().as_bytes(),
        )
        .unwrap();
    }

    fn devices(&self) -> PathBuf {
        self.root.join("sys/bus/pci/devices")
    }

    fn set_vfs(&self, pf: &str, count: u16) {
        let root = Sysroot::new(&self.root);
        for (index, vf) in sriov::virtfns(&root, pf) {
            std::fs::remove_dir_all(self.devices().join(&vf)).unwrap();
            std::fs::remove_file(self.devices().join(pf).join(format!("virtfn{index}"))).unwrap();
            let _ = std::fs::remove_dir_all(
                self.root
                    .join(format!("sys/kernel/iommu_groups/{}", 100 + index)),
            );
        }
        let read = |name: &str| -> u16 {
            std::fs::read_to_string(self.devices().join(pf).join(name))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let capability = crate::plan::SriovPf {
            total_vfs: read("sriov_totalvfs"),
            num_vfs: 0,
            offset: read("sriov_offset"),
            stride: read("sriov_stride"),
        };
        let probe =
            std::fs::read_to_string(self.devices().join(pf).join("sriov_drivers_autoprobe"))
                .map_or(true, |v| v.trim() != "0");
        for index in 0..count {
            let vf = capability
                .vf_address(pf.parse().unwrap(), index)
                .unwrap()
                .to_string();
            let dir = self.devices().join(&vf);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, value) in [
                ("vendor", "0x8086"),
                ("device", "0x10ca"),
                ("class", "0x020000"),
                ("driver_override", "(null)"),
            ] {
                std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
            }
            let group = self
                .root
                .join(format!("sys/kernel/iommu_groups/{}/devices", 100 + index));
            std::fs::create_dir_all(group.join(&vf)).unwrap();
            symlink(
                format!("../../../kernel/iommu_groups/{}", 100 + index),
                dir.join("iommu_group"),
            )
            .unwrap();
            symlink(format!("../{pf}"), dir.join("physfn")).unwrap();
            symlink(
                format!("../{vf}"),
                self.devices().join(pf).join(format!("virtfn{index}")),
            )
            .unwrap();
            if probe {
                symlink("../../drivers/igbvf", dir.join("driver")).unwrap();
            }
        }
    }
}

impl SysfsIo for SriovKernel {
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        self.inner.read(path)
    }

    fn write(&self, path: &str, data: &[u8]) -> std::io::Result<()> {
        if let Some(pf) = path
            .strip_suffix("/sriov_numvfs")
            .and_then(|dir| dir.rsplit('/').next())
        {
            let count: u16 = String::from_utf8_lossy(data).trim().parse().unwrap();
            let now = sriov::virtfns(&Sysroot::new(&self.root), pf).len() as u16;
            if now != 0 && count != 0 && count != now {
                return Err(std::io::Error::from_raw_os_error(nix::libc::EBUSY));
            }
            self.set_vfs(pf, count);
        }
        // Binding as the kernel does it: a probe follows driver_override, unbind drops
        // the driver.
        let device = String::from_utf8_lossy(data).trim().to_string();
        if path == "/sys/bus/pci/drivers_probe" {
            let dir = self.devices().join(&device);
            let forced = std::fs::read_to_string(dir.join("driver_override"))?;
            let forced = forced.trim();
            if forced != "(null)" && !forced.is_empty() && !dir.join("driver").exists() {
                symlink(format!("../../drivers/{forced}"), dir.join("driver"))?;
            }
            return Ok(());
        }
        if path.starts_with("/sys/bus/pci/drivers/") && path.ends_with("/unbind") {
            return std::fs::remove_file(self.devices().join(&device).join("driver"));
        }
        self.inner.write(path, data)
    }
}

/// A host with an igb-like PF at 03:00.0: 7 VFs at most, offset 0x80, stride 2, on igb
/// with its interface enp3s0.
fn sriov_host() -> FakeHost {
    let fake = FakeHost::new();
    for (name, value) in [
        ("vendor", "0x8086"),
        ("device", "0x10c9"),
        ("class", "0x020000"),
        ("sriov_totalvfs", "7"),
        ("sriov_numvfs", "0"),
        ("sriov_offset", "128"),
        ("sriov_stride", "2"),
        ("sriov_drivers_autoprobe", "1"),
    ] {
        fake.write(&format!("/sys/bus/pci/devices/{PF}/{name}"), value);
    }
    std::fs::create_dir_all(
        fake.root()
            .join(format!("sys/bus/pci/devices/{PF}/net/enp3s0")),
    )
    .unwrap();
    fake
}

/// The VM `name`'s runtime directory under the fake's `run`, its lock held (the VM runs) while
/// the returned value lives.
fn running(fake: &FakeHost, name: &str) -> Flock<std::fs::File> {
    let run = fake.root().join("run");
    std::fs::create_dir_all(run.join(name)).unwrap();
    let file = std::fs::File::create(run.join(name).join("lock")).unwrap();
    Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap()
}

fn step(fake: &FakeHost, vfs: &[(u16, Option<&str>, Option<u16>)]) -> CreateSriovVfs {
    let capability = sriov::capability(&Sysroot::new(fake.root()), PF.parse().unwrap()).unwrap();
    CreateSriovVfs {
        pf: PF.parse().unwrap(),
        vfs: vfs
            .iter()
            .map(|(index, mac, vlan)| PlannedVf {
                index: *index,
                address: capability.vf_address(PF.parse().unwrap(), *index).unwrap(),
                mac: mac.map(str::to_string),
                vlan: *vlan,
            })
            .collect(),
        records: fake.root().join("run/.sriov"),
    }
}

/// The fake host as the VM `vm` sees it, its sysfs writes answered by `kernel`.
fn host<'a>(fake: &'a FakeHost, kernel: &'a SriovKernel, vm: &str) -> HostContext<'a> {
    let mut host = fake.host();
    host.sysfs = kernel;
    host.vm.name = vm.to_string();
    host
}

fn session<'a>(
    fake: &'a FakeHost,
    kernel: &'a SriovKernel,
    vm: &str,
    steps: Vec<CreateSriovVfs>,
) -> HostSession<'a> {
    let host = host(fake, kernel, vm);
    let steps = steps.into_iter().map(HostStep::CreateSriovVfs).collect();
    HostSession::new(host, steps, &fake.root().join(format!("journal-{vm}")))
}

fn numvfs(fake: &FakeHost) -> String {
    fake.read(&format!("/sys/bus/pci/devices/{PF}/sriov_numvfs"))
}

fn autoprobe(fake: &FakeHost) -> String {
    fake.read(&format!(
        "/sys/bus/pci/devices/{PF}/sriov_drivers_autoprobe"
    ))
}

fn record(fake: &FakeHost) -> PfRecord {
    serde_json::from_str(&fake.read(&format!("/run/.sriov/{PF}"))).unwrap()
}

#[test]
fn vfs_are_made_unprobed_where_the_plan_said_and_the_count_restored() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let lock = running(&fake, "a");
    let session = session(&fake, &kernel, "a", vec![step(&fake, &[(1, None, None)])]);
    session.apply(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "2");
    // No host driver took them: autoprobe was 0 while they appeared, and stays 0 while the VM
    // runs (a VF driver loaded later must not take them either).
    assert!(!fake.exists("/sys/bus/pci/devices/0000:03:10.2/driver"));
    assert_eq!(autoprobe(&fake), "0");
    assert_eq!(
        sriov::virtfn(&Sysroot::new(fake.root()), PF, 1).as_deref(),
        Some("0000:03:10.2")
    );
    assert_eq!(
        record(&fake),
        PfRecord {
            original_numvfs: Some(0),
            users: vec!["a".into()]
        }
    );
    session.undo_all(&testing::log()).unwrap();
    drop(lock);
    assert_eq!(numvfs(&fake), "0");
    assert_eq!(autoprobe(&fake), "1", "back after the stop");
    assert!(!fake.exists("/sys/bus/pci/devices/0000:03:10.2"));
    assert_eq!(record(&fake), PfRecord::default());
}

#[test]
fn the_new_vf_is_bound_to_vfio_pci_and_given_back_before_the_count_is() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    std::fs::create_dir_all(fake.root().join("sys/bus/pci/drivers/vfio-pci")).unwrap();
    let _lock = running(&fake, "a");
    let create = step(&fake, &[(0, None, None)]);
    let bind = crate::host::steps::vfio::BindVfio {
        address: create.vfs[0].address,
        romfile: None,
        uefi: false,
        vf_of: Some(create.pf),
    };
    // Before the VF exists, bind_vfio's preflight says it will be made.
    let before = bind.preflight(&fake.host());
    assert!(
        before[0].status == Status::Pass && before[0].message.contains("does not exist yet"),
        "{before:?}"
    );
    let session = HostSession::new(
        host(&fake, &kernel, "a"),
        vec![HostStep::CreateSriovVfs(create), HostStep::BindVfio(bind)],
        &fake.root().join("journal"),
    );
    session.apply(&testing::log()).unwrap();
    assert_eq!(
        std::fs::read_link(fake.root().join("sys/bus/pci/devices/0000:03:10.0/driver"))
            .unwrap()
            .file_name()
            .unwrap(),
        "vfio-pci"
    );
    session.undo_all(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "0");
    assert!(!fake.exists("/sys/bus/pci/devices/0000:03:10.0"));
}

#[test]
fn a_vf_that_appears_elsewhere_than_planned_fails_the_step_and_is_undone() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let _lock = running(&fake, "a");
    let planned = step(&fake, &[(0, None, None)]);
    // A device whose first-VF offset changes once VFs are enabled.
    fake.write(&format!("/sys/bus/pci/devices/{PF}/sriov_offset"), "130");
    let session = session(&fake, &kernel, "a", vec![planned]);
    let error = session.apply(&testing::log()).unwrap_err().to_string();
    assert!(
        error.contains("VF 0 of 0000:03:00.0 is 0000:03:10.2, not 0000:03:10.0")
            && error.contains("address = \"0000:03:10.2\""),
        "{error}"
    );
    session.undo_all(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "0");
}

#[test]
fn a_pf_with_enough_vfs_is_left_as_it_is() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    kernel.enable(3);
    let _lock = running(&fake, "a");
    let session = session(&fake, &kernel, "a", vec![step(&fake, &[(2, None, None)])]);
    session.apply(&testing::log()).unwrap();
    session.undo_all(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "3", "vmrun did not raise it: it stays");
    // The admin keeps the VF on vfio-pci (driverctl at boot): after the run it is still there,
    // which is the host as it was, not a VF that failed to come back.
    bind(&fake, "0000:03:10.4", "vfio-pci");
    let again = self::session(&fake, &kernel, "a", vec![step(&fake, &[(2, None, None)])]);
    again.apply(&testing::log()).unwrap();
    again.undo_all(&testing::log()).unwrap();
    assert!(again.leftovers().unwrap().is_empty());
    assert_eq!(numvfs(&fake), "3");
}

#[test]
fn the_last_of_two_vms_sets_the_count_back() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let lock_a = running(&fake, "a");
    let lock_b = running(&fake, "b");
    // A raises the count to 2 for its VF 1; B then takes VF 0 without changing it.
    let a = session(&fake, &kernel, "a", vec![step(&fake, &[(1, None, None)])]);
    a.apply(&testing::log()).unwrap();
    let b = session(&fake, &kernel, "b", vec![step(&fake, &[(0, None, None)])]);
    b.apply(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "2");
    assert_eq!(record(&fake).users, vec!["a", "b"]);
    // A stops first: B still uses a VF, so the count stays.
    a.undo_all(&testing::log()).unwrap();
    drop(lock_a);
    assert_eq!(numvfs(&fake), "2");
    assert_eq!(record(&fake).users, vec!["b"]);
    b.undo_all(&testing::log()).unwrap();
    drop(lock_b);
    assert_eq!(numvfs(&fake), "0");
    assert_eq!(record(&fake), PfRecord::default());
}

#[test]
fn a_crashed_vm_is_pruned_and_recover_restores_the_count() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let lock = running(&fake, "a");
    session(&fake, &kernel, "a", vec![step(&fake, &[(0, None, None)])])
        .apply(&testing::log())
        .unwrap();
    // kill -9: the supervisor's lock goes with it; nothing was undone.
    drop(lock);
    assert_eq!(numvfs(&fake), "1");
    // Another VM's start meanwhile does not count the dead one as a user.
    let lock_b = running(&fake, "b");
    let b = session(&fake, &kernel, "b", vec![step(&fake, &[(0, None, None)])]);
    b.apply(&testing::log()).unwrap();
    assert_eq!(record(&fake).users, vec!["b"]);
    b.undo_all(&testing::log()).unwrap();
    drop(lock_b);
    assert_eq!(
        numvfs(&fake),
        "0",
        "B was the last user: the count A raised is back"
    );
    // `vmrun recover a` replays A's journal: nothing left to change, and no error.
    let recover = session(&fake, &kernel, "a", vec![]);
    recover.undo_all(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "0");
    assert!(recover.leftovers().unwrap().is_empty());
}

#[test]
fn recover_after_a_crash_restores_the_count() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let lock = running(&fake, "a");
    session(&fake, &kernel, "a", vec![step(&fake, &[(2, None, None)])])
        .apply(&testing::log())
        .unwrap();
    drop(lock);
    assert_eq!(numvfs(&fake), "3");
    assert_eq!(autoprobe(&fake), "0", "the crash left it off");
    session(&fake, &kernel, "a", vec![])
        .undo_all(&testing::log())
        .unwrap();
    assert_eq!(numvfs(&fake), "0");
    assert_eq!(autoprobe(&fake), "1");
}

#[test]
fn a_count_that_must_go_through_0_is_refused_while_a_vf_is_in_use() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    kernel.enable(1);
    // VF 0 is on vfio-pci (another program's guest).
    bind(&fake, "0000:03:10.0", "vfio-pci");
    let _lock = running(&fake, "a");
    let wanted = step(&fake, &[(2, None, None)]);
    let findings = wanted.preflight(&host(&fake, &kernel, "a"));
    assert!(
        findings
            .iter()
            .any(|f| f.status == Status::Fail
                && f.message.contains("VF 0 0000:03:10.0 (on vfio-pci)")),
        "{findings:?}"
    );
    let session = session(&fake, &kernel, "a", vec![wanted]);
    let error = session.apply(&testing::log()).unwrap_err().to_string();
    assert!(
        error.contains("only through 0") && error.contains("VF 0 0000:03:10.0 (on vfio-pci)"),
        "{error}"
    );
    session.undo_all(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "1", "nothing was destroyed");
    assert!(fake.exists("/sys/bus/pci/devices/0000:03:10.0"));
}

#[test]
fn a_count_that_must_go_through_0_is_refused_while_a_host_driver_uses_a_vf() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    // Made with autoprobe on: igbvf took both, as iavf or mlx5_core would.
    kernel.enable(2);
    let _lock = running(&fake, "a");
    let session = session(&fake, &kernel, "a", vec![step(&fake, &[(3, None, None)])]);
    let error = session.apply(&testing::log()).unwrap_err().to_string();
    assert!(
        error.contains("only through 0")
            && error.contains("VF 0 0000:03:10.0 (on igbvf), VF 1 0000:03:10.2 (on igbvf)")
            && error.contains("choose a vf below 2"),
        "{error}"
    );
    session.undo_all(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "2", "nothing was destroyed");
    assert_eq!(
        pci::driver_of(&Sysroot::new(fake.root()), "0000:03:10.2").as_deref(),
        Some("igbvf")
    );
}

#[test]
fn a_count_that_must_go_through_0_is_refused_while_another_vm_uses_a_vf() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let _b = running(&fake, "b");
    session(&fake, &kernel, "b", vec![step(&fake, &[(0, None, None)])])
        .apply(&testing::log())
        .unwrap();
    let _a = running(&fake, "a");
    let a = session(&fake, &kernel, "a", vec![step(&fake, &[(3, None, None)])]);
    let error = a.apply(&testing::log()).unwrap_err().to_string();
    assert!(error.contains("VM `b`"), "{error}");
    a.undo_all(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "1", "B's VF stays");
    assert_eq!(record(&fake).users, vec!["b"]);
}

#[test]
fn mac_and_vlan_are_set_through_the_pf_and_cleared_after() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let _lock = running(&fake, "a");
    let session = session(
        &fake,
        &kernel,
        "a",
        vec![step(
            &fake,
            &[
                (0, Some("52:54:00:3a:1b:7d"), Some(100)),
                (1, None, Some(7)),
            ],
        )],
    );
    session.apply(&testing::log()).unwrap();
    assert_eq!(
        fake.calls(),
        [
            "ip link set dev enp3s0 vf 0 mac 52:54:00:3a:1b:7d vlan 100",
            "ip link set dev enp3s0 vf 1 vlan 7",
        ]
    );
    session.undo_all(&testing::log()).unwrap();
    assert_eq!(
        fake.calls()[2..],
        [
            "ip link set dev enp3s0 vf 1 vlan 0",
            "ip link set dev enp3s0 vf 0 mac 00:00:00:00:00:00 vlan 0",
        ]
    );
    assert_eq!(numvfs(&fake), "0");
}

#[test]
fn the_preflight_shows_the_capability_and_the_chosen_vf() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    kernel.enable(2);
    // Both VFs are on igbvf (autoprobe was on when they were made).
    let findings = step(&fake, &[(1, None, None), (4, None, None)]).preflight(&fake.host());
    let messages: Vec<&str> = findings.iter().map(|f| f.message.as_str()).collect();
    assert!(
        messages[0].contains(
            "SR-IOV with 2 of 7 VFs made (sriov_numvfs), 2 bound to a driver, 0 free, 5 more can be made"
        ),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("vf 1: 0000:03:10.2, driver igbvf"),
        "{messages:?}"
    );
    assert!(
        messages[2].contains("vf 4: 0000:03:11.0 will be made (sriov_numvfs 2 -> 5)"),
        "{messages:?}"
    );
    // Raising 2 -> 5 goes through 0 and would destroy the VFs igbvf uses.
    let failed: Vec<&str> = findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .map(|f| f.message.as_str())
        .collect();
    assert!(
        failed.len() == 1
            && failed[0].contains("VF 0 0000:03:10.0 (on igbvf), VF 1 0000:03:10.2 (on igbvf)")
            && failed[0].contains("raise sriov_numvfs yourself (through 0) when they are free"),
        "{findings:?}"
    );
    // A VF below the count changes nothing: everything passes.
    let below = step(&fake, &[(1, None, None)]).preflight(&fake.host());
    assert!(below.iter().all(|f| f.status == Status::Pass), "{below:?}");
    std::fs::remove_dir_all(fake.root().join(format!("sys/bus/pci/devices/{PF}/net"))).unwrap();
    let mac = step(&fake, &[(0, Some("52:54:00:3a:1b:7d"), None)]).preflight(&fake.host());
    assert!(mac
        .iter()
        .any(|f| f.status == Status::Fail && f.message.contains("no network interface")));
    std::fs::remove_file(
        fake.root()
            .join(format!("sys/bus/pci/devices/{PF}/sriov_totalvfs")),
    )
    .unwrap();
    let none = step_without_capability().preflight(&fake.host());
    assert!(none[0].message.contains("no SR-IOV capability"), "{none:?}");
}

fn step_without_capability() -> CreateSriovVfs {
    CreateSriovVfs {
        pf: PF.parse().unwrap(),
        vfs: Vec::new(),
        records: PathBuf::from("/nonexistent"),
    }
}

#[test]
fn the_plan_groups_a_pfs_vfs_and_libvirt_gets_the_keys_in_metadata() {
    let written = testing::config(
        "[[pci]]\npf = \"03:00.0\"\nvf = 2\nmac = \"52:54:00:3a:1b:7d\"\nvlan = 100\n\
         [[pci]]\npf = \"0000:03:00.0\"\nvf = 0\n[[pci]]\naddress = \"01:00.0\"\n",
    );
    let mut facts = crate::plan::HostFacts::default();
    facts.sriov.insert(
        PF.parse().unwrap(),
        Ok(crate::plan::SriovPf {
            total_vfs: 7,
            num_vfs: 0,
            offset: 128,
            stride: 2,
        }),
    );
    let vm = crate::plan::resolve(written.clone(), &facts).unwrap();
    assert_eq!(vm.pci[0].address.to_string(), "0000:03:10.4");
    assert_eq!(vm.pci[1].address.to_string(), "0000:03:10.0");
    assert_eq!(
        written.pci[0].address.to_string(),
        PF,
        "the written model keeps the PF"
    );
    let paths = VmPaths::new(
        &crate::plan::BaseDirs::resolve(Some("/s".into()), Some("/run/vmrun".into())),
        &vm.name,
    )
    .unwrap();
    let steps = crate::host::steps::plan(&vm, &paths);
    let kinds: Vec<String> = steps.iter().map(HostStep::kind).collect();
    let create = kinds.iter().position(|k| k == "create_sriov_vfs").unwrap();
    let bind = kinds.iter().position(|k| k == "bind_vfio").unwrap();
    assert!(create < bind, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "create_sriov_vfs").count(), 1);
    let HostStep::CreateSriovVfs(sriov) = &steps[create] else {
        unreachable!()
    };
    assert_eq!(sriov.records, PathBuf::from("/run/vmrun/.sriov"));
    assert_eq!(
        sriov.vfs.iter().map(|v| v.index).collect::<Vec<_>>(),
        [0, 2]
    );
    assert_eq!(sriov.needed(), 3);
    let notes = testing::libvirt(&steps[create], &written);
    assert!(notes.comments[0].contains("/sys/bus/pci/devices/0000:03:00.0/sriov_numvfs"));
    assert_eq!(notes.metadata.len(), 2);
    assert!(notes.metadata[1]
        .attributes
        .contains(&("vlan".to_string(), "100".to_string())));
    // Too high a vf, and a PF without SR-IOV, are errors at their keys.
    let too_high = testing::config("[[pci]]\npf = \"03:00.0\"\nvf = 7\n");
    let error = crate::plan::resolve(too_high, &facts)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("pci[0].vf: 0000:03:00.0 has 7 virtual functions"),
        "{error}"
    );
    let other = testing::config("[[pci]]\npf = \"04:00.0\"\nvf = 0\n");
    let error = crate::plan::resolve(other, &facts).unwrap_err().to_string();
    assert!(error.starts_with("pci[0].pf: "), "{error}");
}

/// Puts `vf` on `driver` as a bind would (or something else did).
fn bind(fake: &FakeHost, vf: &str, driver: &str) {
    let link = fake.root().join(format!("sys/bus/pci/devices/{vf}/driver"));
    let _ = std::fs::remove_file(&link);
    symlink(format!("../../drivers/{driver}"), link).unwrap();
}

#[test]
fn a_vf_of_this_vm_left_on_vfio_pci_keeps_the_count_and_the_entry_until_recover() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let lock = running(&fake, "a");
    let a = session(&fake, &kernel, "a", vec![step(&fake, &[(0, None, None)])]);
    a.apply(&testing::log()).unwrap();
    // The VF did not answer after the guest: bind_vfio left it on vfio-pci (exit code 8).
    bind(&fake, "0000:03:10.0", "vfio-pci");
    drop(lock);
    let problems = a.undo_all(&testing::log()).unwrap_err().join("; ");
    assert!(
        problems.contains(
            "VF 0000:03:10.0 of 0000:03:00.0 is still on vfio-pci, so sriov_numvfs stays at 1"
        ) && problems.contains("`vmrun recover a` finishes it"),
        "{problems}"
    );
    assert_eq!(numvfs(&fake), "1");
    assert_eq!(
        record(&fake),
        PfRecord {
            original_numvfs: Some(0),
            users: vec!["a".into()]
        },
        "A stays in the record, with the count it raised"
    );
    assert!(!a.leftovers().unwrap().is_empty());
    // Later the VF answers and `vmrun recover a` gives it back: the entry finishes the job.
    std::fs::remove_file(fake.root().join("sys/bus/pci/devices/0000:03:10.0/driver")).unwrap();
    a.undo_all(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "0");
    assert_eq!(record(&fake), PfRecord::default());
    assert!(a.leftovers().unwrap().is_empty());
    // A journal written before ReleaseSriovVfs had `vfs` still loads.
    let old: ReleaseSriovVfs = serde_json::from_str(
        r#"{"pf": "0000:03:00.0", "vm": "a", "records": "/run/vmrun/.sriov"}"#,
    )
    .unwrap();
    assert!(old.vfs.is_empty());
}

#[test]
fn vfs_others_use_keep_the_count_and_the_record_forgets_the_original() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let lock = running(&fake, "a");
    let a = session(&fake, &kernel, "a", vec![step(&fake, &[(1, None, None)])]);
    a.apply(&testing::log()).unwrap();
    // Something else bound VF 0, not this VM's, to a host driver meanwhile.
    bind(&fake, "0000:03:10.0", "uio_pci_generic");
    a.undo_all(&testing::log()).unwrap();
    drop(lock);
    assert_eq!(numvfs(&fake), "2", "VF 0 is in use: the count stays");
    // The count is now its user's: no later VM may set it back to 0 on A's behalf.
    assert_eq!(record(&fake), PfRecord::default());
    assert!(a.leftovers().unwrap().is_empty());
}

#[test]
fn an_empty_record_is_empty_and_an_unreadable_one_an_error() {
    let fake = sriov_host();
    let kernel = SriovKernel::new(&fake);
    let _lock = running(&fake, "a");
    let records = fake.root().join("run/.sriov");
    std::fs::create_dir_all(&records).unwrap();
    std::fs::write(records.join(PF), "").unwrap();
    let a = session(&fake, &kernel, "a", vec![step(&fake, &[(0, None, None)])]);
    a.apply(&testing::log()).unwrap();
    a.undo_all(&testing::log()).unwrap();
    assert_eq!(numvfs(&fake), "0");
    // Not guessed at: an empty record would lose the count to set back.
    std::fs::write(records.join(PF), "{\"original_numvfs\": 2, \"us").unwrap();
    let error = a.apply(&testing::log()).unwrap_err().to_string();
    assert!(
        error.contains(&format!("{}", records.join(PF).display()))
            && error.contains("the VMs using the PF's VFs and sriov_numvfs from before")
            && error.contains("remove the file when no VM uses the PF's VFs"),
        "{error}"
    );
    a.undo_all(&testing::log()).unwrap_err();
    assert_eq!(numvfs(&fake), "0", "nothing changed");
}
