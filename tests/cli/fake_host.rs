//! A fake host for the host-layer tests: a sysfs/proc tree in a temp dir built from a fixture,
//! a fake kernel that answers writes the way the kernel does, and stub `systemctl`/`modprobe`
//! on PATH that record their calls. Nothing here touches the real /sys.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::repo_root;

pub struct FakeHost {
    _dir: crate::common::TestDir,
    pub root: PathBuf,
    pub bin: PathBuf,
    kernel: Option<FakeKernel>,
}

#[derive(Default)]
pub struct Options {
    pub boot_vga: Vec<&'static str>,
    pub no_reset: Vec<&'static str>,
    /// vtcon0 (dummy) and vtcon1 (fbcon) bound, efi-framebuffer.0 on efi-framebuffer.
    pub console: bool,
    /// Modules loaded besides the drivers' own (e.g. nvidia_drm).
    pub extra_modules: Vec<&'static str>,
    pub services: Vec<(&'static str, bool)>,
    /// (total, free) 2 MiB pages.
    pub hugepages_2m: (u32, u32),
    /// Processes in the fake /proc (holders of device nodes), with `/etc/passwd` naming uid 0
    /// `root` and 1000 `alice`.
    pub processes: Vec<FakeProcess>,
    /// A CPU topology fixture (tests/fixtures/topology), with what isolation touches: IRQ
    /// affinities, the workqueue cpumask, cgroup v2 with cpuset, cpufreq governors.
    pub topology: Option<&'static str>,
    /// `MemTotal` in /proc/meminfo, in GiB (no /proc/meminfo without it).
    pub memory_gib: Option<u64>,
    /// SR-IOV physical functions: (address, interface). Each gets 7 VFs at most (offset 0x80,
    /// stride 2, as Intel's 82576), none made, autoprobe on, its VFs' driver `igbvf` loaded;
    /// the fake kernel makes and removes VFs when `sriov_numvfs` is written.
    pub sriov: Vec<(&'static str, &'static str)>,
}

impl Options {
    /// The Intel host as a single-GPU desktop: its NVIDIA card is the boot GPU under fbcon
    /// and efifb, the nvidia modules are loaded and a display manager runs.
    pub fn single_gpu_desktop() -> Self {
        Options {
            boot_vga: vec!["0000:01:00.0"],
            console: true,
            extra_modules: vec!["nvidia_drm", "nvidia_modeset", "nvidia_uvm"],
            services: vec![("display-manager.service", true)],
            ..Options::default()
        }
    }
}

/// A process as /proc shows it: `comm`, its real uid (`status`), its cgroup v2 path (`cgroup`,
/// which names its systemd unit) and the paths its descriptors point at (`fd/N` links).
pub struct FakeProcess {
    pub pid: u32,
    pub comm: &'static str,
    pub uid: u32,
    pub cgroup: &'static str,
    pub fds: Vec<&'static str>,
}

impl FakeProcess {
    pub fn new(
        pid: u32,
        comm: &'static str,
        uid: u32,
        cgroup: &'static str,
        fds: &[&'static str],
    ) -> Self {
        FakeProcess {
            pid,
            comm,
            uid,
            cgroup,
            fds: fds.to_vec(),
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn symlink(target: &str, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

pub fn module_of(driver: &str) -> String {
    driver.replace('-', "_")
}

impl FakeHost {
    pub fn new(fixture: &str, options: Options) -> Self {
        let dir = crate::common::tempdir();
        let root = dir.path().join("root");
        let bin = dir.path().join("bin");
        let text = std::fs::read_to_string(repo_root().join("tests/fixtures/hosts").join(fixture))
            .unwrap();
        // DRM nodes of the GPUs a host driver has, and the NVIDIA driver's minor of each of its
        // GPUs, as the kernel and the driver show them.
        let (mut drm, mut nvidia) = (0, 0);
        let mut modules: Vec<String> = options
            .extra_modules
            .iter()
            .map(|m| m.to_string())
            .collect();
        write(&root.join("sys/bus/pci/drivers_probe"), "");
        write(&root.join("sys/bus/pci/rescan"), "");
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let fields: Vec<&str> = line.split('\t').collect();
            let (group, address, class, vendor, device, driver) = (
                fields[0], fields[1], fields[2], fields[3], fields[4], fields[5],
            );
            let dev = root.join("sys/bus/pci/devices").join(address);
            write(&dev.join("vendor"), &format!("{vendor}\n"));
            write(&dev.join("device"), &format!("{device}\n"));
            write(&dev.join("class"), &format!("{class}\n"));
            write(&dev.join("driver_override"), "(null)\n");
            write(&dev.join("rom"), "");
            write(&dev.join("remove"), "");
            // Its config space as the kernel reads it live: the ids, and an MSI capability
            // (a function without one draws a warning). Kept aside so a test can make the
            // function stop answering and answer again.
            let space = config_space(vendor, device);
            std::fs::write(dev.join("config"), &space).unwrap();
            write(&root.join(".fake/config").join(address), "");
            std::fs::write(root.join(".fake/config").join(address), &space).unwrap();
            let bridge = class.starts_with("0x06");
            // What a current kernel shows: powered, runtime PM on its default, D3cold allowed.
            write(&dev.join("power_state"), "D0\n");
            write(&dev.join("power/control"), "auto\n");
            write(&dev.join("d3cold_allowed"), "1\n");
            if !bridge && !options.no_reset.contains(&address) {
                write(&dev.join("reset"), "");
            }
            if class.starts_with("0x03") && !["-", "vfio-pci", "pci-stub"].contains(&driver) {
                for name in [format!("card{drm}"), format!("renderD{}", 128 + drm)] {
                    std::fs::create_dir_all(dev.join("drm").join(name)).unwrap();
                }
                drm += 1;
                if driver == "nvidia" {
                    write(
                        &root.join(format!("proc/driver/nvidia/gpus/{address}/information")),
                        &format!("Model: \t\t NVIDIA GPU\nDevice Minor: \t {nvidia}\n"),
                    );
                    nvidia += 1;
                }
            }
            if class.starts_with("0x0300") {
                write(
                    &dev.join("boot_vga"),
                    if options.boot_vga.contains(&address) {
                        "1\n"
                    } else {
                        "0\n"
                    },
                );
            }
            symlink(
                &format!("../../../../kernel/iommu_groups/{group}"),
                &dev.join("iommu_group"),
            );
            symlink(
                &format!("../../../../../bus/pci/devices/{address}"),
                &root.join(format!("sys/kernel/iommu_groups/{group}/devices/{address}")),
            );
            if driver != "-" {
                write(&root.join(".fake/native").join(address), driver);
                Self::add_driver_dir(&root, driver);
                symlink(&format!("../../drivers/{driver}"), &dev.join("driver"));
                symlink(
                    &format!("../../devices/{address}"),
                    &root.join("sys/bus/pci/drivers").join(driver).join(address),
                );
                if driver != "pcieport" && !modules.contains(&module_of(driver)) {
                    modules.push(module_of(driver));
                }
            }
        }
        std::fs::create_dir_all(root.join("dev/vfio")).unwrap();
        if let Ok(list) = std::fs::read_dir(root.join("sys/bus/pci/devices")) {
            for entry in list.filter_map(Result::ok) {
                sync_vfio_node(&root, &entry.file_name().to_string_lossy());
            }
        }
        for driver in [
            "vfio-pci",
            "nvidia",
            "snd_hda_intel",
            "amdgpu",
            "bochs-drm",
            "e1000e",
        ] {
            write(
                &root.join(".fake/driver-of").join(module_of(driver)),
                driver,
            );
        }
        write(
            &root.join("proc/modules"),
            &modules.iter().map(|m| format!("{m}\n")).collect::<String>(),
        );
        if options.console {
            for (name, label) in [
                ("vtcon0", "(S) dummy device"),
                ("vtcon1", "(M) frame buffer device"),
            ] {
                write(
                    &root.join("sys/class/vtconsole").join(name).join("bind"),
                    "1\n",
                );
                write(
                    &root.join("sys/class/vtconsole").join(name).join("name"),
                    &format!("{label}\n"),
                );
            }
            let fb = root.join("sys/bus/platform/drivers/efi-framebuffer");
            write(&fb.join("bind"), "");
            write(&fb.join("unbind"), "");
            symlink(
                "../../../devices/efi-framebuffer.0",
                &fb.join("efi-framebuffer.0"),
            );
            std::fs::create_dir_all(root.join("sys/bus/platform/devices/efi-framebuffer.0"))
                .unwrap();
            symlink(
                "../../drivers/efi-framebuffer",
                &root.join("sys/bus/platform/devices/efi-framebuffer.0/driver"),
            );
        }
        for (unit, active) in &options.services {
            write(
                &root.join(".fake/services").join(unit),
                if *active { "active\n" } else { "inactive\n" },
            );
        }
        let pages = root.join("sys/kernel/mm/hugepages/hugepages-2048kB");
        write(
            &pages.join("nr_hugepages"),
            &format!("{}\n", options.hugepages_2m.0),
        );
        write(
            &pages.join("free_hugepages"),
            &format!("{}\n", options.hugepages_2m.1),
        );
        write(&root.join("proc/sys/vm/compact_memory"), "");
        write(
            &root.join("sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"),
            "0\n",
        );
        write(
            &root.join("sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages"),
            "0\n",
        );
        if !options.processes.is_empty() {
            write(
                &root.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            );
        }
        for process in &options.processes {
            let dir = root.join(format!("proc/{}", process.pid));
            write(&dir.join("comm"), &format!("{}\n", process.comm));
            let uid = process.uid;
            write(
                &dir.join("status"),
                &format!(
                    "Name:\t{}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n",
                    process.comm
                ),
            );
            write(&dir.join("cgroup"), &format!("0::{}\n", process.cgroup));
            for (index, target) in process.fds.iter().enumerate() {
                symlink(target, &dir.join(format!("fd/{}", index + 3)));
            }
        }
        if let Some(fixture) = options.topology {
            crate::fake_topology::write_topology(&root, fixture);
            let online =
                std::fs::read_to_string(root.join("sys/devices/system/cpu/online")).unwrap();
            let all: vmrun::model::CpuSet = online.trim().parse().unwrap();
            for irq in [0, 1, 8, 9, 16, 24, 120] {
                write(
                    &root.join(format!("proc/irq/{irq}/smp_affinity_list")),
                    &format!("{all}\n"),
                );
            }
            write(
                &root.join("proc/irq/default_smp_affinity"),
                &format!("{}\n", all.to_mask_string()),
            );
            write(
                &root.join("sys/devices/virtual/workqueue/cpumask"),
                &format!("{}\n", all.to_mask_string()),
            );
            write(
                &root.join("sys/fs/cgroup/cgroup.controllers"),
                "cpuset cpu io memory hugetlb pids rdma misc\n",
            );
            std::fs::create_dir_all(root.join(".fake/properties")).unwrap();
        }
        if let Some(gib) = options.memory_gib {
            write(
                &root.join("proc/meminfo"),
                &format!(
                    "MemTotal:       {} kB\nMemFree:        {} kB\n",
                    gib * 1024 * 1024,
                    gib * 512 * 1024
                ),
            );
        }
        for (pf, interface) in &options.sriov {
            let dev = root.join("sys/bus/pci/devices").join(pf);
            for (name, value) in [
                ("sriov_totalvfs", "7"),
                ("sriov_numvfs", "0"),
                ("sriov_offset", "128"),
                ("sriov_stride", "2"),
                ("sriov_drivers_autoprobe", "1"),
            ] {
                write(&dev.join(name), &format!("{value}\n"));
            }
            std::fs::create_dir_all(dev.join("net").join(interface)).unwrap();
            std::fs::create_dir_all(root.join("sys/class/net").join(interface)).unwrap();
            Self::add_driver_dir(&root, "igbvf");
        }
        // The PCI ID database, as Debian's `pci.ids` package installs it.
        write(
            &root.join("usr/share/misc/pci.ids"),
            &std::fs::read_to_string(repo_root().join("tests/fixtures/hosts/pci.ids")).unwrap(),
        );
        write(&root.join(".fake/calls.log"), "");
        std::fs::create_dir_all(root.join("dev/shm")).unwrap();
        // The system bus the sleep inhibitor needs: only its presence is checked.
        write(&root.join("run/dbus/system_bus_socket"), "");
        // Where the (fake) kernel puts the IOMMU groups' nodes.
        std::fs::create_dir_all(root.join("dev/vfio")).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        for (name, script) in [
            ("systemctl", SYSTEMCTL),
            ("modprobe", MODPROBE),
            ("systemd-inhibit", SYSTEMD_INHIBIT),
            ("ip", IP),
        ] {
            std::fs::write(bin.join(name), script).unwrap();
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        FakeHost {
            _dir: dir,
            root,
            bin,
            kernel: None,
        }
    }

    fn add_driver_dir(root: &Path, driver: &str) {
        let dir = root.join("sys/bus/pci/drivers").join(driver);
        for attribute in ["bind", "unbind", "new_id", "remove_id"] {
            if !dir.join(attribute).exists() {
                write(&dir.join(attribute), "");
            }
        }
    }

    /// An Intel iGPU at `parent` offering mediated devices (GVT-g with kvmgt loaded): each
    /// type `(directory, name, available_instances)` with its `create`. The fake kernel makes
    /// a device of a UUID written there, with an IOMMU group of its own and its /dev/vfio node,
    /// and removes it on a write to its `remove`.
    pub fn add_mdev_parent(&self, parent: &str, types: &[(&str, &str, u32)]) {
        let pci = self.root.join("sys/bus/pci/devices").join(parent);
        for (attribute, value) in [
            ("vendor", "0x8086"),
            ("device", "0x3e98"),
            ("class", "0x030000"),
        ] {
            if !pci.join(attribute).exists() {
                write(&pci.join(attribute), &format!("{value}\n"));
            }
        }
        std::fs::create_dir_all(self.root.join(".fake")).unwrap();
        let supported = self
            .root
            .join("sys/class/mdev_bus")
            .join(parent)
            .join("mdev_supported_types");
        for (id, name, available) in types {
            let dir = supported.join(id);
            write(&dir.join("name"), &format!("{name}\n"));
            write(&dir.join("available_instances"), &format!("{available}\n"));
            write(&dir.join("device_api"), "vfio-pci\n");
            write(
                &dir.join("description"),
                "low_gm_size: 128MB\nhigh_gm_size: 512MB\nfence: 4\nresolution: 1920x1200\n",
            );
            write(&dir.join("create"), "");
        }
    }

    /// The mediated devices that exist now, by UUID.
    pub fn mdevs(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(self.root.join("sys/bus/mdev/devices"))
            .into_iter()
            .flatten()
            .filter_map(|entry| Some(entry.ok()?.file_name().to_string_lossy().into_owned()))
            .filter(|name| !name.starts_with('.'))
            .collect();
        found.sort();
        found
    }

    /// Starts the fake kernel; it stops when the host is dropped.
    pub fn with_kernel(mut self) -> Self {
        self.kernel = Some(FakeKernel::start(self.root.clone()));
        self
    }

    pub fn refuse_vfio(&self, address: &str) {
        self.kernel
            .as_ref()
            .unwrap()
            .refuse
            .lock()
            .unwrap()
            .push(address.to_string());
    }

    /// Makes `modprobe -r module` fail `times` times with "in use".
    pub fn module_busy(&self, module: &str, times: u32) {
        write(
            &self.root.join(".fake/inuse").join(module),
            &format!("{times}\n"),
        );
    }

    /// The real `vmrun` run against this host: its root, its stub programs first on PATH, and
    /// the VM's state and runtime directories under `dir`.
    pub fn vmrun(&self, dir: &std::path::Path) -> std::process::Command {
        let mut command = crate::common::vmrun(&crate::common::repo_root());
        command
            .env("VMRUN_SYSROOT", &self.root)
            .env("PATH", self.path_env())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--runtime-dir")
            .arg(dir.join("run"));
        command
    }

    /// PATH with the stubs first.
    pub fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The function stops answering: its config space reads all ones, as a function that
    /// fell off the bus (or cannot leave D3cold) reads. With `until_removed`, the fake kernel
    /// brings it back to life when it is removed, so a remove + rescan finds it answering.
    pub fn kill_device(&self, address: &str, until_removed: bool) {
        std::fs::write(
            self.root
                .join("sys/bus/pci/devices")
                .join(address)
                .join("config"),
            vec![0xffu8; 256],
        )
        .unwrap();
        if until_removed {
            write(
                &self.root.join(format!(".fake/revive-on-remove-{address}")),
                "",
            );
        }
    }

    /// The function answers again (what a suspend and resume may do): its config space reads
    /// its ids, on the bus or, when it was removed, where the kernel keeps it until a rescan.
    pub fn revive_device(&self, address: &str) {
        let space = std::fs::read(self.root.join(".fake/config").join(address)).unwrap();
        let on_bus = self.root.join("sys/bus/pci/devices").join(address);
        let dir = if on_bus.is_dir() {
            on_bus
        } else {
            self.root.join(".fake/removed").join(address)
        };
        std::fs::write(dir.join("config"), space).unwrap();
    }

    /// What the fake kernel did with `remove` and `rescan` writes, in order.
    pub fn kernel_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join(".fake/kernel.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join(".fake/calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn driver(&self, address: &str) -> Option<String> {
        std::fs::read_link(
            self.root
                .join("sys/bus/pci/devices")
                .join(address)
                .join("driver"),
        )
        .ok()
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
    }

    /// `uid:gid mode` of a file under the root, None when it does not exist.
    pub fn owner(&self, path: &str) -> Option<(u32, u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.root.join(path))
            .ok()
            .map(|m| (m.uid(), m.gid(), m.mode() & 0o7777))
    }

    /// A fake evdev node (a character device like /dev/null's, never opened) with a by-id
    /// link to it, root's with mode 0660 as udev leaves them: returns the link's host path.
    pub fn add_evdev(&self, event: &str, by_id: &str) -> String {
        let node = self.root.join("dev/input").join(event);
        std::fs::create_dir_all(self.root.join("dev/input/by-id")).unwrap();
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o660),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o660)).unwrap();
        symlink(
            &format!("../{event}"),
            &self.root.join("dev/input/by-id").join(by_id),
        );
        format!("/dev/input/by-id/{by_id}")
    }

    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root.join(path))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Everything a host change could touch: files (trimmed; /proc/modules as a set), links
    /// and directories. The call log is not state.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            for (key, path) in entries_by_key(base, dir) {
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.file_type().is_symlink() {
                    out.insert(
                        key,
                        format!("-> {}", std::fs::read_link(&path).unwrap().display()),
                    );
                } else if key == ".fake/removed" {
                    // The fake kernel's parking place for removed devices: test state.
                    continue;
                } else if meta.is_dir() {
                    out.insert(key.clone(), "dir".into());
                    walk(base, &path, out);
                } else if ![".fake/calls.log", ".fake/modules.tmp", ".fake/kernel.log"]
                    .contains(&key.as_str())
                {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let value = if key.ends_with("/driver_override") && text.trim().is_empty() {
                        // The kernel shows a cleared override as "(null)".
                        "(null)".to_string()
                    } else if key == "proc/modules" {
                        let mut lines: Vec<&str> = text.lines().collect();
                        lines.sort();
                        lines.join(",")
                    } else if key.starts_with("dev/") {
                        // Device nodes: who owns them matters, not what they hold.
                        use std::os::unix::fs::MetadataExt;
                        format!("{}:{} {:04o}", meta.uid(), meta.gid(), meta.mode() & 0o7777)
                    } else {
                        text.trim().to_string()
                    };
                    out.insert(key, value);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out
    }
}

/// The entries of `dir` in name order, each with its path relative to `base` as its key: the
/// walk both tree snapshots (this one and crash_undo's byte-exact one) make.
pub fn entries_by_key(base: &Path, dir: &Path) -> Vec<(String, PathBuf)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .map(|path| {
            let key = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (key, path)
        })
        .collect()
}

/// Differences between two snapshots, for assertion messages.
pub fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, value) in before {
        match after.get(key) {
            None => lines.push(format!("- {key} = {value}")),
            Some(other) if other != value => lines.push(format!("~ {key}: {value} -> {other}")),
            _ => {}
        }
    }
    for (key, value) in after {
        if !before.contains_key(key) {
            lines.push(format!("+ {key} = {value}"));
        }
    }
    lines
}

