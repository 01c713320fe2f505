//! Stage 3: from the validated model to what will be done: the VM's paths, its firmware, the
//! QEMU argv and the CPUs QEMU's own threads use. Pure: host facts come in as data.

pub mod argv;
pub mod paths;
pub mod topology;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::firmware::{
    self, FirmwareError, FirmwareImage, FirmwareQuery, ImageFormat, ResolvedFirmware,
};
use crate::model::{
    smbios::smbios_problem, AudioBackend, CpuSet, Firmware, HostCpus, Listen, PciAddress,
    QemuIdentity, QemuUser, RemoteProtocol, VmConfig, SMBIOS_FIELDS,
};

pub use argv::BootFirmware;
pub use paths::{BaseDirs, PathsError, VmPaths};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    #[error(transparent)]
    Paths(#[from] PathsError),
    #[error("pinning.vcpus = {0}")]
    Auto(#[from] topology::AutoError),
    #[error("isolation.host_cpus = \"auto\" needs this host's online CPUs, and /sys/devices/system/cpu/online cannot be read")]
    NoOnlineCpus,
    #[error("isolation.host_cpus = \"auto\": the vCPUs take every online CPU and leave none to the host; pin fewer vCPUs")]
    NoHostCpus,
    #[error("{0}")]
    QemuUser(String),
    #[error("isolation.host_cpus includes CPUs {shared} that pinning.vcpus = \"auto\" chose; use host_cpus = \"auto\" or other CPUs")]
    HostCpusOverlap { shared: CpuSet },
    /// A `[[pci]]` virtual function this host cannot give: `key` is `pf` or `vf` of `pci[index]`.
    #[error("pci[{index}].{key}: {message}")]
    Sriov {
        index: usize,
        key: &'static str,
        message: String,
    },
}

/// Finds the firmware the profile asks for: its explicit files, or QEMU's descriptors.
pub fn resolve_firmware(
    config: &VmConfig,
    descriptor_dirs: &[PathBuf],
) -> Result<BootFirmware, FirmwareError> {
    match &config.firmware {
        Firmware::SeaBios => Ok(BootFirmware::SeaBios),
        Firmware::Ovmf {
            secure_boot,
            files: Some(files),
        } => Ok(BootFirmware::Ovmf(ResolvedFirmware {
            code: FirmwareImage {
                path: files.code.clone(),
                format: ImageFormat::from_extension(&files.code),
            },
            vars_template: FirmwareImage {
                path: files.vars_template.clone(),
                format: ImageFormat::from_extension(&files.vars_template),
            },
            secure_boot: *secure_boot,
            requires_smm: *secure_boot,
            source: "profile".to_string(),
        })),
        Firmware::Ovmf {
            secure_boot,
            files: None,
        } => {
            let query = FirmwareQuery {
                machine_type: config.machine.machine_type.clone(),
                secure_boot: *secure_boot,
            };
            let resolved = firmware::select(&query, descriptor_dirs)?;
            firmware::check_pairing(&resolved.code, &resolved.vars_template)?;
            Ok(BootFirmware::Ovmf(resolved))
        }
    }
}

/// What the plan needs to know about the host, read by the host layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub online_cpus: Option<CpuSet>,
    /// The readable files of `/sys/class/dmi/id`, by name (serials need root).
    pub dmi: BTreeMap<String, String>,
    /// `/dev/vhost-net` exists: virtio-net moves packets in the kernel.
    pub vhost_net: bool,
    /// The desktop user whose sound server the guest uses: `audio.user`, else the user who
    /// ran `sudo`, else vmrun's own user when that is not root.
    pub desktop_user: Option<DesktopUser>,
    pub topology: Option<topology::HostTopology>,
    /// Why `topology` is missing, for the error `auto` gives.
    pub topology_problem: Option<String>,
    /// Who QEMU runs as on this host.
    pub qemu_user: QemuUserFact,
    /// `qemu.binary` as found on PATH (None: not found, or not looked up).
    pub qemu_program: Option<PathBuf>,
    /// What that QEMU has (`qemu_caps`), and whether the cache answered; None: not asked.
    pub qemu_caps: Option<(crate::qemu_caps::QemuCaps, crate::qemu_caps::Source)>,
    /// Why QEMU could not be asked what it has.
    pub qemu_caps_problem: Option<String>,
    /// The VMs running now with real-time vCPUs: (name, their host CPUs).
    pub running_realtime: Vec<(String, CpuSet)>,
    /// The SR-IOV capability of each `[[pci]] pf`, or why it has none.
    pub sriov: BTreeMap<PciAddress, Result<SriovPf, String>>,
}

