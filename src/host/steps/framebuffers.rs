//! Single-GPU: the firmware's framebuffer (EFI, simple, VESA) lets go of the GPU's memory.

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::VmPaths;

const FRAMEBUFFER_DRIVERS: &[&str] = &["efi-framebuffer", "simple-framebuffer", "vesa-framebuffer"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnbindFramebuffers {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindPlatform {
    pub driver: String,
    pub device: String,
}

impl UnbindFramebuffers {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        config.single_gpu.as_ref().map(|_| UnbindFramebuffers {})
    }
}

fn driver_link(host: &HostContext, device: &str) -> std::path::PathBuf {
    host.root
        .path(&format!("/sys/bus/platform/devices/{device}/driver"))
}

impl Step for UnbindFramebuffers {
    fn describe(&self) -> String {
        "unbind efi-framebuffer / simple-framebuffer devices if bound".into()
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        for driver in FRAMEBUFFER_DRIVERS {
            let dir = host
                .root
                .path(&format!("/sys/bus/platform/drivers/{driver}"));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut devices: Vec<String> = entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_type().is_ok_and(|t| t.is_symlink())
                        && e.file_name().to_string_lossy().contains('.')
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            devices.sort();
            for device in devices {
                log.info(&format!("unbinding {device} from {driver}"));
                let link = driver_link(host, &device);
                record.change(
                    BindPlatform {
                        driver: driver.to_string(),
                        device: device.clone(),
                    },
                    || {
                        host.write(
                            &format!("/sys/bus/platform/drivers/{driver}/unbind"),
                            &device,
                        )?;
                        if host.wait_until(|| link.symlink_metadata().is_err()) {
                            Ok(())
                        } else {
                            Err(StepError::Other(format!(
                                "{device} stayed bound to {driver}"
                            )))
                        }
                    },
                )?;
            }
        }
        Ok(())
    }
}

impl Undoable for BindPlatform {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let link = driver_link(host, &self.device);
        if link.symlink_metadata().is_ok() {
            return Ok(());
        }
        log.info(&format!("rebinding {} to {}", self.device, self.driver));
        host.write(
            &format!("/sys/bus/platform/drivers/{}/bind", self.driver),
            &self.device,
        )?;
        if host.wait_until(|| link.symlink_metadata().is_ok()) {
            Ok(())
        } else {
            Err(StepError::Other(format!(
                "{} did not bind to {}",
                self.device, self.driver
            )))
        }
    }
}
