//! Single-GPU: the host's GPU modules are unloaded in the profile's order (users first) and
//! loaded again in reverse. A module that stays in use is reported with the processes that
//! still hold the GPU.

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::VmPaths;

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
    pub fn plan<'a>(config: &'a VmConfig, _paths: &VmPaths) -> impl Iterator<Item = Self> + 'a {
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
        // A driver that still holds devices serves another VM, or keeps a passed device that
        // did not answer after the guest away from its host driver (unloading it would unbind
        // them, and the next probe could hand a dead GPU to its host driver): it stays loaded.
        let mut bound: Vec<String> = std::fs::read_dir(
            host.root
                .path(&format!("/sys/bus/pci/drivers/{}", self.module)),
        )
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(':'))
                .collect()
        })
        .unwrap_or_default();
        if !bound.is_empty() {
            bound.sort();
            log.info(&format!(
                "module {} still has {} bound (another VM's, or a device kept off its host driver): left loaded",
                self.module,
                bound.join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::context::StepError;
    use crate::host::steps::testing::{failure, log, output, FakeHost};
    use crate::host::steps::HostStep;

    const MODULES: &str = "/proc/modules";

    /// modprobe as the kernel would answer it: `-r` removes the module's line unless `busy`.
    fn modprobe(busy: bool) -> FakeHost {
        FakeHost::answering(move |root, line| {
            let modules = root.join("proc/modules");
            let text = std::fs::read_to_string(&modules).unwrap_or_default();
            if let Some(module) = line.strip_prefix("modprobe -r ") {
                if busy {
                    return failure("modprobe: FATAL: Module is in use.");
                }
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{module} ")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(&modules, kept).unwrap();
            } else if let Some(module) = line.strip_prefix("modprobe ") {
                std::fs::write(&modules, format!("{text}{module} 16384 0 - Live\n")).unwrap();
            }
            output("")
        })
    }

    fn step() -> HostStep {
        HostStep::UnloadModule(UnloadModule {
            module: "nvidia_drm".to_string(),
        })
    }

    #[test]
    fn a_loaded_module_is_unloaded_and_loaded_again() {
        let fake = modprobe(false);
        fake.write(
            MODULES,
            "nvidia_drm 73728 2 - Live\nnvidia 56000 1 - Live\n",
        );
        let session = fake.session(vec![step()]);
        session.apply(&log()).unwrap();
        assert!(!fake.read(MODULES).contains("nvidia_drm"));
        session.undo_all(&log()).unwrap();
        assert!(fake.read(MODULES).contains("nvidia_drm"));
        assert_eq!(
            fake.calls(),
            ["modprobe -r nvidia_drm", "modprobe nvidia_drm"]
        );
    }

    #[test]
    fn a_module_not_loaded_is_neither_unloaded_nor_loaded_afterwards() {
        let fake = modprobe(false);
        fake.write(MODULES, "nvidia 56000 1 - Live\n");
        let session = fake.session(vec![step()]);
        session.apply(&log()).unwrap();
        session.undo_all(&log()).unwrap();
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn a_module_in_use_fails_after_the_retries_and_leaves_nothing_to_load() {
        let fake = modprobe(true);
        fake.write(MODULES, "nvidia_drm 73728 2 - Live\n");
        let session = fake.session(vec![step()]);
        let error = session.apply(&log()).unwrap_err();
        assert!(
            matches!(&error, StepError::ModuleInUse { attempts: 2, .. }),
            "{error}"
        );
        assert_eq!(fake.calls().len(), 2);
        session.undo_all(&log()).unwrap();
        assert_eq!(fake.calls().len(), 2, "still loaded: nothing to load");
    }
}