/// What a physical function's sysfs says about its SR-IOV capability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SriovPf {
    /// `sriov_totalvfs`: how many VFs it can have.
    pub total_vfs: u16,
    /// `sriov_numvfs`: how many it has now.
    pub num_vfs: u16,
    /// `sriov_offset` and `sriov_stride`: VF N's routing ID is the PF's + offset + N × stride.
    pub offset: u16,
    pub stride: u16,
}

impl SriovPf {
    /// The address of the PF's virtual function `index` (0-based), from the PF's routing ID
    /// (bus and devfn), as the kernel computes it (`pci_iov_virtfn_bus`/`_devfn`); None when
    /// it falls past bus 255.
    pub fn vf_address(&self, pf: PciAddress, index: u16) -> Option<PciAddress> {
        let pf_id = (u32::from(pf.bus) << 8) | (u32::from(pf.slot) << 3) | u32::from(pf.function);
        let id = pf_id + u32::from(self.offset) + u32::from(index) * u32::from(self.stride);
        (id <= 0xffff).then_some(PciAddress {
            domain: pf.domain,
            bus: (id >> 8) as u8,
            slot: ((id >> 3) & 0x1f) as u8,
            function: (id & 0x7) as u8,
        })
    }
}

/// The QEMU user as the host layer resolved it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum QemuUserFact {
    /// Not looked up (pure tests): the profile's value stays as it is.
    #[default]
    NotLooked,
    Root,
    User(QemuIdentity),
    /// Why the profile's user cannot be used here.
    Problem(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DesktopUser {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

/// One SMBIOS field as the guest will see it, and where the value came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SmbiosValue {
    #[serde(rename = "type")]
    pub table: u8,
    pub key: &'static str,
    #[serde(skip)]
    pub qemu: &'static str,
    pub value: String,
    /// `"profile"` or `"host"`.
    pub source: &'static str,
}

/// The sound server QEMU connects to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AudioServer {
    /// `pulseaudio` or `pipewire`: QEMU's backend.
    pub backend: &'static str,
    /// None when no desktop user could be told: `check` fails on it.
    pub server: Option<PathBuf>,
    pub cookie: Option<PathBuf>,
    pub user: Option<String>,
}

/// How to reach the remote display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteAccess {
    pub protocol: &'static str,
    /// A URI remote-viewer takes (`spice+unix:///run/vmrun/win11/spice.sock`).
    pub uri: String,
    /// The socket, for `listen = "unix"`.
    pub socket: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
}

impl RemoteAccess {
    pub fn of(config: &VmConfig, paths: &VmPaths) -> Option<Self> {
        let remote = config.display.remote.as_ref()?;
        let protocol = remote.protocol.as_str();
        Some(match &remote.listen {
            Listen::Unix => {
                let socket = match remote.protocol {
                    RemoteProtocol::Spice => paths.spice_socket.clone(),
                    RemoteProtocol::Vnc => paths.vnc_socket.clone(),
                };
                RemoteAccess {
                    protocol,
                    uri: format!("{protocol}+unix://{}", socket.display()),
                    socket: Some(socket),
                    password_file: remote.password_file.clone(),
                }
            }
            Listen::Tcp { addr, port } => {
                let host = match addr {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    std::net::IpAddr::V4(v4) => v4.to_string(),
                };
                RemoteAccess {
                    protocol,
                    uri: format!("{protocol}://{host}:{port}"),
                    socket: None,
                    password_file: remote.password_file.clone(),
                }
            }
        })
    }
}

