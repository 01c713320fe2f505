//! Preflight: read-only findings about this host for a VM, one pass/warn/fail line each.
//! `check` prints them all; `run` refuses to start on any failure. The host steps judge their
//! own part (devices, groups, ROMs, hugepages, hooks, the Looking Glass file); this module adds
//! what is not a host change: QEMU and its accelerator, firmware, CPUs, capabilities, device
//! nodes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::firmware::{self, FirmwareImage};
use crate::host::context::HostContext;
use crate::host::steps::HostStep;
use crate::model::{Accel, QemuIdentity, VmConfig};
use crate::plan::{BootFirmware, HostFacts, Plan, VmPaths};

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
    findings.extend(interrupt_remapping(config, &host.root));
    findings.extend(ignore_msrs(config, &host.root));
    findings.extend(legacy_interrupts(config, &host.root));
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

/// Who QEMU runs as, and whether that user reaches what QEMU opens itself (vmrun passes the
/// disks, firmware and VARS as descriptors; the device nodes are handed over for the run).
fn qemu_user_findings(config: &VmConfig, root: &Sysroot, qemu: Option<&Path>) -> Vec<Finding> {
    use crate::host::identity::{reach, Access};
    use crate::model::QemuUser;
    let identity = match &config.qemu.user {
        QemuUser::Resolved(identity) => identity,
        QemuUser::Root => {
            return vec![Finding::warn(
                "qemu-user",
                "QEMU runs as root (qemu.user = \"root\"): a bug in any emulated device gives \
                 the guest the host; remove the key to run it unprivileged",
            )]
        }
        // Not resolved against this host (a plan made without host facts).
        _ => return Vec::new(),
    };
    let mut findings = vec![if identity.source == "fallback" {
        Finding::warn(
            "qemu-user",
            format!(
                "QEMU runs as {} (uid {}): no desktop user ran vmrun through sudo or pkexec, and \
                 {} may be shared with other daemons; set qemu.user to an account of its own",
                identity.name, identity.uid, identity.name
            ),
        )
    } else {
        Finding::pass(
            "qemu-user",
            format!(
                "QEMU runs as {} (uid {}, gid {}, from {}) with no capabilities, no_new_privs \
                 and its files passed as descriptors",
                identity.name, identity.uid, identity.gid, identity.source
            ),
        )
    }];
    let mut must_reach: Vec<(String, std::path::PathBuf, Access)> = Vec::new();
    if let Some(binary) = qemu {
        must_reach.push(("qemu.binary".into(), binary.to_path_buf(), Access::Execute));
    }
    if config.machine.accel == Accel::Kvm {
        must_reach.push(("KVM".into(), root.path("/dev/kvm"), Access::ReadWrite));
    }
    for (index, device) in config.pci.iter().enumerate() {
        if let Some(rom) = &device.romfile {
            must_reach.push((format!("pci[{index}].romfile"), rom.clone(), Access::Read));
        }
    }
    if let Some(file) = config
        .display
        .remote
        .as_ref()
        .and_then(|r| r.password_file.as_ref())
    {
        must_reach.push(("display.password_file".into(), file.clone(), Access::Read));
    }
    if let Some(lg) = config.looking_glass.as_ref() {
        let real = root.path(&lg.path.to_string_lossy());
        // A file vmrun creates is made QEMU's; one that exists must already be reachable.
        if real.exists() || lg.is_kvmfr() {
            must_reach.push(("looking_glass.path".into(), real, Access::ReadWrite));
        }
    }
    for (what, path, access) in must_reach {
        findings.push(match reach(identity, &path, access) {
            Ok(()) => Finding::pass(
                "qemu-user",
                format!("{} reaches {what} ({})", identity.name, path.display()),
            ),
            Err(problem) => Finding::fail(
                "qemu-user",
                format!(
                    "{what}: {problem}; QEMU runs as {} and opens it itself (make it readable \
                     to {}, move it, or set qemu.user)",
                    identity.name, identity.name
                ),
            ),
        });
    }
    findings
}

