//! `vmrun check`: read-only preflight of a validated profile against this host. Nothing here
//! changes the host; each finding is one pass/warn/fail line.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::firmware::{self, FirmwareImage};
use crate::model::{Accel, CpuSet, VmConfig};
use crate::plan::{BootFirmware, VmPaths};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub status: Status,
    pub check: String,
    pub message: String,
}

impl Finding {
    pub fn new(status: Status, check: &str, message: impl Into<String>) -> Self {
        Finding {
            status,
            check: check.to_string(),
            message: message.into(),
        }
    }
}

pub use crate::host::Sysroot;

/// Finds a program the way `execvp` would.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The inputs of the host checks, so tests can point them at fake trees.
pub struct HostView {
    pub sysroot: Sysroot,
}

/// Everything but the firmware, which `resolved_findings` checks once it is resolved.
/// `probe_qemu` runs `qemu --version` (for `check`; `run` learns the same from spawning it).
pub fn host_findings(config: &VmConfig, host: &HostView, probe_qemu: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    if probe_qemu {
        findings.push(qemu_binary(&config.qemu.binary));
    } else if find_program(&config.qemu.binary).is_none() {
        findings.push(Finding::new(
            Status::Fail,
            "qemu",
            format!(
                "`{}` is not on PATH; install QEMU (Debian/Ubuntu: apt install qemu-system-x86) or set [qemu] binary",
                config.qemu.binary
            ),
        ));
    }
    findings.push(accelerator(config.machine.accel, host));
    findings.extend(cpu_findings(config, host));
    findings.extend(scheduler_capability(config));
    findings.extend(device_nodes(config, host));
    findings.extend(pci_findings(config, &host.sysroot));
    findings.extend(hugepage_findings(config, &host.sysroot));
    findings
}

/// The checks that need the resolved firmware and the VM's paths: the firmware files, the VM's
/// VARS copy, and each `romfile` against the firmware and its device.
pub fn resolved_findings(
    config: &VmConfig,
    firmware: &BootFirmware,
    paths: &VmPaths,
    io: &dyn crate::host::SysfsIo,
) -> Vec<Finding> {
    let mut findings = firmware_findings(firmware, paths);
    findings.extend(rom_findings(config, firmware, io));
    findings
}

/// A validation warning as a check line: a file the profile names but this host lacks fails,
/// anything else warns.
pub fn diagnostic_finding(diagnostic: &crate::profile::Diagnostic) -> Finding {
    match diagnostic.kind {
        crate::profile::Kind::MissingFile => {
            Finding::new(Status::Fail, "files", diagnostic.located())
        }
        crate::profile::Kind::Profile => {
            Finding::new(Status::Warn, "profile", diagnostic.to_string())
        }
    }
}