/// The SMBIOS fields: the profile's, then (with `from_host`) the host's for the rest. A host
/// value QEMU could not take is left out.
pub fn smbios_values(config: &VmConfig, facts: &HostFacts) -> Vec<SmbiosValue> {
    let Some(smbios) = &config.smbios else {
        return Vec::new();
    };
    SMBIOS_FIELDS
        .iter()
        .filter_map(|field| {
            let (value, source) = match smbios.fields.get(field.key) {
                Some(value) => (value.clone(), "profile"),
                None if smbios.from_host => {
                    let value = facts.dmi.get(field.dmi)?.trim().to_string();
                    if smbios_problem(field.key, &value).is_some() {
                        return None;
                    }
                    (value, "host")
                }
                None => return None,
            };
            Some(SmbiosValue {
                table: field.table,
                key: field.key,
                qemu: field.qemu,
                value,
                source,
            })
        })
        .collect()
}

fn audio_server(config: &VmConfig, facts: &HostFacts) -> Option<AudioServer> {
    let desktop = facts.desktop_user.as_ref();
    let (server, cookie, user) = match &config.audio.as_ref()?.backend {
        AudioBackend::PulseAudio {
            server,
            cookie,
            user,
        } => (server, cookie, user),
        AudioBackend::PipeWire { server, user } => {
            return Some(AudioServer {
                backend: "pipewire",
                server: server.clone().or_else(|| {
                    desktop.map(|u| PathBuf::from(format!("/run/user/{}/pipewire-0", u.uid)))
                }),
                cookie: None,
                user: user.clone().or_else(|| desktop.map(|u| u.name.clone())),
            })
        }
        AudioBackend::None => return None,
    };
    Some(AudioServer {
        backend: "pulseaudio",
        server: server.clone().or_else(|| {
            desktop.map(|u| PathBuf::from(format!("/run/user/{}/pulse/native", u.uid)))
        }),
        cookie: cookie
            .clone()
            .or_else(|| desktop.map(|u| u.home.join(".config/pulse/cookie"))),
        user: user.clone().or_else(|| desktop.map(|u| u.name.clone())),
    })
}

/// QEMU's environment for its sound server. libpulse reads the cookie named in
/// `PULSE_COOKIE`: QEMU as root gets "Access denied" from a user's server without it (measured
/// with Debian's PulseAudio 16 and QEMU 7.2). QEMU's PipeWire backend has no option for the
/// server: libpipewire finds it as `PIPEWIRE_REMOTE` in `PIPEWIRE_RUNTIME_DIR`, which win
/// over whatever runtime directory vmrun was started with (root's, under sudo).
fn audio_env(audio: Option<&AudioServer>) -> Vec<(String, String)> {
    let Some(audio) = audio else {
        return Vec::new();
    };
    let mut env = Vec::new();
    if let Some(cookie) = &audio.cookie {
        env.push((
            "PULSE_COOKIE".to_string(),
            cookie.to_string_lossy().into_owned(),
        ));
    }
    if audio.backend == "pipewire" {
        if let Some((dir, name)) = audio
            .server
            .as_ref()
            .and_then(|server| Some((server.parent()?, server.file_name()?)))
        {
            env.push((
                "PIPEWIRE_RUNTIME_DIR".to_string(),
                dir.to_string_lossy().into_owned(),
            ));
            env.push((
                "PIPEWIRE_REMOTE".to_string(),
                name.to_string_lossy().into_owned(),
            ));
        }
    }
    env
}

/// What the argv needs from the host, resolved once.
pub struct Resolved {
    pub smbios: Vec<SmbiosValue>,
    pub vhost_net: bool,
    pub audio: Option<AudioServer>,
}

