//! Stage 3: from the validated model to what will be done: the VM's paths, its firmware and
//! the QEMU argv. Host preparation steps join here when the host layer exists.

pub mod argv;
pub mod paths;

use std::path::PathBuf;

use serde::Serialize;

use crate::firmware::{
    self, FirmwareError, FirmwareImage, FirmwareQuery, ImageFormat, ResolvedFirmware,
};
use crate::model::{Firmware, VmConfig};

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

/// Everything `run` needs, computed without touching the host.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub name: String,
    pub profile: PathBuf,
    pub accel: &'static str,
    pub firmware: Option<ResolvedFirmware>,
    pub paths: VmPaths,
    pub argv: Vec<String>,
}

impl Plan {
    pub fn new(
        config: &VmConfig,
        firmware: &BootFirmware,
        base: &BaseDirs,
    ) -> Result<Self, PlanError> {
        let vars_format = match firmware {
            BootFirmware::Ovmf(resolved) => resolved.vars_template.format,
            BootFirmware::SeaBios => ImageFormat::Raw,
        };
        let paths = VmPaths::new(base, &config.name, vars_format)?;
        let argv = argv::build(config, firmware, &paths);
        Ok(Plan {
            name: config.name.to_string(),
            profile: config.profile_path.clone(),
            accel: config.machine.accel.as_str(),
            firmware: match firmware {
                BootFirmware::Ovmf(resolved) => Some(resolved.clone()),
                BootFirmware::SeaBios => None,
            },
            paths,
            argv,
        })
    }
}
