//! Single-GPU: the host's GPU modules are unloaded in the profile's order (users first) and
//! loaded again in reverse. A module that stays in use is reported with the processes that
//! still hold the GPU.

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::log::Log;
use crate::model::VmConfig;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnloadModule {
    pub module: String,
}

/// Journaled by `UnloadModule`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadModule {
    pub module: String,
}

/// Journaled by steps that load a module the host did not have loaded (vfio-pci).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadModuleAgain {
    pub module: String,
}

impl UnloadModule {
    pub fn plan(config: &VmConfig) -> impl Iterator<Item = Self> + '_ {
        config
            .single_gpu
            .iter()
            .flat_map(|single| single.modules.iter())
            .map(|module| UnloadModule {
                module: module.clone(),
            })
    }
}

/// Processes holding a GPU device node, from /proc/*/fd.
fn gpu_holders(host: &HostContext) -> Vec<String> {
    let mut holders = Vec::new();
    let Ok(processes) = std::fs::read_dir(host.root.path("/proc")) else {
        return holders;
    };
    for process in processes.filter_map(Result::ok) {
        let pid = process.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            if ["/dev/dri/", "/dev/nvidia", "/dev/fb"]
                .iter()
                .any(|p| target.starts_with(p))
            {
                let comm = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
                holders.push(format!("{} (pid {pid}) holds {target}", comm.trim()));
                break;
            }
        }
    }
    holders.sort();
    holders
}

impl Step for UnloadModule {
    fn describe(&self) -> String {
        format!("unload module {} if it is loaded", self.module)
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let module = self.module.as_str();
        if !host.module_loaded(module) {
            log.info(&format!("module {module} is not loaded"));
            return Ok(());
        }
        log.info(&format!("unloading module {module}"));
        record.change(
            LoadModule {
                module: module.into(),
            },
            || {
                if host.remove_module(module, log)? {
                    return Ok(());
                }
                let holders = gpu_holders(host);
                Err(StepError::ModuleInUse {
                    module: module.into(),
                    attempts: host.timing.module_attempts,
                    holders: if holders.is_empty() {
                        String::new()
                    } else {
                        format!("; still using the GPU: {}", holders.join(", "))
                    },
                })
            },
        )
    }
}

impl Undoable for LoadModule {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        if host.module_loaded(&self.module) {
            return Ok(());
        }
        log.info(&format!("loading module {}", self.module));
        host.run_checked(&["modprobe", &self.module], log)
            .map(|_| ())
    }
}

impl Undoable for UnloadModuleAgain {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        if !host.module_loaded(&self.module) {
            return Ok(());
        }
        // A driver that still holds devices serves another VM (unloading it would unbind
        // them): it stays loaded.
        let bound = std::fs::read_dir(
            host.root
                .path(&format!("/sys/bus/pci/drivers/{}", self.module)),
        )
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().contains(':'))
        })
        .unwrap_or(false);
        if bound {
            log.info(&format!(
                "module {} still has devices bound (another VM's?): left loaded",
                self.module
            ));
            return Ok(());
        }
        log.info(&format!("unloading module {}", self.module));
        if host.remove_module(&self.module, log)? {
            Ok(())
        } else {
            Err(StepError::ModuleInUse {
                module: self.module.clone(),
                attempts: host.timing.module_attempts,
                holders: String::new(),
            })
        }
    }
}