/// A VM resolved against this host: one value that `run`, `show`, `check` and `export` read.
/// The model stays as the profile wrote it (`written`: what `<metadata>` keeps, `"auto"`
/// rather than this host's answer); the resolved VM is made from it with the host's answers
/// filled in (the vCPUs' host CPUs and thread count for `vcpus = "auto"`, the hugepages' NUMA
/// node, the QEMU user, isolation's host CPUs), and is what it dereferences to.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedVm {
    written: VmConfig,
    resolved: VmConfig,
}

impl ResolvedVm {
    /// The VM as the profile wrote it.
    pub fn written(&self) -> &VmConfig {
        &self.written
    }

    /// The VM with this host's answers: every later stage sees explicit values.
    pub fn config(&self) -> &VmConfig {
        &self.resolved
    }
}

impl std::ops::Deref for ResolvedVm {
    type Target = VmConfig;

    fn deref(&self) -> &VmConfig {
        &self.resolved
    }
}

/// Makes the profile's host-dependent choices concrete: `pinning.vcpus = "auto"` becomes the
/// host CPU of each vCPU, and the guest's `threads` (unless the profile sets them) the host
/// cores' thread count. The model given is kept as it was written.
pub fn resolve(written: VmConfig, facts: &HostFacts) -> Result<ResolvedVm, PlanError> {
    let resolved = resolve_config(written.clone(), facts)?;
    Ok(ResolvedVm { written, resolved })
}

fn resolve_config(config: VmConfig, facts: &HostFacts) -> Result<VmConfig, PlanError> {
    let mut config = resolve_auto_pinning(config, facts)?;
    resolve_virtual_functions(&mut config, facts)?;
    config.qemu.user = match (&config.qemu.user, &facts.qemu_user) {
        (QemuUser::Root, _) | (_, QemuUserFact::Root) => QemuUser::Root,
        (_, QemuUserFact::User(identity)) => QemuUser::Resolved(identity.clone()),
        (_, QemuUserFact::Problem(problem)) => return Err(PlanError::QemuUser(problem.clone())),
        (user, QemuUserFact::NotLooked) => user.clone(),
    };
    config.machine.numa_node = hugepages_node(&config, facts);
    if let (Some(isolation), Some(pinning)) = (config.isolation.as_mut(), &config.pinning) {
        if isolation.host_cpus == HostCpus::Auto {
            let online = facts.online_cpus.as_ref().ok_or(PlanError::NoOnlineCpus)?;
            let rest = CpuSet::from_cpus(online.iter().filter(|c| !pinning.vcpus.contains(c)));
            if rest.is_empty() {
                return Err(PlanError::NoHostCpus);
            }
            isolation.host_cpus = HostCpus::List(rest);
        }
        if let HostCpus::List(host) = &isolation.host_cpus {
            let shared =
                CpuSet::from_cpus(pinning.vcpus.iter().copied().filter(|c| host.contains(*c)));
            if !shared.is_empty() {
                return Err(PlanError::HostCpusOverlap { shared });
            }
        }
    }
    Ok(config)
}