fn qemu_binary(binary: &str) -> Finding {
    let Some(path) = find_program(binary) else {
        return Finding::new(
            Status::Fail,
            "qemu",
            format!("`{binary}` is not on PATH; install QEMU (Debian/Ubuntu: apt install qemu-system-x86) or set [qemu] binary"),
        );
    };
    match Command::new(&path).arg("--version").output() {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let version = text
                .lines()
                .next()
                .and_then(|line| line.split("version ").nth(1))
                .unwrap_or("(unknown version)")
                .trim()
                .to_string();
            Finding::new(
                Status::Pass,
                "qemu",
                format!("{} {version}", path.display()),
            )
        }
        Ok(output) => Finding::new(
            Status::Fail,
            "qemu",
            format!(
                "{} --version failed: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ),
        Err(error) => Finding::new(
            Status::Fail,
            "qemu",
            format!("cannot run {}: {error}", path.display()),
        ),
    }
}

fn accelerator(accel: Accel, host: &HostView) -> Finding {
    match accel {
        Accel::Tcg => Finding::new(
            Status::Pass,
            "accel",
            "TCG (software emulation) was asked for: no /dev/kvm needed, but the guest runs many times slower",
        ),
        Accel::Kvm => {
            let kvm = host.sysroot.path("/dev/kvm");
            match std::fs::OpenOptions::new().read(true).write(true).open(&kvm) {
                Ok(_) => Finding::new(Status::Pass, "accel", format!("KVM: {} is usable", kvm.display())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Finding::new(
                    Status::Fail,
                    "accel",
                    format!(
                        "{} does not exist: enable virtualization (VT-x/AMD-V) in the firmware setup and load kvm_intel or kvm_amd",
                        kvm.display()
                    ),
                ),
                Err(error) => Finding::new(
                    Status::Fail,
                    "accel",
                    format!(
                        "cannot open {} read-write ({error}); run as root or add the user to the `kvm` group",
                        kvm.display()
                    ),
                ),
            }
        }
    }
}

fn firmware_findings(firmware: &BootFirmware, paths: &VmPaths) -> Vec<Finding> {
    let BootFirmware::Ovmf(resolved) = firmware else {
        return vec![Finding::new(
            Status::Pass,
            "firmware",
            "SeaBIOS (QEMU's built-in BIOS)",
        )];
    };
    let mut findings = vec![Finding::new(
        Status::Pass,
        "firmware",
        format!(
            "OVMF CODE {} + VARS template {} ({}, {}secure boot, from {})",
            resolved.code.path.display(),
            resolved.vars_template.path.display(),
            resolved.code.format.as_str(),
            if resolved.secure_boot { "" } else { "no " },
            resolved.source
        ),
    )];
    if paths.vars.exists() {
        let copy = FirmwareImage {
            path: paths.vars.clone(),
            format: resolved.vars_template.format,
        };
        match (firmware::flash_size(&copy), firmware::flash_size(&resolved.vars_template)) {
            (Ok(have), Ok(want)) if have == want => findings.push(Finding::new(
                Status::Pass,
                "vars",
                format!("the VM's VARS copy {} matches the firmware", paths.vars.display()),
            )),
            (Ok(have), Ok(want)) => findings.push(Finding::new(
                Status::Fail,
                "vars",
                format!(
                    "the VM's VARS copy {} is {have} bytes but this firmware's VARS are {want} bytes (the firmware \
                     changed build); move the copy away to start from the template (boot entries are lost)",
                    paths.vars.display()
                ),
            )),
            (Err(error), _) | (_, Err(error)) => {
                findings.push(Finding::new(Status::Fail, "vars", error.to_string()))
            }
        }
    } else {
        findings.push(Finding::new(
            Status::Pass,
            "vars",
            format!(
                "{} will be created from the template on first run",
                paths.vars.display()
            ),
        ));
    }
    findings
}

/// The CPUs the kernel reports online, from `/sys/devices/system/cpu/online`.
pub fn online_cpus(sysroot: &Sysroot) -> Option<CpuSet> {
    std::fs::read_to_string(sysroot.path("/sys/devices/system/cpu/online"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn cpu_findings(config: &VmConfig, host: &HostView) -> Vec<Finding> {
    let Some(pinning) = &config.pinning else {
        return vec![Finding::new(
            Status::Warn,
            "pinning",
            "no [pinning]: vCPU threads float over all host CPUs (latency spikes in games)",
        )];
    };
    let Some(online) = online_cpus(&host.sysroot) else {
        return vec![Finding::new(
            Status::Warn,
            "pinning",
            "cannot read the online CPU list of this host",
        )];
    };
    let mut wanted: Vec<(String, usize)> = pinning
        .vcpus
        .iter()
        .enumerate()
        .map(|(index, cpu)| (format!("pinning.vcpus[{index}]"), *cpu))
        .collect();
    for (key, set) in [
        ("pinning.emulator", &pinning.emulator),
        ("pinning.iothreads", &pinning.iothreads),
    ] {
        if let Some(set) = set {
            wanted.extend(set.iter().map(|cpu| (key.to_string(), cpu)));
        }
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(_, cpu)| !online.contains(*cpu))
        .map(|(key, cpu)| format!("{key} = {cpu}"))
        .collect();
    if missing.is_empty() {
        vec![Finding::new(
            Status::Pass,
            "pinning",
            format!("every pinned host CPU is online (online: {online})"),
        )]
    } else {
        vec![Finding::new(
            Status::Fail,
            "pinning",
            format!(
                "host CPUs not online here (online: {online}): {}",
                missing.join(", ")
            ),
        )]
    }
}

fn scheduler_capability(config: &VmConfig) -> Option<Finding> {
    let pinning = config.pinning.as_ref()?;
    if !pinning.scheduler.is_realtime() {
        return None;
    }
    let has = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_NICE,
    )
    .unwrap_or(false);
    Some(if has {
        Finding::new(
            Status::Pass,
            "scheduler",
            format!(
                "CAP_SYS_NICE held: vCPUs can get SCHED_{} priority {}",
                pinning.scheduler.as_str().to_uppercase(),
                pinning.priority
            ),
        )
    } else {
        Finding::new(
            Status::Fail,
            "scheduler",
            format!(
                "pinning.scheduler = \"{}\" needs CAP_SYS_NICE: run vmrun as root (sudo), or set scheduler = \"other\"",
                pinning.scheduler.as_str()
            ),
        )
    })
}

fn device_nodes(config: &VmConfig, host: &HostView) -> Vec<Finding> {
    use std::os::unix::fs::FileTypeExt;
    let mut findings = Vec::new();
    for (index, path) in config.input.evdev.iter().enumerate() {
        let real = host.sysroot.path(&path.to_string_lossy());
        let status = match std::fs::metadata(&real) {
            Ok(meta) if meta.file_type().is_char_device() => None,
            Ok(_) => Some(format!("{} is not a character device", path.display())),
            Err(error) => Some(format!(
                "{}: {error}; list /dev/input/by-id/ for the right name",
                path.display()
            )),
        };
        findings.push(match status {
            None => Finding::new(
                Status::Pass,
                "input",
                format!("input.evdev[{index}] {} exists", path.display()),
            ),
            Some(problem) => Finding::new(
                Status::Fail,
                "input",
                format!("input.evdev[{index}]: {problem}"),
            ),
        });
    }
    if let Some(lg) = &config.looking_glass {
        let real = host.sysroot.path(&lg.path.to_string_lossy());
        let finding = if lg.is_kvmfr() {
            match std::fs::metadata(&real) {
                Ok(meta) if meta.file_type().is_char_device() => {
                    Finding::new(Status::Pass, "looking_glass", format!("{} is the kvmfr device", lg.path.display()))
                }
                _ => Finding::new(
                    Status::Fail,
                    "looking_glass",
                    format!("{} is not a character device: load the kvmfr module (modprobe kvmfr static_size_mb=...)", lg.path.display()),
                ),
            }
        } else {
            match real.parent() {
                Some(dir) if dir.is_dir() => Finding::new(
                    Status::Pass,
                    "looking_glass",
                    format!("{} ({}) can be created", lg.path.display(), lg.size),
                ),
                _ => Finding::new(
                    Status::Fail,
                    "looking_glass",
                    format!("the directory of {} does not exist", lg.path.display()),
                ),
            }
        };
        findings.push(finding);
    }
    findings
}

/// For each `[[pci]] romfile`: a real ROM, starting at its image, with an EFI image when the
/// firmware is OVMF, and made for the device it is given to (ids read through the host layer).
fn rom_findings(
    config: &VmConfig,
    firmware: &BootFirmware,
    io: &dyn crate::host::SysfsIo,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (index, device) in config.pci.iter().enumerate() {
        let Some(romfile) = &device.romfile else {
            continue;
        };
        if !romfile.is_file() {
            continue; // reported with the other missing files
        }
        let key = format!("pci[{index}].romfile");
        let report = match crate::rom::inspect(romfile) {
            Ok(report) => report,
            Err(error) => {
                findings.push(Finding::new(Status::Fail, "rom", format!("{key}: {error}")));
                continue;
            }
        };
        let shown = romfile.display();
        let Some(first) = report.first_image() else {
            findings.push(Finding::new(
                Status::Fail,
                "rom",
                format!("{key}: {shown}: {}", report.problems.join("; ")),
            ));
            continue;
        };
        let mut failures = Vec::new();
        if report.header_bytes > 0 {
            let stripped = romfile.with_extension("stripped.rom");
            failures.push(format!(
                "{shown} starts with a {}-byte dump header; run `vmrun rom {shown} --strip {}` and set romfile to the stripped copy",
                report.header_bytes,
                stripped.display()
            ));
        }
        if matches!(firmware, BootFirmware::Ovmf(_)) && !report.has_efi {
            failures.push(format!(
                "{shown} has no EFI (GOP) image, so OVMF cannot drive this GPU before the guest's driver loads \
                 (black screen until then); use a ROM with a UEFI image"
            ));
        }
        if report.images.iter().any(|image| image.truncated) {
            failures.push(format!("{shown}: {}", report.problems.join("; ")));
        }
        match crate::host::pci_ids(io, device.address) {
            Ok((vendor, device_id)) if !report.is_for(vendor, device_id) => failures.push(format!(
                "{shown} is for {}:{} but {} is {vendor:04x}:{device_id:04x}",
                first.vendor_id, first.device_id, device.address
            )),
            Ok(_) => {}
            Err(error) => findings.push(Finding::new(
                Status::Warn,
                "rom",
                format!(
                    "{key}: cannot compare the ROM with {}: {error}",
                    device.address
                ),
            )),
        }
        if failures.is_empty() {
            let kinds: Vec<String> = report
                .images
                .iter()
                .map(|image| image.code_type.to_string())
                .collect();
            findings.push(Finding::new(
                Status::Pass,
                "rom",
                format!(
                    "{key}: {shown}: {} image(s) ({}) for {}:{}",
                    report.images.len(),
                    kinds.join(" + "),
                    first.vendor_id,
                    first.device_id
                ),
            ));
        }
        for failure in failures {
            findings.push(Finding::new(
                Status::Fail,
                "rom",
                format!("{key}: {failure}"),
            ));
        }
        for problem in report.problems.iter().filter(|p| p.contains("checksum")) {
            findings.push(Finding::new(
                Status::Warn,
                "rom",
                format!("{key}: {problem}"),
            ));
        }
    }
    findings
}

/// For the `[[pci]]` devices: present, IOMMU on, every IOMMU group viable, reset capability,
/// and the boot GPU's ROM.
fn pci_findings(config: &VmConfig, root: &Sysroot) -> Vec<Finding> {
    use crate::host::pci;
    if config.pci.is_empty() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    if !pci::iommu_enabled(root) {
        findings.push(Finding::new(Status::Fail, "iommu", pci::ENABLE_IOMMU_HINT));
    }
    let mut present = Vec::new();
    for (index, device) in config.pci.iter().enumerate() {
        let address = device.address.to_string();
        let Some(info) = pci::device_info(root, &address) else {
            findings.push(Finding::new(
                Status::Fail,
                "pci",
                format!("pci[{index}]: {address} does not exist on this host (`lspci -D` lists the devices)"),
            ));
            continue;
        };
        present.push(device.address);
        if !info.resettable {
            findings.push(Finding::new(
                Status::Warn,
                "pci",
                format!(
                    "pci[{index}]: {address} ({}) offers no reset; it may stop working after the guest reboots \
                     until the host reboots",
                    info.vendor_device
                ),
            ));
        }
        if info.boot_vga && device.romfile.is_none() {
            findings.push(Finding::new(
                Status::Warn,
                "pci",
                format!(
                    "pci[{index}]: {address} is the boot GPU and has no romfile: the host firmware ran and shadowed \
                     its ROM, and the copy the guest reads is often unusable (black screen); dump a clean ROM \
                     (`vmrun rom dump` on a system where it is not the boot GPU, or the vendor's) and set romfile"
                ),
            ));
        }
    }
    let missing = pci::missing_from_groups(root, &present);
    if missing.is_empty() {
        if !present.is_empty() && pci::iommu_enabled(root) {
            findings.push(Finding::new(
                Status::Pass,
                "iommu",
                format!(
                    "the IOMMU groups of {} passed device(s) are viable",
                    present.len()
                ),
            ));
        }
    } else {
        let mut by_group: std::collections::BTreeMap<u32, Vec<String>> =
            std::collections::BTreeMap::new();
        for (group, device) in missing {
            by_group.entry(group).or_default().push(format!(
                "{} ({} class {}, driver {})",
                device.address,
                device.vendor_device,
                device.class,
                device.driver.as_deref().unwrap_or("none")
            ));
        }
        for (group, devices) in by_group {
            findings.push(Finding::new(
                Status::Fail,
                "iommu",
                format!(
                    "IOMMU group {group} is not viable: a group goes to the guest whole; add these devices as [[pci]] \
                     (or bind them to vfio-pci): {}",
                    devices.join(", ")
                ),
            ));
        }
    }
    findings
}

/// Hugepages of the profile's size: enough free, or how many vmrun will try to allocate at
/// start (1 GiB pages usually need reserving at boot, when memory is not yet fragmented).
fn hugepage_findings(config: &VmConfig, root: &Sysroot) -> Vec<Finding> {
    let Some(pages) = config.machine.hugepages else {
        return Vec::new();
    };
    let size = crate::model::ByteSize(pages.bytes());
    let dir = root.path(&format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB",
        pages.bytes() / 1024
    ));
    let needed = config.machine.memory.bytes() / pages.bytes();
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let Some(free) = read("free_hugepages") else {
        return vec![Finding::new(
            Status::Fail,
            "hugepages",
            format!(
                "this kernel offers no {size} hugepages ({} is missing)",
                dir.display()
            ),
        )];
    };
    if free >= needed {
        return vec![Finding::new(
            Status::Pass,
            "hugepages",
            format!("{free} free {size} pages, {needed} needed"),
        )];
    }
    vec![Finding::new(
        Status::Warn,
        "hugepages",
        format!(
            "{free} free {size} pages, {needed} needed: vmrun will try to allocate {} more at start, which fails when \
             memory is fragmented; reserve them at boot (hugepagesz={size} hugepages={needed} on the kernel command line)",
            needed - free
        ),
    )]
}
