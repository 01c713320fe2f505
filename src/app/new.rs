//! `vmrun new`: a first profile from the host's facts. The facts are read through the host
//! root (`NewFacts::read`); `compose` turns them into profile text and the list of what it
//! chose, without touching anything, so every choice is testable from plain data; `App::new_profile`
//! checks the text with the same parser, validator and `auto` resolution as every other profile
//! before it is written, never over an existing file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::host::pci::{self, PciDeviceInfo};
use crate::host::pci_ids::PciNames;
use crate::host::Sysroot;
use crate::model::{ByteSize, PciAddress};
use crate::plan::topology::{CoreKind, HostTopology};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    Windows11,
    Windows10,
    Linux,
}

impl Template {
    fn windows(self) -> bool {
        self != Template::Linux
    }
}

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct NewRequest {
    pub name: String,
    pub gpu: Option<PciAddress>,
    pub memory: Option<ByteSize>,
    pub template: Template,
    pub image: PathBuf,
}

/// What `new` needs to know about the host, all of it read through the host root.
#[derive(Debug, Default)]
pub struct NewFacts {
    /// Every PCI device, by address.
    pub devices: Vec<PciDeviceInfo>,
    /// IOMMU groups exist (the IOMMU is on).
    pub iommu: bool,
    /// `MemTotal` of /proc/meminfo.
    pub memory_total: Option<ByteSize>,
    /// The hugepage sizes the kernel offers (`/sys/kernel/mm/hugepages/hugepages-*`).
    pub hugepages_2m: bool,
    pub hugepages_1g: bool,
    pub topology: Option<HostTopology>,
    /// `/dev/kvm` exists.
    pub kvm: bool,
    /// /proc/modules, in order.
    pub modules: Vec<String>,
    pub names: PciNames,
}

impl NewFacts {
    pub fn read(root: &Sysroot) -> Self {
        let groups = pci::iommu_groups(root);
        let mut devices: Vec<PciDeviceInfo> = std::fs::read_dir(root.path("/sys/bus/pci/devices"))
            .map(|list| {
                list.filter_map(Result::ok)
                    .filter_map(|entry| {
                        pci::device_info(root, &entry.file_name().to_string_lossy())
                    })
                    .collect()
            })
            .unwrap_or_default();
        devices.sort_by(|a, b| a.address.cmp(&b.address));
        let memory_total = std::fs::read_to_string(root.path("/proc/meminfo"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))
                    .and_then(|rest| {
                        rest.trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<u64>()
                            .ok()
                    })
            })
            .map(|kib| ByteSize(kib * ByteSize::KIB));
        let pages = |size: &str| {
            root.path(&format!(
                "/sys/kernel/mm/hugepages/hugepages-{size}/nr_hugepages"
            ))
            .exists()
        };
        NewFacts {
            devices,
            iommu: !groups.is_empty(),
            memory_total,
            hugepages_2m: pages("2048kB"),
            hugepages_1g: pages("1048576kB"),
            topology: crate::host::topology::read_topology(root).ok(),
            kvm: root.path("/dev/kvm").exists(),
            modules: std::fs::read_to_string(root.path("/proc/modules"))
                .unwrap_or_default()
                .lines()
                .filter_map(|line| line.split_whitespace().next().map(str::to_string))
                .collect(),
            names: PciNames::load(root),
        }
    }

    fn gpus(&self) -> Vec<&PciDeviceInfo> {
        // Display controllers: VGA (0300), XGA, 3D (0302, headless compute cards and laptop
        // dGPUs), other (0380).
        self.devices
            .iter()
            .filter(|d| d.class_code >> 16 == 0x03)
            .collect()
    }

    fn describe(&self, device: &PciDeviceInfo) -> String {
        let name = self
            .names
            .describe(device.class_code, &device.vendor_device)
            .unwrap_or_else(|| format!("class {}", device.class));
        format!("{} {} {name}", device.address, device.vendor_device)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The request cannot be met on this host (exit 2: the user chooses differently).
    #[error("{0}")]
    Usage(String),
}

/// The profile text and what was chosen, for the user to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub text: String,
    /// One line per choice: what and why.
    pub chose: Vec<String>,
    /// What to do or look at next.
    pub next: Vec<String>,
}