/// Gives each `[[pci]] pf` + `vf` its VF's address, computed from the PF's capability (so the
/// plan and the argv know it before the VF exists). A PF without SR-IOV, a `vf` past the PF's
/// total, a VF that another `[[pci]]` names by `address` and a PF passed itself next to its VF
/// are errors at the profile's key.
fn resolve_virtual_functions(config: &mut VmConfig, facts: &HostFacts) -> Result<(), PlanError> {
    // The devices passed by `address`, with their index in `[[pci]]`.
    let written: Vec<(usize, PciAddress)> = config
        .pci
        .iter()
        .enumerate()
        .filter(|(_, device)| device.sriov.is_none())
        .map(|(index, device)| (index, device.address))
        .collect();
    for (index, device) in config.pci.iter_mut().enumerate() {
        let Some(vf) = &device.sriov else {
            continue;
        };
        let error = |key, message: String| PlanError::Sriov {
            index,
            key,
            message,
        };
        // Binding the PF to vfio-pci runs its driver's remove, which disables SR-IOV and
        // destroys the VF (as an mdev parent must stay on the driver that creates its devices).
        if let Some((passed, _)) = written.iter().find(|(_, address)| *address == vf.pf) {
            return Err(error(
                "pf",
                format!(
                    "{} is pci[{passed}] too: binding a PF to vfio-pci disables SR-IOV and destroys \
                     its VFs; remove the [[pci]] that passes the PF, or this VF",
                    vf.pf
                ),
            ));
        }
        let pf = match facts.sriov.get(&vf.pf) {
            Some(Ok(pf)) => pf,
            Some(Err(problem)) => return Err(error("pf", problem.clone())),
            None => {
                return Err(error(
                    "pf",
                    format!("{}'s SR-IOV capability was not read", vf.pf),
                ))
            }
        };
        if vf.index >= pf.total_vfs {
            return Err(error(
                "vf",
                format!(
                    "{} has {} virtual functions (sriov_totalvfs), numbered 0 to {}; write a vf below {}",
                    vf.pf,
                    pf.total_vfs,
                    pf.total_vfs.saturating_sub(1),
                    pf.total_vfs
                ),
            ));
        }
        let address = pf.vf_address(vf.pf, vf.index).ok_or_else(|| {
            error(
                "vf",
                format!(
                    "VF {} of {} would lie past bus ff (sriov_offset {}, sriov_stride {}); write a smaller vf",
                    vf.index, vf.pf, pf.offset, pf.stride
                ),
            )
        })?;
        if written.iter().any(|(_, passed)| *passed == address) {
            return Err(error(
                "vf",
                format!(
                    "VF {} of {} is {address}, which another [[pci]] passes by `address`; remove one",
                    vf.index, vf.pf
                ),
            ));
        }
        device.address = address;
    }
    Ok(())
}

/// On a host with several NUMA nodes, the node all pinned vCPUs sit on: hugepages are
/// reserved there and guest RAM bound to it, so the vCPUs never reach across to another
/// node's memory. None on one-node hosts, without hugepages, or with vCPUs on several nodes.
fn hugepages_node(config: &VmConfig, facts: &HostFacts) -> Option<usize> {
    config.machine.hugepages?;
    let topology = facts.topology.as_ref()?;
    if topology.nodes.len() < 2 {
        return None;
    }
    let pinning = config.pinning.as_ref()?;
    let mut nodes = pinning.vcpus.iter().map(|cpu| topology.node_of(*cpu));
    let first = nodes.next()??;
    nodes.all(|node| node == Some(first)).then_some(first)
}

fn resolve_auto_pinning(mut config: VmConfig, facts: &HostFacts) -> Result<VmConfig, PlanError> {
    let Some(pinning) = config.pinning.as_mut().filter(|p| p.auto) else {
        return Ok(config);
    };
    let host = facts.topology.as_ref().ok_or_else(|| {
        topology::AutoError::NoTopology(
            facts
                .topology_problem
                .clone()
                .unwrap_or_else(|| "not read".to_string()),
        )
    })?;
    let guest = config.cpu.topology;
    let placement = topology::auto(
        host,
        topology::AutoRequest {
            cores: (guest.sockets * guest.cores) as usize,
            threads: config.cpu.threads_given.then_some(guest.threads as usize),
        },
    )?;
    pinning.vcpus = placement.vcpus;
    config.cpu.topology.threads = placement.threads as u32;
    Ok(config)
}

/// The resolved placement, as `show --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PinningView {
    /// The host CPU of each vCPU, in vCPU order.
    pub vcpus: Vec<usize>,
    /// The CPUs of QEMU's other threads, as a CPU list (null when the online CPUs are unknown).
    pub emulator: Option<String>,
}

