//! Dual-GPU hosts: when a passed GPU is the one the firmware booted on (`boot_vga`), its firmware
//! framebuffer (efifb, simpledrm, vesafb) still holds the card's memory and the consoles draw on
//! it, and vfio-pci's BAR reservation fails. Without a single-GPU session (the host keeps its
//! display on the other GPU, and its display manager runs on), this step lets go of just that:
//! the vtconsoles and the framebuffer, journaled as the single-GPU steps journal them.

use serde::Serialize;

use super::consoles::UnbindVtconsoles;
use super::framebuffers::UnbindFramebuffers;
use super::{Recorder, Step};
use crate::host::context::{HostContext, StepError};
use crate::log::Log;
use crate::model::{PciAddress, VmConfig};
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseBootFramebuffer {
    /// The passed devices; the step acts only if one of them is the boot GPU.
    pub devices: Vec<PciAddress>,
}

impl ReleaseBootFramebuffer {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        if config.single_gpu.is_some() || config.pci.is_empty() {
            return None;
        }
        Some(ReleaseBootFramebuffer {
            devices: config.pci.iter().map(|d| d.address).collect(),
        })
    }

    fn boot_gpu(&self, host: &HostContext) -> Option<PciAddress> {
        self.devices.iter().copied().find(|address| {
            host.read(&format!("/sys/bus/pci/devices/{address}/boot_vga"))
                .as_deref()
                == Some("1")
        })
    }
}

impl Step for ReleaseBootFramebuffer {
    fn describe(&self) -> String {
        "if a passed GPU is the boot GPU: unbind the vtconsoles and its firmware framebuffer \
         (the display manager keeps running)"
            .into()
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let Some(gpu) = self.boot_gpu(host) else {
            log.debug("no passed device is the boot GPU: framebuffers left alone");
            return Ok(());
        };
        log.info(&format!(
            "{gpu} is the boot GPU: releasing its firmware framebuffer and the consoles on it"
        ));
        UnbindVtconsoles {}.apply(host, record, log)?;
        UnbindFramebuffers {}.apply(host, record, log)
    }
}