/// The sound server's socket and cookie, and the directories above QEMU's own runtime
/// subdirectory (where it creates the remote display's socket), as QEMU's user sees them.
fn qemu_user_reaches_runtime(plan: &Plan) -> Vec<Finding> {
    use crate::host::identity::{reach, Access};
    let Some(identity) = &plan.qemu_user else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    if let Some(audio) = &plan.audio {
        checks.extend(
            audio
                .server
                .iter()
                .map(|server| ("audio server", server.clone(), Access::ReadWrite)),
        );
        if audio.user.as_deref() != Some(identity.name.as_str()) {
            checks.extend(
                audio
                    .cookie
                    .iter()
                    .map(|cookie| ("audio cookie", cookie.clone(), Access::Read)),
            );
        }
    }
    // vmrun makes the base runtime directory passable itself; the ones above it are the
    // host's.
    if plan.remote.as_ref().is_some_and(|r| r.socket.is_some()) {
        if let Some(above) = plan
            .paths
            .runtime_dir
            .parent()
            .and_then(|base| base.parent())
        {
            checks.push(("the runtime directory", above.to_path_buf(), Access::Search));
        }
    }
    checks
        .into_iter()
        .filter(|(_, path, _)| path.exists())
        .filter_map(|(what, path, access)| {
            let problem = reach(identity, &path, access).err()?;
            Some(Finding::fail(
                "qemu-user",
                format!("{what}: {problem}; QEMU runs as {}", identity.name),
            ))
        })
        .collect()
}

/// The sound server must be up when QEMU starts (QEMU refuses to start without it), and
/// QEMU needs its PulseAudio module, which Debian ships apart.
fn audio_findings(plan: &Plan, depth: Depth) -> Vec<Finding> {
    use std::os::unix::fs::FileTypeExt;
    let Some(audio) = &plan.audio else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    let Some(server) = &audio.server else {
        return vec![Finding::fail(
            "audio",
            "cannot tell whose sound server to use: vmrun was not started through sudo by a desktop user; \
             set audio.user (or audio.server and audio.cookie)",
        )];
    };
    let who = audio
        .user
        .as_deref()
        .map(|user| format!(" of {user}"))
        .unwrap_or_default();
    findings.push(match std::fs::metadata(server) {
        Ok(meta) if meta.file_type().is_socket() => Finding::pass(
            "audio",
            format!(
                "the PulseAudio/PipeWire server{who} listens on {}",
                server.display()
            ),
        ),
        _ => Finding::fail(
            "audio",
            format!(
                "no sound server{who} at {}: the desktop user must be logged in with PipeWire or PulseAudio \
                 (or PipeWire's pipewire-pulse) running; QEMU refuses to start without it",
                server.display()
            ),
        ),
    });
    if let Some(cookie) = &audio.cookie {
        if !cookie.is_file() {
            findings.push(Finding::warn(
                "audio",
                format!(
                    "no cookie at {}: PulseAudio will refuse QEMU (\"Access denied\"); PipeWire needs none",
                    cookie.display()
                ),
            ));
        }
    }
    if depth == Depth::Check {
        findings.push(qemu_audio_module(plan));
    }
    findings
}

/// QEMU lists only the audio drivers it can load (`-audiodev help`; a module whose library
/// is missing makes QEMU 10 fail the whole list).
fn qemu_audio_module(plan: &Plan) -> Finding {
    let binary = plan
        .qemu_program
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| plan.argv[0].clone());
    let (driver, name, packages) = match plan.audio.as_ref().map(|a| a.backend) {
        Some("pipewire") => ("pipewire", "PipeWire", "qemu-system-gui libpipewire-0.3-0"),
        _ => ("pa", "PulseAudio", "qemu-system-gui"),
    };
    let output = Command::new(&binary)
        .args(["-audiodev", "help"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output)
            if String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|l| l.trim() == driver) =>
        {
            Finding::pass("audio", format!("QEMU has its {name} backend ({driver})"))
        }
        Ok(output) => Finding::fail(
            "audio",
            format!(
                "QEMU cannot load its {name} backend (`-audiodev help` has no `{driver}`{}): \
                 Debian/Ubuntu: apt install {packages}",
                last_lines(&String::from_utf8_lossy(&output.stderr), 1)
                    .split_once("help: ")
                    .map(|(_, why)| format!("; {why}"))
                    .unwrap_or_default()
            ),
        ),
        Err(error) => Finding::fail("audio", format!("cannot run {binary}: {error}")),
    }
}

