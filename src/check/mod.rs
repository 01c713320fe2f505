//! Preflight: read-only findings about this host for a VM, one pass/warn/fail line each.
//! `check` prints them all; `run` refuses to start on any failure. The host steps judge their
//! own part (devices, groups, ROMs, hugepages, hooks, the Looking Glass file); this module adds
//! what is not a host change: QEMU and its accelerator, firmware, CPUs, capabilities, device
//! nodes.

mod cpus;
mod firmware;
mod media;
mod qemu;
mod user;

use crate::host::context::HostContext;
use crate::host::steps::HostStep;
use crate::model::{Accel, VmConfig};
use crate::plan::{BootFirmware, HostFacts, Plan};

use cpus::{cgroup_cpus, cpu_findings, ignore_msrs, realtime_sharing, scheduler_capability};
use firmware::firmware_findings;
use media::{audio_findings, display_findings};
pub use qemu::{accel_probe, accel_probe_as, kvm_for_default_user, kvm_starts_as};
use qemu::{accelerator, qemu_features, qemu_version};
use user::{qemu_user_findings, qemu_user_reaches_runtime};

pub use crate::host::finding::{Finding, Status};
pub use crate::host::{find_program, Sysroot};

/// How deep to look: `check` runs QEMU to learn its version and whether its accelerator
/// really starts; `run` learns that from starting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    Run,
    Check,
}

/// Everything about the host that needs no firmware: QEMU, accelerator device, CPUs,
/// capabilities, device nodes, and each host step's own findings.
pub fn host_findings(
    config: &VmConfig,
    steps: &[HostStep],
    host: &HostContext,
    facts: &HostFacts,
    depth: Depth,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Looked up once, with the other host facts: `run` executes this very path.
    let qemu = facts.qemu_program.as_deref();
    match (qemu, depth) {
        (None, _) => findings.push(Finding::fail(
            "qemu",
            format!(
                "`{}` is not on PATH; install QEMU (Debian/Ubuntu: apt install qemu-system-x86) or set [qemu] binary",
                config.qemu.binary
            ),
        )),
        (Some(path), Depth::Check) => findings.push(qemu_version(path)),
        (Some(_), _) => {}
    }
    findings.extend(qemu_features(config, facts));
    findings.push(accelerator(config.machine.accel, &host.root));
    findings.extend(cpu_findings(config, facts));
    findings.extend(scheduler_capability(config));
    findings.extend(cgroup_cpus(config, &host.root));
    findings.extend(ignore_msrs(config, &host.root));
    findings.extend(realtime_sharing(config, facts));
    findings.extend(device_nodes(config, &host.root));
    findings.extend(qemu_user_findings(config, &host.root, qemu));
    if config.smbios.as_ref().is_some_and(|s| s.from_host) {
        let dmi = host.root.path("/sys/class/dmi/id");
        findings.push(if facts.dmi.is_empty() {
            Finding::warn(
                "smbios",
                format!(
                    "smbios.from_host: nothing readable in {}; the guest gets QEMU's values for the fields not given",
                    dmi.display()
                ),
            )
        } else {
            Finding::pass(
                "smbios",
                format!("{} host values read from {}", facts.dmi.len(), dmi.display()),
            )
        });
    }
    for step in steps {
        findings.extend(step.preflight(host));
    }
    findings
}

/// The checks that need the resolved firmware and the plan: the firmware files, the VM's VARS
/// copy, and (for `check`) whether QEMU starts with the profile's accelerator and CPU.
pub fn plan_findings(firmware: &BootFirmware, plan: &Plan, depth: Depth) -> Vec<Finding> {
    let mut findings = firmware_findings(firmware, &plan.paths);
    if depth == Depth::Check && plan.accel == Accel::Kvm.as_str() {
        findings.push(accel_probe_as(&plan.argv, plan.qemu_user.as_ref()));
    }
    findings.extend(audio_findings(plan, depth));
    findings.extend(display_findings(plan));
    findings.extend(qemu_user_reaches_runtime(plan));
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

pub(super) fn read_trimmed(root: &Sysroot, path: &str) -> Option<String> {
    std::fs::read_to_string(root.path(path))
        .ok()
        .map(|t| t.trim().to_string())
}

fn device_nodes(config: &VmConfig, root: &Sysroot) -> Vec<Finding> {
    use std::os::unix::fs::FileTypeExt;
    let mut findings = Vec::new();
    for (index, path) in config.input.evdev.iter().enumerate() {
        let real = root.path(&path.to_string_lossy());
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
    // A kvmfr device is not created by vmrun (the shared-memory file is a host step).
    if let Some(lg) = config.looking_glass.as_ref().filter(|lg| lg.is_kvmfr()) {
        let real = root.path(&lg.path.to_string_lossy());
        findings.push(match std::fs::metadata(&real) {
            Ok(meta) if meta.file_type().is_char_device() => Finding::pass(
                "looking_glass",
                format!("{} is the kvmfr device", lg.path.display()),
            ),
            _ => Finding::fail(
                "looking_glass",
                format!(
                    "{} is not a character device: load the kvmfr module (modprobe kvmfr static_size_mb=...)",
                    lg.path.display()
                ),
            ),
        });
    }
    findings
}