/// The host's GPU for the guest: the one asked for, or the only one, or the only one the host
/// does not need (not the boot GPU, its group holding nothing but its own functions).
fn choose_gpu<'a>(
    request: &NewRequest,
    facts: &'a NewFacts,
) -> Result<Option<&'a PciDeviceInfo>, NewError> {
    let gpus = facts.gpus();
    if let Some(address) = request.gpu {
        let wanted = address.to_string();
        return match facts.devices.iter().find(|d| d.address == wanted) {
            Some(device) => Ok(Some(device)),
            None => Err(NewError::Usage(format!(
                "--gpu {wanted}: no such PCI device on this host; its GPUs: {}",
                list_or_none(gpus.iter().map(|d| facts.describe(d)))
            ))),
        };
    }
    match gpus.as_slice() {
        [] => Ok(None),
        [only] => Ok(Some(only)),
        several => {
            let isolated = |gpu: &&&PciDeviceInfo| {
                !gpu.boot_vga && group_of(facts, gpu).iter().all(|d| same_slot(d, gpu))
            };
            let candidates: Vec<&&PciDeviceInfo> = several.iter().filter(isolated).collect();
            match candidates.as_slice() {
                [one] => Ok(Some(one)),
                _ => Err(NewError::Usage(format!(
                    "this host has {} GPUs; choose the guest's with --gpu ADDRESS: {}",
                    several.len(),
                    list_or_none(several.iter().map(|d| facts.describe(d)))
                ))),
            }
        }
    }
}

fn list_or_none(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join("; ")
    }
}

/// The non-bridge members of a device's IOMMU group, itself included.
fn group_of<'a>(facts: &'a NewFacts, device: &PciDeviceInfo) -> Vec<&'a PciDeviceInfo> {
    facts
        .devices
        .iter()
        .filter(|d| d.iommu_group.is_some() && d.iommu_group == device.iommu_group)
        .filter(|d| !d.is_bridge())
        .collect()
}

/// Another function of the same card: same domain, bus and slot.
fn same_slot(a: &PciDeviceInfo, b: &PciDeviceInfo) -> bool {
    a.address.rsplit_once('.').map(|(slot, _)| slot) == b.address.rsplit_once('.').map(|(s, _)| s)
}

/// The host GPU driver modules a single-GPU session unloads, in unload order, of those loaded.
fn gpu_modules(driver: Option<&str>, loaded: &[String]) -> Vec<String> {
    let order: &[&str] = match driver {
        Some("nvidia") => &["nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia"],
        Some("amdgpu") => &["amdgpu"],
        Some("radeon") => &["radeon"],
        Some("nouveau") => &["nouveau"],
        Some("i915") => &["i915"],
        _ => &[],
    };
    order
        .iter()
        .filter(|module| loaded.iter().any(|l| l == *module))
        .map(|module| module.to_string())
        .collect()
}