/// The kernel's side of sysfs writes, polled every 2 ms.
struct FakeKernel {
    stop: Arc<AtomicBool>,
    refuse: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl FakeKernel {
    fn start(root: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(Mutex::new(Vec::new()));
        let (stop2, refuse2) = (stop.clone(), refuse.clone());
        let handle = std::thread::spawn(move || {
            let mut pages: HashMap<PathBuf, i64> = HashMap::new();
            while !stop2.load(Ordering::Relaxed) {
                tick(&root, &refuse2.lock().unwrap().clone(), &mut pages);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        FakeKernel {
            stop,
            refuse,
            handle: Some(handle),
        }
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn take(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return None;
    }
    std::fs::write(path, "").ok()?;
    Some(text)
}

fn link_name(path: &Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
}

fn pci_bind(root: &Path, address: &str, driver: &str, refuse: &[String]) {
    let dev = root.join("sys/bus/pci/devices").join(address);
    let drivers = root.join("sys/bus/pci/drivers");
    if !dev.is_dir()
        || dev.join("driver").symlink_metadata().is_ok()
        || !drivers.join(driver).is_dir()
    {
        return;
    }
    if driver == "vfio-pci" && refuse.iter().any(|a| a == address) {
        return;
    }
    let _ = std::os::unix::fs::symlink(format!("../../drivers/{driver}"), dev.join("driver"));
    let _ = std::os::unix::fs::symlink(
        format!("../../devices/{address}"),
        drivers.join(driver).join(address),
    );
    sync_vfio_node(root, address);
}

/// `/dev/vfio/<group>` as the kernel keeps it: created (root's, 0600) when the first device of
/// the group binds to vfio-pci, removed when the last one leaves it.
fn sync_vfio_node(root: &Path, address: &str) {
    let dev = root.join("sys/bus/pci/devices").join(address);
    let Some(group) = link_name(&dev.join("iommu_group")) else {
        return;
    };
    let members = root
        .join("sys/kernel/iommu_groups")
        .join(&group)
        .join("devices");
    let on_vfio = std::fs::read_dir(&members)
        .into_iter()
        .flatten()
        .any(|member| {
            member.ok().is_some_and(|m| {
                link_name(
                    &root
                        .join("sys/bus/pci/devices")
                        .join(m.file_name())
                        .join("driver"),
                )
                .as_deref()
                    == Some("vfio-pci")
            })
        });
    let node = root.join("dev/vfio").join(&group);
    if on_vfio && !node.exists() {
        std::fs::write(&node, "").unwrap();
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o600)).unwrap();
    } else if !on_vfio && node.exists() {
        let _ = std::fs::remove_file(&node);
    }
}

/// Which driver a probe of `address` picks: driver_override, else the device's own driver.
fn probe_target(root: &Path, address: &str) -> Option<String> {
    let dev = root.join("sys/bus/pci/devices").join(address);
    let forced = std::fs::read_to_string(dev.join("driver_override"))
        .unwrap_or_default()
        .trim()
        .to_string();
    if !forced.is_empty() && forced != "(null)" {
        return Some(forced);
    }
    std::fs::read_to_string(root.join(".fake/native").join(address)).ok()
}

/// 256 bytes of config space: vendor and device ids (`0x10de`), the capability list bit and
/// an MSI capability at 0x40.
fn config_space(vendor: &str, device: &str) -> Vec<u8> {
    let id = |text: &str| u16::from_str_radix(text.trim_start_matches("0x"), 16).unwrap();
    let mut space = vec![0u8; 256];
    space[..2].copy_from_slice(&id(vendor).to_le_bytes());
    space[2..4].copy_from_slice(&id(device).to_le_bytes());
    space[0x06] = 0x10;
    space[0x34] = 0x40;
    space[0x40] = 0x05;
    space
}

/// `remove`: the device leaves its driver and disappears (kept aside in `.fake/removed`);
/// `rescan`: every removed device whose vendor ID answers comes back as a new device (no
/// driver_override, in D0) and its own driver probes it; one that reads all ones is not
/// added, as the kernel's enumeration skips it. Both are logged in `.fake/kernel.log`.
fn pci_remove_and_rescan(root: &Path, refuse: &[String]) {
    let devices = root.join("sys/bus/pci/devices");
    let removed = root.join(".fake/removed");
    let log = |line: String| {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join(".fake/kernel.log"))
            .unwrap();
        writeln!(file, "{line}").unwrap();
    };
    if let Ok(list) = std::fs::read_dir(&devices) {
        for entry in list.filter_map(Result::ok) {
            if take(&entry.path().join("remove")).is_none() {
                continue;
            }
            let address = entry.file_name().to_string_lossy().into_owned();
            if let Some(driver) = link_name(&entry.path().join("driver")) {
                let _ = std::fs::remove_file(entry.path().join("driver"));
                let _ = std::fs::remove_file(
                    root.join("sys/bus/pci/drivers").join(driver).join(&address),
                );
                sync_vfio_node(root, &address);
            }
            std::fs::create_dir_all(&removed).unwrap();
            std::fs::rename(entry.path(), removed.join(&address)).unwrap();
            log(format!("remove {address}"));
            let revive = root.join(format!(".fake/revive-on-remove-{address}"));
            if revive.exists() {
                let space = std::fs::read(root.join(".fake/config").join(&address)).unwrap();
                std::fs::write(removed.join(&address).join("config"), space).unwrap();
                let _ = std::fs::remove_file(revive);
            }
        }
    }
    if take(&root.join("sys/bus/pci/rescan")).is_some() {
        log("rescan".to_string());
        if let Ok(list) = std::fs::read_dir(&removed) {
            for entry in list.filter_map(Result::ok) {
                let address = entry.file_name().to_string_lossy().into_owned();
                let answers = std::fs::read(entry.path().join("config"))
                    .map(|space| space.len() < 2 || space[..2] != [0xff, 0xff])
                    .unwrap_or(true);
                if !answers {
                    log(format!("rescan: {address} does not answer, not added"));
                    continue;
                }
                // Set up before it shows: the kernel's rescan returns only once the function is
                // added and probed, so a writer that sees it never races the probe.
                std::fs::write(entry.path().join("driver_override"), "(null)\n").unwrap();
                if entry.path().join("power_state").exists() {
                    std::fs::write(entry.path().join("power_state"), "D0\n").unwrap();
                }
                let driver = std::fs::read_to_string(root.join(".fake/native").join(&address)).ok();
                std::fs::rename(entry.path(), devices.join(&address)).unwrap();
                if let Some(driver) = driver {
                    pci_bind(root, &address, &driver, refuse);
                }
            }
        }
    }
}

/// The VFs (`virtfnN` links) of `pf`, by number. The same walk as `vmrun::host::sriov::virtfns`
/// on purpose: this is the fake kernel, which must not lean on the code under test (a mistake
/// there would then agree with itself and no test would see it).
fn virtfns(pf: &Path) -> Vec<(u32, String)> {
    let mut vfs: Vec<(u32, String)> = std::fs::read_dir(pf)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let index = entry
                .file_name()
                .to_str()?
                .strip_prefix("virtfn")?
                .parse()
                .ok()?;
            Some((index, link_name(&entry.path())?))
        })
        .collect();
    vfs.sort();
    vfs
}

