//! The firmware files and the VM's VARS copy.

use super::{Finding, Status};
use crate::firmware::{self, FirmwareImage};
use crate::plan::{BootFirmware, VmPaths};

pub(super) fn firmware_findings(firmware: &BootFirmware, paths: &VmPaths) -> Vec<Finding> {
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