/// What the profile asks of QEMU that this QEMU may lack, from its probed capabilities: a
/// missing feature fails, naming the first QEMU that has it.
fn qemu_features(config: &VmConfig, facts: &HostFacts) -> Vec<Finding> {
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

fn display_findings(plan: &Plan) -> Vec<Finding> {
    let Some(remote) = &plan.remote else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    let protocol = remote.protocol.to_uppercase();
    match &remote.socket {
        Some(socket) if socket.as_os_str().len() > crate::plan::paths::MAX_SOCKET_PATH => {
            findings.push(Finding::fail(
                "display",
                format!(
                    "the {protocol} socket path {} is too long for a Unix socket; use a shorter --runtime-dir",
                    socket.display()
                ),
            ))
        }
        Some(socket) => findings.push(Finding::pass(
            "display",
            format!(
                "{protocol} on {}: `remote-viewer {}`; from another machine forward it with \
                 ssh -L /tmp/vm.sock:{} HOST",
                socket.display(),
                remote.uri,
                socket.display()
            ),
        )),
        None => findings.push(Finding::pass(
            "display",
            format!("{protocol} on the network: `remote-viewer {}`", remote.uri),
        )),
    }
    if let Some(file) = &remote.password_file {
        match std::fs::read(file) {
            Err(error) => findings.push(Finding::fail(
                "display",
                format!("display.password_file {}: {error}", file.display()),
            )),
            Ok(bytes) if bytes.is_empty() => findings.push(Finding::fail(
                "display",
                format!("display.password_file {} is empty", file.display()),
            )),
            Ok(bytes) => {
                if bytes.ends_with(b"\n") {
                    findings.push(Finding::warn(
                        "display",
                        format!(
                            "display.password_file {} ends with a newline, which QEMU takes as part of the password \
                             (write it with `printf %s PASSWORD`)",
                            file.display()
                        ),
                    ));
                }
                if remote.protocol == "vnc" && bytes.len() > 8 {
                    findings.push(Finding::warn(
                        "display",
                        "VNC passwords are cut to 8 characters, and VNC is not encrypted: prefer SPICE or an SSH tunnel",
                    ));
                }
            }
        }
    }
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

/// The QEMU `check` found, with the version it reports.
fn qemu_version(path: &Path) -> Finding {
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

fn accelerator(accel: Accel, root: &Sysroot) -> Finding {
    match accel {
        Accel::Tcg => Finding::new(
            Status::Pass,
            "accel",
            "TCG (software emulation) was asked for: no /dev/kvm needed, but the guest runs many times slower",
        ),
        Accel::Kvm => {
            let kvm = root.path("/dev/kvm");
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
    let vars = paths.vars(resolved.vars_template.format);
    if vars.exists() {
        let copy = FirmwareImage {
            path: vars.clone(),
            format: resolved.vars_template.format,
        };
        match (firmware::flash_size(&copy), firmware::flash_size(&resolved.vars_template)) {
            (Ok(have), Ok(want)) if have == want => findings.push(Finding::new(
                Status::Pass,
                "vars",
                format!("the VM's VARS copy {} matches the firmware", vars.display()),
            )),
            (Ok(have), Ok(want)) => findings.push(Finding::new(
                Status::Fail,
                "vars",
                format!(
                    "the VM's VARS copy {} is {have} bytes but this firmware's VARS are {want} bytes (the firmware \
                     changed build); move the copy away to start from the template (boot entries are lost)",
                    vars.display()
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
                vars.display()
            ),
        ));
    }
    findings
}

fn cpu_findings(config: &VmConfig, facts: &HostFacts) -> Vec<Finding> {
    let Some(pinning) = &config.pinning else {
        return vec![Finding::new(
            Status::Warn,
            "pinning",
            "no [pinning]: vCPU threads float over all host CPUs (latency spikes in games)",
        )];
    };
    let Some(online) = &facts.online_cpus else {
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

fn read_trimmed(root: &Sysroot, path: &str) -> Option<String> {
    std::fs::read_to_string(root.path(path))
        .ok()
        .map(|t| t.trim().to_string())
}

/// Without interrupt remapping a passed device can send interrupts (MSIs) the host takes for
/// its own; vfio refuses such hosts unless told to allow it. Remapped interrupts show up in
/// /proc/interrupts as `IR-PCI-MSI`, `IR-IO-APIC`, on Intel and AMD alike.
fn interrupt_remapping(config: &VmConfig, root: &Sysroot) -> Option<Finding> {
    if config.pci.is_empty() {
        return None;
    }
    let interrupts = read_trimmed(root, "/proc/interrupts")?;
    if interrupts.contains(" IR-") {
        return Some(Finding::pass(
            "interrupts",
            "interrupt remapping is on (IR- interrupt chips in /proc/interrupts)",
        ));
    }
    let allowed = read_trimmed(
        root,
        "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
    )
    .is_some_and(|v| v == "Y" || v == "1");
    Some(if allowed {
        Finding::warn(
            "interrupts",
            "interrupt remapping is off and vfio_iommu_type1.allow_unsafe_interrupts=1 assigns devices anyway: the guest can then make its devices send interrupts the host takes as its own (MSI injection), so a guest you do not trust could attack the host. Turning on interrupt remapping (VT-d / AMD-Vi with x2APIC in the firmware setup) removes the need for it",
        )
    } else {
        Finding::warn(
            "interrupts",
            "interrupt remapping looks off (no IR- interrupt chips in /proc/interrupts): vfio then refuses to assign devices and QEMU fails. Turn it on in the firmware setup (VT-d / AMD-Vi, x2APIC); vfio_iommu_type1.allow_unsafe_interrupts=1 works around it at a price: the guest could inject interrupts into the host, acceptable only for a guest you trust",
        )
    })
}

/// Windows reads model-specific registers KVM does not emulate; with ignore_msrs off KVM
/// injects a fault and Windows (or a game's anti-cheat) crashes with a blue screen.
fn ignore_msrs(config: &VmConfig, root: &Sysroot) -> Option<Finding> {
    let windows = !config.cpu.hyperv.is_empty();
    if !windows || config.machine.accel != Accel::Kvm {
        return None;
    }
    let value = read_trimmed(root, "/sys/module/kvm/parameters/ignore_msrs")?;
    (value == "N" || value == "0").then(|| {
        Finding::warn(
            "msrs",
            "kvm.ignore_msrs is off and this is a Windows guest (cpu.hyperv): Windows and some games read MSRs KVM does not emulate and crash (SYSTEM_THREAD_EXCEPTION_NOT_HANDLED); set kvm.ignore_msrs=1 (and kvm.report_ignored_msrs=0 to keep the log quiet) on the kernel command line or in /etc/modprobe.d",
        )
    })
}

/// Whether a device's PCI capability list (read from its config space) has MSI or MSI-X.
fn has_msi(config_space: &[u8]) -> Option<bool> {
    const STATUS_CAP_LIST: u8 = 0x10;
    if config_space.len() < 64 {
        return None;
    }
    if config_space[0x06] & STATUS_CAP_LIST == 0 {
        return Some(false);
    }
    let mut pointer = usize::from(config_space[0x34] & 0xfc);
    // A malformed list may loop; a real one has far fewer than 48 entries.
    for _ in 0..48 {
        if pointer < 0x40 || pointer + 1 >= config_space.len() {
            break;
        }
        if matches!(config_space[pointer], 0x05 | 0x11) {
            return Some(true);
        }
        pointer = usize::from(config_space[pointer + 1] & 0xfc);
    }
    Some(false)
}

/// A passed function without MSI or MSI-X uses a legacy interrupt line, shared and slower
/// (the crackling HDMI audio of many guides).
fn legacy_interrupts(config: &VmConfig, root: &Sysroot) -> Vec<Finding> {
    config
        .pci
        .iter()
        .filter_map(|device| {
            let bytes = std::fs::read(root.path(&format!(
                "/sys/bus/pci/devices/{}/config",
                device.address
            )))
            .ok()?;
            (!has_msi(&bytes)?).then(|| {
                Finding::warn(
                    "interrupts",
                    format!(
                        "{} has neither MSI nor MSI-X: it can only use a legacy interrupt line, shared with other devices and slower in the guest",
                        device.address
                    ),
                )
            })
        })
        .collect()
}

/// Under cgroup v2, a thread can only be placed within its cgroup's cpuset:
/// `sched_setaffinity` to a CPU outside it fails with EINVAL, and QEMU is in vmrun's cgroup.
fn cgroup_cpus(config: &VmConfig, root: &Sysroot) -> Option<Finding> {
    let pinning = config.pinning.as_ref()?;
    let (cgroup, allowed) = crate::host::own_cgroup_cpus(root)?;
    let outside: Vec<usize> = pinning
        .vcpus
        .iter()
        .copied()
        .filter(|cpu| !allowed.contains(*cpu))
        .collect();
    Some(if outside.is_empty() {
        Finding::pass(
            "cgroup",
            format!("vmrun's cgroup {cgroup} allows CPUs {allowed}, every vCPU's included"),
        )
    } else {
        Finding::fail(
            "cgroup",
            format!(
                "vmrun's cgroup {cgroup} allows only CPUs {allowed}, so vCPUs cannot be pinned to {} (sched_setaffinity would fail with EINVAL); start vmrun in a cgroup that allows them, e.g. `systemd-run --scope --slice=machine.slice vmrun run PROFILE`",
                crate::model::CpuSet::from_cpus(outside)
            ),
        )
    })
}

/// A spinning SCHED_RR/FIFO vCPU starves every normal thread on its CPU: QEMU's main loop,
/// vmrun, and the host's own work.
fn realtime_sharing(config: &VmConfig, facts: &HostFacts) -> Vec<Finding> {
    let Some(pinning) = config
        .pinning
        .as_ref()
        .filter(|p| p.scheduler.is_realtime())
    else {
        return Vec::new();
    };
    let vcpus = crate::model::CpuSet::from_cpus(pinning.vcpus.iter().copied());
    let mut findings = Vec::new();
    let emulator = facts
        .online_cpus
        .as_ref()
        .and_then(|online| crate::plan::emulator_cpus(config, online));
    if let Some(emulator) = emulator {
        let shared: Vec<usize> = vcpus.iter().filter(|c| emulator.contains(*c)).collect();
        if !shared.is_empty() {
            findings.push(Finding::warn(
                "realtime",
                format!(
                    "real-time vCPUs share CPUs {} with QEMU's other threads (emulator CPUs {emulator}): a spinning SCHED_{} vCPU starves QEMU's main loop there; give pinning.emulator other CPUs",
                    crate::model::CpuSet::from_cpus(shared),
                    pinning.scheduler.as_str().to_uppercase()
                ),
            ));
        }
    }
    for (other, cpus) in &facts.running_realtime {
        if *other == config.name.as_str() {
            continue;
        }
        let shared: Vec<usize> = vcpus.iter().filter(|c| cpus.contains(*c)).collect();
        if !shared.is_empty() {
            findings.push(Finding::fail(
                "realtime",
                format!(
                    "real-time vCPUs would share CPUs {} with the real-time vCPUs of the running VM {other} \
                     (CPUs {cpus}): two spinning real-time threads on one CPU take turns, each stalling \
                     the other's guest; pin this VM to other CPUs",
                    crate::model::CpuSet::from_cpus(shared)
                ),
            ));
        }
    }
    if let Some(crate::model::HostCpus::List(host_cpus)) =
        config.isolation.as_ref().map(|i| &i.host_cpus)
    {
        let shared: Vec<usize> = vcpus.iter().filter(|c| host_cpus.contains(*c)).collect();
        if !shared.is_empty() {
            findings.push(Finding::fail(
                "realtime",
                format!(
                    "real-time vCPUs share CPUs {} with the host's CPUs {host_cpus}: the host would starve there",
                    crate::model::CpuSet::from_cpus(shared)
                ),
            ));
        }
    }
    findings
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

fn probe_args(argv: &[String]) -> Vec<String> {
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
        [
            "-m",
            "64M",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-S",
            "-qmp",
            "stdio",
        ]
        .map(str::to_string),
    );
    args
}

fn option_value<'a>(argv: &'a [String], option: &str) -> Option<&'a str> {
    argv.iter()
        .position(|arg| arg == option)
        .and_then(|index| argv.get(index + 1))
        .map(String::as_str)
}

fn cpu_model(cpu: &str) -> &str {
    cpu.split(',').next().unwrap_or(cpu)
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msi_is_found_by_walking_the_capability_list() {
        let mut space = vec![0u8; 256];
        space[0x06] = 0x10;
        space[0x34] = 0x60;
        space[0x60] = 0x01; // power management
        space[0x61] = 0x68;
        space[0x68] = 0x05; // MSI
        assert_eq!(has_msi(&space), Some(true));
        space[0x68] = 0x10; // PCI Express, last
        assert_eq!(has_msi(&space), Some(false));
        space[0x69] = 0x60; // loops back
        assert_eq!(has_msi(&space), Some(false));
        space[0x06] = 0;
        assert_eq!(has_msi(&space), Some(false));
        assert_eq!(has_msi(&space[..32]), None);
    }

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