/// `sriov_numvfs` as the kernel answers it: the PF's VFs are removed and that many made, each
/// a device with `physfn`, its own IOMMU group (100 + N) and `virtfnN` in the PF, probed by
/// `igbvf` unless the PF's `sriov_drivers_autoprobe` is 0. A change between two non-zero
/// counts is refused (the kernel says EBUSY): the value goes back and kernel.log says so.
fn sriov_numvfs(root: &Path, refuse: &[String]) {
    let devices = root.join("sys/bus/pci/devices");
    let Ok(list) = std::fs::read_dir(&devices) else {
        return;
    };
    for entry in list.filter_map(Result::ok) {
        let pf = entry.path();
        // Empty while a writer is between truncate and write: not a value yet.
        let Some(wanted) = std::fs::read_to_string(pf.join("sriov_numvfs"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let existing = virtfns(&pf);
        let now = existing.len() as u32;
        if wanted == now {
            continue;
        }
        let pf_name = entry.file_name().to_string_lossy().into_owned();
        if now != 0 && wanted != 0 {
            std::fs::write(pf.join("sriov_numvfs"), format!("{now}\n")).unwrap();
            append_kernel_log(
                root,
                &format!("sriov_numvfs {pf_name} {now} -> {wanted} refused"),
            );
            continue;
        }
        for (index, vf) in existing {
            let dir = devices.join(&vf);
            if let Some(driver) = link_name(&dir.join("driver")) {
                let _ = std::fs::remove_file(dir.join("driver"));
                let _ =
                    std::fs::remove_file(root.join("sys/bus/pci/drivers").join(driver).join(&vf));
            }
            let _ = std::fs::remove_dir_all(&dir);
            // Its group goes with it, and the group's node.
            let _ = std::fs::remove_dir_all(
                root.join(format!("sys/kernel/iommu_groups/{}", 100 + index)),
            );
            let _ = std::fs::remove_file(root.join(format!("dev/vfio/{}", 100 + index)));
            let _ = std::fs::remove_file(pf.join(format!("virtfn{index}")));
            let _ = std::fs::remove_file(root.join(".fake/native").join(&vf));
        }
        let probe = std::fs::read_to_string(pf.join("sriov_drivers_autoprobe"))
            .map_or(true, |v| v.trim() != "0");
        let address: vmrun::model::PciAddress = pf_name.parse().unwrap();
        let pf_id = (u32::from(address.bus) << 8)
            | (u32::from(address.slot) << 3)
            | u32::from(address.function);
        for index in 0..wanted {
            let id = pf_id + 0x80 + 2 * index;
            let vf = format!(
                "{:04x}:{:02x}:{:02x}.{:x}",
                address.domain,
                id >> 8,
                (id >> 3) & 0x1f,
                id & 7
            );
            let dir = devices.join(&vf);
            for (name, value) in [
                ("vendor", "0x8086"),
                ("device", "0x10ca"),
                ("class", "0x020000"),
                ("driver_override", "(null)"),
                ("power_state", "D0"),
                ("power/control", "auto"),
                ("d3cold_allowed", "1"),
                ("reset", ""),
                ("remove", ""),
            ] {
                write(&dir.join(name), &format!("{value}\n"));
            }
            let group = 100 + index;
            symlink(
                &format!("../../../../kernel/iommu_groups/{group}"),
                &dir.join("iommu_group"),
            );
            symlink(
                &format!("../../../../../bus/pci/devices/{vf}"),
                &root.join(format!("sys/kernel/iommu_groups/{group}/devices/{vf}")),
            );
            symlink(&format!("../{pf_name}"), &dir.join("physfn"));
            symlink(&format!("../{vf}"), &pf.join(format!("virtfn{index}")));
            write(&root.join(".fake/native").join(&vf), "igbvf");
            if probe {
                pci_bind(root, &vf, "igbvf", refuse);
            }
        }
        append_kernel_log(root, &format!("sriov_numvfs {pf_name} {now} -> {wanted}"));
    }
}

fn read_count(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Replaces `path` at once (a temporary file renamed over it), so that a reader never sees it
/// half written or with another mode, as with a kernel attribute or a devtmpfs node.
fn replace_file(path: &Path, text: &str, mode: u32) {
    let temporary = path.with_extension("fake-tmp");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&temporary, text).unwrap();
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Mediated devices as the kernel's mdev core makes them: a UUID written to a type's `create`
/// becomes `/sys/bus/mdev/devices/UUID` (its `mdev_type` and `iommu_group` links, `remove`)
/// with `/dev/vfio/N` (root's, 0600) while the type has an instance left; a 1 written to its
/// `remove` takes it all away and gives the instance back.
fn mdev_create_and_remove(root: &Path) {
    let devices = root.join("sys/bus/mdev/devices");
    if let Ok(parents) = std::fs::read_dir(root.join("sys/class/mdev_bus")) {
        for parent in parents.filter_map(Result::ok) {
            let types = parent.path().join("mdev_supported_types");
            for kind in std::fs::read_dir(&types)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
            {
                let Some(uuid) = take(&kind.path().join("create")) else {
                    continue;
                };
                let available = read_count(&kind.path().join("available_instances"));
                let dev = devices.join(&uuid);
                if available < 1 || dev.exists() {
                    append_kernel_log(root, &format!("mdev create {uuid} refused"));
                    continue;
                }
                // The instance is taken at once; the device appears whole (its directory with
                // `remove` and `mdev_type`), and only then does its vfio driver give it an
                // IOMMU group and a /dev/vfio node, as with the real mdev core.
                replace_file(
                    &kind.path().join("available_instances"),
                    &format!("{}\n", available - 1),
                    0o644,
                );
                let group = (100..)
                    .find(|n| !root.join(format!("sys/kernel/iommu_groups/{n}")).exists())
                    .unwrap();
                let _ = std::fs::create_dir_all(
                    root.join(format!("sys/kernel/iommu_groups/{group}/devices")),
                );
                let building = devices.join(format!(".{uuid}"));
                write(&building.join("remove"), "");
                symlink(
                    &format!(
                        "../../../../class/mdev_bus/{}/mdev_supported_types/{}",
                        parent.file_name().to_string_lossy(),
                        kind.file_name().to_string_lossy()
                    ),
                    &building.join("mdev_type"),
                );
                if std::fs::rename(&building, &dev).is_err() {
                    return; // the tree is going away with its test
                }
                symlink(
                    &format!("../../../../kernel/iommu_groups/{group}"),
                    &dev.join("iommu_group"),
                );
                replace_file(&root.join(format!("dev/vfio/{group}")), "", 0o600);
                append_kernel_log(root, &format!("mdev create {uuid}"));
            }
        }
    }
    for dev in std::fs::read_dir(&devices)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        if take(&dev.path().join("remove")).as_deref() != Some("1") {
            continue;
        }
        let uuid = dev.file_name().to_string_lossy().into_owned();
        if let Some(group) = link_name(&dev.path().join("iommu_group")) {
            let _ = std::fs::remove_file(root.join("dev/vfio").join(&group));
            let _ = std::fs::remove_dir_all(root.join("sys/kernel/iommu_groups").join(&group));
        }
        if let Ok(kind) = std::fs::canonicalize(dev.path().join("mdev_type")) {
            let count = kind.join("available_instances");
            replace_file(&count, &format!("{}\n", read_count(&count) + 1), 0o644);
        }
        if std::fs::remove_dir_all(dev.path()).is_err() {
            return; // the tree is going away with its test
        }
        if std::fs::read_dir(&devices)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
        {
            // The bus directory is the mdev core's; the fixture has none before.
            let _ = std::fs::remove_dir(&devices);
            let _ = std::fs::remove_dir(devices.parent().unwrap());
            let _ = std::fs::remove_dir(devices.parent().unwrap().parent().unwrap());
        }
        append_kernel_log(root, &format!("mdev remove {uuid}"));
    }
}

/// A hugepage pool directory, read like a `DirEntry`.
struct Pool(PathBuf);

impl Pool {
    fn path(&self) -> PathBuf {
        self.0.clone()
    }
}

fn append_kernel_log(root: &Path, line: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join(".fake/kernel.log"))
        .unwrap();
    writeln!(file, "{line}").unwrap();
}

fn tick(root: &Path, refuse: &[String], pages: &mut HashMap<PathBuf, i64>) {
    mdev_create_and_remove(root);
    let drivers = root.join("sys/bus/pci/drivers");
    if let Ok(list) = std::fs::read_dir(&drivers) {
        for entry in list.filter_map(Result::ok) {
            let driver = entry.file_name().to_string_lossy().into_owned();
            if let Some(address) = take(&entry.path().join("unbind")) {
                let dev = root.join("sys/bus/pci/devices").join(&address);
                if link_name(&dev.join("driver")).as_deref() == Some(driver.as_str()) {
                    let _ = std::fs::remove_file(dev.join("driver"));
                    let _ = std::fs::remove_file(entry.path().join(&address));
                    sync_vfio_node(root, &address);
                }
            }
            if let Some(address) = take(&entry.path().join("bind")) {
                if probe_target(root, &address).as_deref() == Some(driver.as_str()) {
                    pci_bind(root, &address, &driver, refuse);
                }
            }
        }
    }
    pci_remove_and_rescan(root, refuse);
    sriov_numvfs(root, refuse);
    if let Some(address) = take(&root.join("sys/bus/pci/drivers_probe")) {
        if let Some(target) = probe_target(root, &address) {
            pci_bind(root, &address, &target, refuse);
        }
    }
    let platform = root.join("sys/bus/platform/drivers");
    if let Ok(list) = std::fs::read_dir(&platform) {
        for entry in list.filter_map(Result::ok) {
            let driver = entry.file_name().to_string_lossy().into_owned();
            let devices = root.join("sys/bus/platform/devices");
            if let Some(device) = take(&entry.path().join("unbind")) {
                let _ = std::fs::remove_file(devices.join(&device).join("driver"));
                let _ = std::fs::remove_file(entry.path().join(&device));
            }
            if let Some(device) = take(&entry.path().join("bind")) {
                if devices.join(&device).is_dir()
                    && devices
                        .join(&device)
                        .join("driver")
                        .symlink_metadata()
                        .is_err()
                {
                    let _ = std::os::unix::fs::symlink(
                        format!("../../drivers/{driver}"),
                        devices.join(&device).join("driver"),
                    );
                    let _ = std::os::unix::fs::symlink(
                        format!("../../../devices/{device}"),
                        entry.path().join(&device),
                    );
                }
            }
        }
    }
    if take(&root.join("proc/sys/vm/compact_memory")).is_some() {
        let _ = std::fs::remove_file(root.join(".fake/fragmented"));
        append_kernel_log(root, "compact_memory");
    }
    // The global pools and each NUMA node's.
    let mut pools: Vec<PathBuf> = Vec::new();
    if let Ok(nodes) = std::fs::read_dir(root.join("sys/devices/system/node")) {
        for node in nodes.filter_map(Result::ok) {
            if let Ok(list) = std::fs::read_dir(node.path().join("hugepages")) {
                pools.extend(list.filter_map(Result::ok).map(|e| e.path()));
            }
        }
    }
    if let Ok(list) = std::fs::read_dir(root.join("sys/kernel/mm/hugepages")) {
        pools.extend(list.filter_map(Result::ok).map(|e| e.path()));
    }
    {
        for entry in pools.iter().map(|path| Pool(path.clone())) {
            let read = |name: &str| -> Option<i64> {
                std::fs::read_to_string(entry.path().join(name))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
            };
            // Empty while a writer is between truncate and write: not a value yet.
            let Some(total) = read("nr_hugepages") else {
                continue;
            };
            let last = *pages.entry(entry.path()).or_insert(total);
            if total != last {
                // Fragmented memory: a growing pool gets only half of what was asked, and
                // nr_hugepages reads back what it got, as the kernel does.
                let granted = if total > last && root.join(".fake/fragmented").exists() {
                    last + (total - last) / 2
                } else {
                    total
                };
                if granted != total {
                    let _ =
                        std::fs::write(entry.path().join("nr_hugepages"), format!("{granted}\n"));
                }
                let free = read("free_hugepages").unwrap_or(0) + granted - last;
                let _ = std::fs::write(entry.path().join("free_hugepages"), format!("{free}\n"));
                pages.insert(entry.path(), granted);
            }
        }
    }
}

const SYSTEMCTL: &str = r#"#!/bin/sh
# Stub systemctl: records the call; unit states live in $VMRUN_SYSROOT/.fake/services.
fake="$VMRUN_SYSROOT/.fake"
echo "systemctl $*" >> "$fake/calls.log"
action=$1; unit=$2
state=$(cat "$fake/services/$unit" 2>/dev/null || echo inactive)
case "$action" in
    show)
        # systemctl show --property AllowedCPUs --value UNIT
        for unit; do :; done
        cat "$fake/properties/$unit.AllowedCPUs" 2>/dev/null || echo ""
        ;;
    set-property)
        # systemctl set-property --runtime UNIT AllowedCPUs=LIST (empty: every CPU again)
        [ "$2" = --runtime ] || { echo "stub systemctl: only --runtime" >&2; exit 1; }
        value=${4#AllowedCPUs=}
        if [ -z "$value" ]; then rm -f "$fake/properties/$3.AllowedCPUs"; else echo "$value" > "$fake/properties/$3.AllowedCPUs"; fi
        ;;
    is-active) echo "$state"; [ "$state" = active ] ;;
    stop)
        echo inactive > "$fake/services/$unit"
        # The unit's processes (their cgroup ends in it) exit: kept aside to come back on start.
        for cgroup in "$VMRUN_SYSROOT"/proc/[0-9]*/cgroup; do
            [ -f "$cgroup" ] || continue
            case "$(cat "$cgroup")" in
                */"$unit") mkdir -p "$fake/stopped/$unit"; mv "$(dirname "$cgroup")" "$fake/stopped/$unit/" ;;
            esac
        done ;;
    start)
        echo active > "$fake/services/$unit"
        if [ -d "$fake/stopped/$unit" ]; then
            mv "$fake/stopped/$unit"/* "$VMRUN_SYSROOT/proc/" 2>/dev/null
            rmdir "$fake/stopped/$unit" "$fake/stopped" 2>/dev/null
        fi
        true ;;
    *) echo "stub systemctl: $action not supported" >&2; exit 1 ;;
esac
"#;

const SYSTEMD_INHIBIT: &str = r#"#!/bin/sh
# Stub systemd-inhibit: records the call and its pid, then runs the command (vmrun's `cat`)
# the way the real one holds the lock until its command exits.
echo "systemd-inhibit $* pid=$$" >> "$VMRUN_SYSROOT/.fake/calls.log"
while [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do shift; done
exec "$@"
"#;

/// The pid of the stub `systemd-inhibit` a run started, from the call log.
pub fn inhibitor_pid(calls: &[String]) -> Option<i32> {
    calls
        .iter()
        .find(|c| c.starts_with("systemd-inhibit "))
        .and_then(|c| c.rsplit_once("pid=")?.1.parse().ok())
}

const IP: &str = r#"#!/bin/sh
# Stub ip: records the call; interfaces are directories under $VMRUN_SYSROOT/sys/class/net.
net="$VMRUN_SYSROOT/sys/class/net"
echo "ip $*" >> "$VMRUN_SYSROOT/.fake/calls.log"
case "$1 $2" in
    "tuntap add") mkdir -p "$net/$4" ;;
    "link set")
        if [ "$3" = dev ] && [ "$5" = vf ]; then
            # ip link set dev PFIF vf N [mac M] [vlan V]: the PF's interface must exist.
            [ -d "$net/$4" ] || { echo "Cannot find device \"$4\"" >&2; exit 1; }
            exit 0
        fi
        [ -d "$net/$4" ] || { echo "Cannot find device \"$4\"" >&2; exit 1; }
        if [ "$5" = master ]; then
            [ -d "$net/$6/bridge" ] || { echo "$6 is not a bridge" >&2; exit 1; }
            echo "$6" > "$net/$4/master"
        else
            echo up > "$net/$4/operstate"
        fi ;;
    "link del") rm -rf "$net/$4" ;;
    *) echo "stub ip: $* not supported" >&2; exit 1 ;;
esac
"#;

const MODPROBE: &str = r#"#!/bin/sh
# Stub modprobe: records the call, keeps /proc/modules, and (un)binds the module's devices
# through the same sysfs files the fake kernel answers.
root="$VMRUN_SYSROOT"; fake="$root/.fake"; pci="$root/sys/bus/pci"
echo "modprobe $*" >> "$fake/calls.log"
wait_empty() { n=0; while [ -s "$1" ] && [ $n -lt 500 ]; do sleep 0.01; n=$((n+1)); done; }
remove=0
if [ "$1" = "-r" ]; then remove=1; shift; fi
for name in "$@"; do
    mod=$(echo "$name" | tr - _)
    drv=$(cat "$fake/driver-of/$mod" 2>/dev/null || echo "")
    if [ $remove = 1 ]; then
        if ! grep -qx "$mod" "$root/proc/modules"; then echo "modprobe: FATAL: Module $mod is not in kernel." >&2; exit 1; fi
        busy=$(cat "$fake/inuse/$mod" 2>/dev/null || echo 0)
        if [ "$busy" -gt 0 ]; then echo $((busy-1)) > "$fake/inuse/$mod"; echo "modprobe: FATAL: Module $mod is in use." >&2; exit 1; fi
        if [ -n "$drv" ] && [ -d "$pci/drivers/$drv" ]; then
            for link in "$pci/drivers/$drv"/0000:*; do
                [ -L "$link" ] || continue
                echo "$(basename "$link")" > "$pci/drivers/$drv/unbind"; wait_empty "$pci/drivers/$drv/unbind"
            done
            rm -rf "$pci/drivers/$drv"
        fi
        grep -vx "$mod" "$root/proc/modules" > "$fake/modules.tmp"; mv "$fake/modules.tmp" "$root/proc/modules"
    else
        grep -qx "$mod" "$root/proc/modules" && continue
        # Listed once its init (binding its devices) is done: the kernel finishes a module's
        # init even when modprobe is killed meanwhile, so a killed load is either not listed
        # or complete, never listed with its devices unbound.
        if [ -n "$drv" ]; then
            mkdir -p "$pci/drivers/$drv"
            for a in bind unbind new_id remove_id; do [ -e "$pci/drivers/$drv/$a" ] || : > "$pci/drivers/$drv/$a"; done
            for dev in "$pci/devices"/*; do
                [ -L "$dev/driver" ] && continue
                echo "$(basename "$dev")" > "$pci/drivers_probe"; wait_empty "$pci/drivers_probe"
            done
        fi
        echo "$mod" >> "$root/proc/modules"
    fi
done
exit 0
"#;