fn quote(text: &str) -> String {
    // TOML basic string: escape the backslash and the quote.
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn compose(request: &NewRequest, facts: &NewFacts) -> Result<Composed, NewError> {
    let mut chose = Vec::new();
    let mut next = Vec::new();
    let template = request.template;
    let gpu = choose_gpu(request, facts)?;
    let passed: Vec<&PciDeviceInfo> = match gpu {
        Some(gpu) if gpu.iommu_group.is_some() => group_of(facts, gpu),
        Some(gpu) => vec![gpu],
        None => Vec::new(),
    };

    // Memory: what was asked, else half the host's RAM in whole GiB, at most 16G, at least
    // what the guest OS needs (Windows 11's installer refuses less than 4G).
    let floor = if template.windows() { 4 } else { 2 } * ByteSize::GIB;
    let memory = match (request.memory, facts.memory_total) {
        (Some(memory), _) => {
            chose.push(format!("memory {memory}: as asked"));
            memory
        }
        (None, Some(total)) => {
            let half = (total.0 / 2 / ByteSize::GIB) * ByteSize::GIB;
            let memory = ByteSize(half.clamp(floor, 16 * ByteSize::GIB));
            chose.push(format!(
                "memory {memory}: half of the host's {} GiB, between {} and 16G (--memory to change)",
                total.0 / ByteSize::GIB,
                ByteSize(floor)
            ));
            memory
        }
        (None, None) => {
            let memory = ByteSize(8 * ByteSize::GIB);
            chose.push(format!(
                "memory {memory}: /proc/meminfo was not readable (--memory to change)"
            ));
            memory
        }
    };
    if let Some(total) = facts.memory_total {
        if memory.0 + 2 * ByteSize::GIB > total.0 {
            return Err(NewError::Usage(format!(
                "--memory {memory} leaves the host less than 2G of its {} GiB; give less",
                total.0 / ByteSize::GIB
            )));
        }
    }

    // Hugepages when they fit: the host keeps a quarter of its RAM and at least 4G besides the
    // reserved pages, and memory is a whole number of pages.
    let hugepages = match facts.memory_total {
        Some(total)
            if memory.0 + (total.0 / 4).max(4 * ByteSize::GIB) <= total.0
                && facts.hugepages_1g
                && memory.0 % ByteSize::GIB == 0 =>
        {
            Some("1G")
        }
        Some(total)
            if memory.0 + (total.0 / 4).max(4 * ByteSize::GIB) <= total.0
                && facts.hugepages_2m
                && memory.0 % (2 * ByteSize::MIB) == 0 =>
        {
            Some("2M")
        }
        _ => None,
    };
    match (hugepages, facts.memory_total) {
        (Some(size), Some(total)) => chose.push(format!(
            "hugepages {size}: {memory} leaves the host {} GiB, and the pages are reserved only while the VM runs",
            (total.0 - memory.0) / ByteSize::GIB
        )),
        _ => chose.push(
            "no hugepages: the guest's memory would leave the host too little (a quarter of its RAM, at least 4G)"
                .to_string(),
        ),
    }

    // vCPUs: whole host cores through `auto`, leaving the host's core and one more for QEMU's
    // other threads and the host on hosts with four cores or more.
    let (cores, pinned) = match &facts.topology {
        Some(topology) => {
            let kind = if topology.hybrid {
                CoreKind::Performance
            } else {
                CoreKind::Uniform
            };
            let host_core = topology.host_core().map(|c| c.cpus.clone());
            let usable = topology
                .cores()
                .filter(|core| core.kind == kind && Some(&core.cpus) != host_core.as_ref())
                .count();
            let cores = if usable >= 4 { usable - 1 } else { usable };
            let total = topology.cores().filter(|core| core.kind == kind).count();
            if cores == 0 {
                chose.push("cpu.cores 1 without pinning: this host has a single core".to_string());
                (1, false)
            } else {
                chose.push(format!(
                    "cpu.cores {cores} with vcpus = \"auto\": {total} {}s here, one kept for the host{}{}",
                    kind.label(),
                    if usable >= 4 { " and one for QEMU's own threads" } else { "" },
                    if topology.hybrid { "; E-cores stay with the host" } else { "" }
                ));
                (cores, true)
            }
        }
        None => {
            chose.push(
                "cpu.cores 4 without pinning: this host's CPU topology was not readable"
                    .to_string(),
            );
            (4, false)
        }
    };

    // Accelerator: KVM where /dev/kvm exists.
    if !facts.kvm {
        chose.push(
            "accel = \"tcg\": there is no /dev/kvm (enable VT-x/AMD-V and load kvm_intel or kvm_amd, then remove the line)"
                .to_string(),
        );
    }

    let single_gpu = gpu.is_some() && facts.gpus().len() == 1;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `vmrun new` from this host's facts; `vmrun show {0}` prints what it does,\n# `vmrun check {0}` what this host still lacks. docs/profile.md explains every key.",
        request.name
    );
    let _ = writeln!(t, "\nname = {}", quote(&request.name));
    let _ = writeln!(t, "\n[machine]\nmemory = {}", quote(&memory.to_string()));
    if let Some(size) = hugepages {
        let _ = writeln!(t, "hugepages = {}", quote(size));
    }
    if !facts.kvm {
        let _ = writeln!(
            t,
            "accel = \"tcg\"                      # no /dev/kvm on this host: software emulation"
        );
    }
    if gpu.is_some() {
        let _ = writeln!(
            t,
            "suspend = false                    # no guest S3/S4: a passed GPU rarely comes back from them"
        );
    }
    let _ = writeln!(t, "\n[cpu]\ncores = {cores}");
    if template.windows() {
        let _ = writeln!(
            t,
            "hyperv = true                      # the Hyper-V enlightenments Windows uses"
        );
    }
    if pinned {
        let _ = writeln!(
            t,
            "\n[pinning]\nvcpus = \"auto\"                     # whole host cores from the topology: `vmrun topology {}`",
            request.name
        );
    }
    if template == Template::Windows11 {
        let _ = writeln!(
            t,
            "\n[firmware]\nsecure_boot = true                 # Windows 11 expects Secure Boot\n\n[tpm]\nversion = \"2.0\"                    # swtpm; Windows 11 needs a TPM 2.0"
        );
        chose.push("Secure Boot OVMF and a TPM 2.0 (swtpm): Windows 11 needs both".to_string());
    }
    if template.windows() {
        let _ = writeln!(
            t,
            "\n[clock]\nbase = \"localtime\"                 # Windows keeps the RTC in local time"
        );
    }
    let bus = if template.windows() { "nvme" } else { "virtio" };
    let _ = writeln!(
        t,
        "\n[[disk]]\npath = {}\nbus = \"{bus}\"{}",
        quote(&request.image.to_string_lossy()),
        if template.windows() {
            "                       # Windows has an NVMe driver built in"
        } else {
            ""
        }
    );
    chose.push(format!("disk {} on {bus}", request.image.display()));
    if template.windows() {
        let _ = writeln!(
            t,
            "\n# The installer, until Windows is installed:\n# [[disk]]\n# path = \"/var/lib/vmrun/iso/windows.iso\"\n# media = \"cdrom\"\n# boot_order = 1"
        );
    } else {
        let _ = writeln!(
            t,
            "\n# The installer, until the system is installed:\n# [[disk]]\n# path = \"/var/lib/vmrun/iso/linux.iso\"\n# media = \"cdrom\"\n# boot_order = 1"
        );
    }
    if let Some(gpu) = gpu {
        let group = gpu
            .iommu_group
            .map(|g| format!("IOMMU group {g}"))
            .unwrap_or_else(|| "no IOMMU group".to_string());
        for device in &passed {
            let name = facts
                .names
                .describe(device.class_code, &device.vendor_device)
                .unwrap_or_else(|| device.vendor_device.clone());
            let note = if device.address == gpu.address {
                format!("the guest's GPU: {name}")
            } else if same_slot(device, gpu) {
                format!("the GPU's function: {name}")
            } else {
                format!("shares {group} with the GPU: {name}")
            };
            let _ = writeln!(
                t,
                "\n[[pci]]\naddress = {}   # {note}",
                quote(&device.address)
            );
        }
        chose.push(format!(
            "passing {} ({group}, every device in it): {}",
            facts.describe(gpu),
            passed
                .iter()
                .map(|d| d.address.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let others: Vec<String> = passed
            .iter()
            .filter(|d| !same_slot(d, gpu))
            .map(|d| facts.describe(d))
            .collect();
        if !others.is_empty() {
            next.push(format!(
                "the GPU's IOMMU group also holds {}: the host loses them while the VM runs (another slot, or an ACS override, separates them)",
                others.join("; ")
            ));
        }
        if !facts.iommu {
            next.push(format!(
                "turn the IOMMU on: {}",
                crate::host::pci::ENABLE_IOMMU_HINT
            ));
        }
        if gpu.boot_vga {
            next.push(format!(
                "{} is the boot GPU: dump a clean ROM (`vmrun rom dump {} FILE` where it is not) and set romfile if the guest shows nothing",
                gpu.address, gpu.address
            ));
        }
    } else {
        chose.push(
            "no GPU passed: this host has no display controller (--gpu ADDRESS to pass a device)"
                .to_string(),
        );
    }
    if single_gpu {
        let gpu = gpu.map(|g| g.driver.as_deref()).unwrap_or_default();
        let modules = gpu_modules(gpu, &facts.modules);
        let _ = writeln!(
            t,
            "\n[single_gpu]                       # the host's only GPU: the desktop stops while the guest has it\ndisplay_manager = \"display-manager.service\""
        );
        if !modules.is_empty() {
            let list: Vec<String> = modules.iter().map(|m| quote(m)).collect();
            let _ = writeln!(t, "modules = [{}]", list.join(", "));
        }
        // A desktop session's compositor holds the card from its login scope, not from the
        // display manager's unit: without this the first run is refused naming it.
        let _ = writeln!(
            t,
            "\n[holders]                          # desktop sessions holding the GPU end for the run (log in again after)\nstop = [\"session-*.scope\"]"
        );
        chose.push(format!(
            "single-GPU session: the GPU is the host's only one, so the display manager stops{}",
            if modules.is_empty() {
                String::new()
            } else {
                format!(" and {} unload while the VM runs", modules.join(", "))
            }
        ));
        next.push("single-GPU: the host's screen goes dark while the VM runs; keep SSH access to the host (docs/single-gpu.md)".to_string());
    }
    if template.windows() {
        let _ = writeln!(
            t,
            "\n[shutdown]\ntimeout = 180                      # Windows updates can take a while to shut down"
        );
    }
    next.insert(
        0,
        format!(
            "create the disk: qemu-img create -f qcow2 {} 128G",
            shlex::try_quote(&request.image.to_string_lossy()).unwrap_or_default()
        ),
    );
    next.push(format!(
        "vmrun check {0}   # what this host still lacks; then `vmrun show {0}` and `vmrun {0}`",
        request.name
    ));
    Ok(Composed {
        text: t,
        chose,
        next,
    })
}

/// Where `new` writes without `--output`: the first directory of the search path a user owns
/// (root: /etc/vmrun/profiles, others: $XDG_CONFIG_HOME/vmrun/profiles).
pub fn default_dir(is_root: bool, var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if is_root {
        return Some(PathBuf::from("/etc/vmrun/profiles"));
    }
    var("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".config")))
        .map(|config| config.join("vmrun/profiles"))
}

/// Where the disk image goes without `--image`.
pub fn default_image(is_root: bool, name: &str, var: impl Fn(&str) -> Option<String>) -> PathBuf {
    let dir = if is_root {
        PathBuf::from("/var/lib/vmrun/images")
    } else {
        var("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|home| Path::new(&home).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("vmrun/images")
    };
    dir.join(format!("{name}.qcow2"))
}

/// Writes `text` to a new file (mode 0644, never over an existing file or through a symlink),
/// creating its directory (mode 0755) when missing.
pub fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(address: &str, class: u32, ids: &str, group: u32) -> PciDeviceInfo {
        PciDeviceInfo {
            address: address.to_string(),
            class: format!("0x{class:06x}"),
            vendor_device: ids.to_string(),
            driver: None,
            resettable: true,
            boot_vga: false,
            iommu_group: Some(group),
            class_code: class,
        }
    }

    fn request(gpu: Option<&str>) -> NewRequest {
        NewRequest {
            name: "vm".into(),
            gpu: gpu.map(|g| g.parse().unwrap()),
            memory: None,
            template: Template::Linux,
            image: "/images/vm.qcow2".into(),
        }
    }

    #[test]
    fn of_two_gpus_the_one_with_a_group_of_its_own_is_taken_and_its_whole_group_passed() {
        let facts = NewFacts {
            devices: vec![
                device("0000:04:00.0", 0x030000, "1002:67ff", 15),
                device("0000:05:00.0", 0x010800, "1e0f:0009", 15),
                device("0000:08:00.0", 0x030000, "10de:1c02", 16),
                device("0000:08:00.1", 0x040300, "10de:10f1", 16),
            ],
            iommu: true,
            memory_total: Some(ByteSize(32 * ByteSize::GIB)),
            hugepages_1g: true,
            ..NewFacts::default()
        };
        let composed = compose(&request(None), &facts).unwrap();
        assert!(composed.text.contains("address = \"0000:08:00.0\""));
        assert!(composed.text.contains("address = \"0000:08:00.1\""));
        assert!(!composed.text.contains("04:00.0"), "{}", composed.text);
        assert!(!composed.text.contains("[single_gpu]"));
        assert!(composed
            .text
            .contains("memory = \"16G\"\nhugepages = \"1G\""));
        // Asked for the other one: its whole group goes, and the user is told.
        let composed = compose(&request(Some("04:00.0")), &facts).unwrap();
        assert!(composed.text.contains("address = \"0000:05:00.0\""));
        assert!(composed.next.iter().any(|n| n.contains("0000:05:00.0")));
    }

    #[test]
    fn memory_that_leaves_the_host_too_little_gets_no_hugepages() {
        let facts = NewFacts {
            devices: vec![device("0000:01:00.0", 0x030000, "10de:2184", 1)],
            memory_total: Some(ByteSize(6 * ByteSize::GIB)),
            hugepages_1g: true,
            hugepages_2m: true,
            ..NewFacts::default()
        };
        let composed = compose(&request(None), &facts).unwrap();
        assert!(
            composed.text.contains("memory = \"3G\""),
            "{}",
            composed.text
        );
        assert!(!composed.text.contains("hugepages ="));
        assert!(composed.text.contains("[single_gpu]"));
        assert!(composed.text.contains("\n[holders] "));
        assert!(composed.text.contains("\nstop = [\"session-*.scope\"]\n"));
        let mut asked = request(None);
        asked.memory = Some(ByteSize(7 * ByteSize::GIB));
        assert!(compose(&asked, &facts).is_err());
    }

    #[test]
    fn the_nvidia_modules_unload_in_dependency_order_when_loaded() {
        let loaded: Vec<String> = ["nvidia", "nvidia_drm", "snd_hda_intel", "nvidia_modeset"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            gpu_modules(Some("nvidia"), &loaded),
            ["nvidia_drm", "nvidia_modeset", "nvidia"]
        );
        assert!(gpu_modules(Some("vfio-pci"), &loaded).is_empty());
    }

    #[test]
    fn a_new_file_is_never_written_over_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/vm.toml");
        write_new(&path, "one").unwrap();
        let error = write_new(&path, "two").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(dir.path().join("target.toml"), &link).unwrap();
        assert!(write_new(&link, "x").is_err());
        assert!(!dir.path().join("target.toml").exists());
    }
}
