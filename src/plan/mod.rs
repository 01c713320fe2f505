//! Stage 3: from the validated model to what will be done: the VM's paths, its firmware, the
//! QEMU argv and the CPUs QEMU's own threads use. Pure: host facts come in as data.

pub mod argv;
pub mod paths;

use std::path::PathBuf;

use serde::Serialize;

use crate::firmware::{
    self, FirmwareError, FirmwareImage, FirmwareQuery, ImageFormat, ResolvedFirmware,
};
use crate::model::{CpuSet, Firmware, VmConfig};

pub use argv::BootFirmware;
pub use paths::{BaseDirs, PathsError, VmPaths};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    #[error(transparent)]
    Paths(#[from] PathsError),
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
    /// The CPUs QEMU starts on (so every thread it creates inherits them); vCPU threads and
    /// iothreads move to their own CPUs afterwards. None without `[pinning]`.
    #[serde(skip)]
    pub emulator_cpus: Option<CpuSet>,
}

impl Plan {
    pub fn new(
        config: &VmConfig,
        firmware: &BootFirmware,
        base: &BaseDirs,
        facts: &HostFacts,
    ) -> Result<Self, PlanError> {
        let paths = VmPaths::new(base, &config.name)?;
        let argv = argv::build(config, firmware, &paths);
        let (firmware, vars) = match firmware {
            BootFirmware::Ovmf(resolved) => (
                Some(resolved.clone()),
                Some(paths.vars(resolved.vars_template.format)),
            ),
            BootFirmware::SeaBios => (None, None),
        };
        Ok(Plan {
            name: config.name.to_string(),
            profile: config.profile_path.clone(),
            accel: config.machine.accel.as_str(),
            firmware,
            vars,
            emulator_cpus: facts
                .online_cpus
                .as_ref()
                .and_then(|online| emulator_cpus(config, online)),
            paths,
            argv,
        })
    }
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
