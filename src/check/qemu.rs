//! QEMU itself: its version, the accelerator device, and whether QEMU really starts with the
//! profile's accelerator and CPU (`check` only).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Finding, Status, Sysroot};
use crate::model::{Accel, QemuIdentity, VmConfig};
use crate::plan::HostFacts;

/// The QEMU `check` found, with the version it reports.
pub(super) fn qemu_version(path: &Path) -> Finding {
    match Command::new(path).arg("--version").output() {
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

/// The accelerator's device node. Its finding is `kvm`, not `accel`: `check` also asks QEMU
/// whether it starts under KVM (`accel`), and the node opening while QEMU fails are two things,
/// never one thing said to pass and fail.
pub(super) fn accelerator(accel: Accel, root: &Sysroot) -> Finding {
    match accel {
        Accel::Tcg => Finding::new(
            Status::Pass,
            "accel",
            "TCG (software emulation) was asked for: no /dev/kvm needed, but the guest runs many times slower",
        ),
        Accel::Kvm => {
            let kvm = root.path("/dev/kvm");
            match std::fs::OpenOptions::new().read(true).write(true).open(&kvm) {
                Ok(_) => Finding::new(Status::Pass, "kvm", format!("{} opens read-write", kvm.display())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Finding::new(
                    Status::Fail,
                    "kvm",
                    format!(
                        "{} does not exist: enable virtualization (VT-x/AMD-V) in the firmware setup and load kvm_intel or kvm_amd",
                        kvm.display()
                    ),
                ),
                Err(error) => Finding::new(
                    Status::Fail,
                    "kvm",
                    format!(
                        "cannot open {} read-write ({error}); run as root or add the user to the `kvm` group",
                        kvm.display()
                    ),
                ),
            }
        }
    }
}

/// Whether `binary` starts a q35 machine under KVM with `cpu_model` as `identity` would (the
/// user QEMU runs as; None: vmrun's own user): what tests and the benchmark ask before choosing
/// KVM, so that they decide as `run` does. `Err` says why not, in words.
pub fn kvm_starts_as(
    binary: &str,
    cpu_model: &str,
    identity: Option<&QemuIdentity>,
) -> Result<String, String> {
    let argv = [
        binary, "-machine", "q35", "-accel", "kvm", "-cpu", cpu_model,
    ]
    .map(str::to_string);
    let finding = accel_probe_as(&argv, identity);
    match finding.status {
        Status::Pass => Ok(finding.message),
        _ => Err(finding.message),
    }
}

/// Whether a VM under KVM with `-cpu cpu_model` starts here as `run` would start it for a
/// profile that names no QEMU user: /dev/kvm must exist and QEMU, probed as that user, must
/// start. What the tests and the benchmark ask before choosing KVM; either way the words say
/// why.
pub fn kvm_for_default_user(binary: &str, cpu_model: &str) -> Result<String, String> {
    let root = Sysroot::from_env();
    let kvm = root.path("/dev/kvm");
    if !kvm.exists() {
        return Err(format!("{} does not exist", kvm.display()));
    }
    let identity =
        crate::host::identity::default_kvm_identity(&root, |var| std::env::var(var).ok())?;
    kvm_starts_as(binary, cpu_model, identity.as_ref())
}

/// [`accel_probe_as`] as vmrun's own user.
pub fn accel_probe(argv: &[String]) -> Finding {
    accel_probe_as(argv, None)
}

/// What QEMU does with the profile's machine, accelerator, CPU model and flags, started paused
/// with nothing else, as the user QEMU runs as (who may lack /dev/kvm where root has it):
/// opening /dev/kvm proves nothing, since a kernel can refuse an MSR the CPU model sets and
/// QEMU aborts at its first vCPU reset.
pub fn accel_probe_as(argv: &[String], identity: Option<&QemuIdentity>) -> Finding {
    let Some(binary) = argv.first() else {
        return Finding::fail("accel", "no QEMU binary in the plan");
    };
    let mut probe = Command::new(binary);
    probe.args(probe_args(argv));
    probe
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let who = match identity {
        Some(identity) => {
            crate::process::run_as(
                &mut probe,
                identity.uid,
                identity.gid,
                &identity.groups,
                None,
            );
            format!(" as {}", identity.name)
        }
        None => String::new(),
    };
    let result = probe.spawn().and_then(|mut child| {
        if let Some(mut stdin) = child.stdin.take() {
            // Asked once QEMU is past machine creation and its first reset, where it aborts.
            let _ = stdin.write_all(
                b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\"}\n{\"execute\":\"quit\"}\n",
            );
        }
        crate::process::output_within_child(child, std::time::Duration::from_secs(30))
    });
    let cpu = option_value(argv, "-cpu").unwrap_or("(QEMU's default)");
    match result {
        Ok(Some(output)) if output.status.success() => Finding::pass(
            "accel",
            format!("QEMU{who} starts with KVM and CPU model {}", cpu_model(cpu)),
        ),
        Ok(Some(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            // The remedies fit a refused CPU, not a user who may not open /dev/kvm (which
            // the qemu-user findings explain).
            let remedies = if crate::qemu_advice::is_kvm_refusal(&stderr) {
                format!("; {}", crate::qemu_advice::remedies_for(&stderr))
            } else {
                String::new()
            };
            Finding::fail(
                "accel",
                format!(
                    "QEMU{who} fails under KVM with this CPU ({}): {}{remedies}",
                    crate::process::describe_exit(&output.status),
                    last_lines(&stderr, 3),
                ),
            )
        }
        Ok(None) => Finding::fail(
            "accel",
            format!("QEMU{who} did not start or stop within 30 s under KVM with this CPU"),
        ),
        Err(error) => Finding::fail("accel", format!("cannot run {binary}: {error}")),
    }
}

pub(super) fn probe_args(argv: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(machine) = option_value(argv, "-machine") {
        // Only the type and SMM matter; pflash and memory backends are not part of the probe.
        let kept: Vec<&str> = machine
            .split(',')
            .enumerate()
            .filter(|(index, part)| *index == 0 || part.starts_with("smm="))
            .map(|(_, part)| part)
            .collect();
        args.extend(["-machine".to_string(), kept.join(",")]);
    }
    for option in ["-accel", "-cpu", "-smp"] {
        if let Some(value) = option_value(argv, option) {
            args.extend([option.to_string(), value.to_string()]);
        }
    }
    args.extend(
        ["-m", "64M"]
            .into_iter()
            .chain(crate::qemu_caps::PAUSED_WITH_QMP_ON_STDIO)
            .map(str::to_string),
    );
    args
}

pub(super) fn option_value<'a>(argv: &'a [String], option: &str) -> Option<&'a str> {
    argv.iter()
        .position(|arg| arg == option)
        .and_then(|index| argv.get(index + 1))
        .map(String::as_str)
}

pub(super) fn cpu_model(cpu: &str) -> &str {
    cpu.split(',').next().unwrap_or(cpu)
}

pub(super) fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join(" / ")
}

/// What the profile asks of QEMU that this QEMU may lack, from its probed capabilities: a
/// missing feature fails, naming the first QEMU that has it.
pub(super) fn qemu_features(config: &VmConfig, facts: &HostFacts) -> Vec<Finding> {
    use crate::qemu_caps::Feature;
    let mut wanted = Vec::new();
    if let Some(audio) = &config.audio {
        if let crate::model::AudioBackend::PipeWire { .. } = audio.backend {
            wanted.push(("audio.backend = \"pipewire\"", Feature::PipeWireAudio));
        }
    }
    if wanted.is_empty() {
        return Vec::new();
    }
    let Some((caps, _)) = &facts.qemu_caps else {
        return match &facts.qemu_caps_problem {
            Some(problem) => vec![Finding::fail(
                "qemu-features",
                format!("cannot ask QEMU what it has: {problem}"),
            )],
            None => Vec::new(),
        };
    };
    wanted
        .into_iter()
        .map(|(key, feature)| {
            if caps.has(feature) {
                Finding::pass(
                    "qemu-features",
                    format!("{key}: QEMU {} has {}", caps.version, feature.describe()),
                )
            } else {
                Finding::fail(
                    "qemu-features",
                    format!(
                        "{key}: QEMU {} ({}) lacks {}, which QEMU {}.{} added; install QEMU {}.{} \
                         or later (Debian 12: bookworm-backports) or choose another setting",
                        caps.version,
                        caps.key.path.display(),
                        feature.describe(),
                        feature.since().major,
                        feature.since().minor,
                        feature.since().major,
                        feature.since().minor,
                    ),
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_keeps_the_machine_type_smm_accel_and_cpu_only() {
        let argv: Vec<String> = [
            "qemu-system-x86_64",
            "-machine",
            "q35,smm=on,pflash0=ovmf-code,pflash1=ovmf-vars,memory-backend=ram",
            "-accel",
            "kvm",
            "-cpu",
            "host,kvm=off,hv-relaxed",
            "-smp",
            "4,sockets=1,cores=4,threads=1",
            "-m",
            "16G",
            "-device",
            "vfio-pci,host=0000:01:00.0",
        ]
        .map(str::to_string)
        .to_vec();
        let args = probe_args(&argv);
        assert_eq!(
            &args[..8],
            [
                "-machine",
                "q35,smm=on",
                "-accel",
                "kvm",
                "-cpu",
                "host,kvm=off,hv-relaxed",
                "-smp",
                "4,sockets=1,cores=4,threads=1"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("vfio") || a == "16G"));
    }
}