/// Everything `run` needs, computed without touching the host.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub name: String,
    pub profile: PathBuf,
    pub accel: &'static str,
    pub firmware: Option<ResolvedFirmware>,
    pub paths: VmPaths,
    /// The VM's own VARS copy (OVMF only).
    pub vars: Option<PathBuf>,
    pub argv: Vec<String>,
    /// What vmrun opens and hands to QEMU on the descriptors its argv names.
    pub passed_files: Vec<argv::PassedFile>,
    /// Who QEMU runs as; None for root (`qemu.user = "root"`).
    pub qemu_user: Option<QemuIdentity>,
    /// The binary the preflight found, executed by this path: QEMU's own user would otherwise
    /// walk PATH itself, failing (EACCES) through directories it may not enter. None: argv[0].
    #[serde(skip)]
    pub qemu_program: Option<PathBuf>,
    /// QEMU's locked-memory limit: VFIO pins all guest RAM (plus the devices' own mappings).
    pub memlock_bytes: Option<u64>,
    /// Added to QEMU's environment (`PULSE_COOKIE`).
    pub env: Vec<(String, String)>,
    /// What the guest's SMBIOS tables will say.
    pub smbios: Vec<SmbiosValue>,
    pub audio: Option<AudioServer>,
    pub remote: Option<RemoteAccess>,
    /// The CPUs QEMU starts on (so every thread it creates inherits them); vCPU threads and
    /// iothreads move to their own CPUs afterwards. None without `[pinning]`.
    #[serde(skip)]
    pub emulator_cpus: Option<CpuSet>,
    /// Where the vCPUs and the emulator run; None without `[pinning]`.
    pub pinning: Option<PinningView>,
}

impl Plan {
    pub fn new(
        config: &VmConfig,
        firmware: &BootFirmware,
        base: &BaseDirs,
        facts: &HostFacts,
    ) -> Result<Self, PlanError> {
        let paths = VmPaths::new(base, &config.name)?;
        let resolved = Resolved {
            smbios: smbios_values(config, facts),
            vhost_net: facts.vhost_net,
            audio: audio_server(config, facts),
        };
        let argv::QemuCommand { argv, files } = argv::build(config, firmware, &paths, &resolved);
        let env = audio_env(resolved.audio.as_ref());
        let (firmware, vars) = match firmware {
            BootFirmware::Ovmf(resolved) => (
                Some(resolved.clone()),
                Some(paths.vars(resolved.vars_template.format)),
            ),
            BootFirmware::SeaBios => (None, None),
        };
        let emulator_cpus = facts
            .online_cpus
            .as_ref()
            .and_then(|online| emulator_cpus(config, online));
        Ok(Plan {
            pinning: config.pinning.as_ref().map(|p| PinningView {
                vcpus: p.vcpus.clone(),
                emulator: emulator_cpus
                    .as_ref()
                    .or(p.emulator.as_ref())
                    .map(CpuSet::to_string),
            }),
            name: config.name.to_string(),
            profile: config.profile_path.clone(),
            accel: config.machine.accel.as_str(),
            firmware,
            vars,
            emulator_cpus,
            remote: RemoteAccess::of(config, &paths),
            paths,
            argv,
            passed_files: files,
            qemu_user: config.qemu.user.identity().cloned(),
            qemu_program: facts.qemu_program.clone(),
            memlock_bytes: memlock_bytes(config),
            env,
            smbios: resolved.smbios,
            audio: resolved.audio,
        })
    }
}

/// What an unprivileged QEMU may lock: with a VFIO device all guest RAM is pinned, plus 1 GiB
/// for the devices' own mappings (libvirt's allowance). Root QEMU is not limited.
fn memlock_bytes(config: &VmConfig) -> Option<u64> {
    (!config.pci.is_empty() && config.qemu.user.identity().is_some())
        .then(|| config.machine.memory.bytes() + (1 << 30))
}

/// The CPUs QEMU's non-vCPU threads run on: the profile's emulator set, else every online CPU
/// that no vCPU is pinned to (all of them when the vCPUs take every CPU).
pub fn emulator_cpus(config: &VmConfig, online: &CpuSet) -> Option<CpuSet> {
    let pinning = config.pinning.as_ref()?;
    if let Some(set) = &pinning.emulator {
        return Some(set.clone());
    }
    let rest = CpuSet::from_cpus(online.iter().filter(|cpu| !pinning.vcpus.contains(cpu)));
    Some(if rest.is_empty() {
        online.clone()
    } else {
        rest
    })
}
