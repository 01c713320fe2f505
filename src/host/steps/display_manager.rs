//! Single-GPU: the display manager lets go of the GPU. Stopped only if it is active, and
//! started again only then.

use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::libvirt::xml::Element;
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StopDisplayManager {
    pub unit: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartUnit {
    pub unit: String,
}

impl StopDisplayManager {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        config.single_gpu.as_ref().map(|single| StopDisplayManager {
            unit: single.display_manager.clone(),
        })
    }
}

impl Step for StopDisplayManager {
    /// The whole single-GPU hand-over (display manager, consoles, framebuffers, modules) is
    /// one hook for libvirt, described here, where it begins.
    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        let name = vm.written.name.as_str();
        let modules = vm
            .written
            .single_gpu
            .as_ref()
            .map(|single| single.modules.clone())
            .unwrap_or_default();
        let mut element =
            Element::new("vmrun:single-gpu").attr("display-manager", self.unit.clone());
        for module in &modules {
            element.push(Element::new("vmrun:module").attr("name", module.clone()));
        }
        LibvirtNotes {
            comments: vec![format!(
                "vmrun stops {}, unbinds the vtconsoles and the EFI framebuffer and unloads [{}] before \
                 the start, and gives all of it back after: libvirt needs {} and the reverse on `{name} release end`",
                self.unit,
                modules.join(", "),
                vm.hook("prepare begin")
            )],
            metadata: vec![element],
            devices: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        format!("stop {} if it is active", self.unit)
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let unit = self.unit.as_str();
        let state = host.run(&["systemctl", "is-active", unit], log)?;
        if state.stdout.trim() != "active" {
            log.info(&format!("{unit} is not active; leaving it"));
            return Ok(());
        }
        log.info(&format!("stopping {unit}"));
        record.change(StartUnit { unit: unit.into() }, || {
            host.run_checked(&["systemctl", "stop", unit], log)
                .map(|_| ())
        })
    }
}

impl Undoable for StartUnit {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        log.info(&format!("starting {}", self.unit));
        host.run_checked(&["systemctl", "start", &self.unit], log)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::steps::testing::{self, log, output, FakeHost};
    use crate::host::steps::HostStep;
    use crate::plan::{BaseDirs, VmPaths};

    fn step() -> HostStep {
        HostStep::StopDisplayManager(StopDisplayManager {
            unit: "gdm.service".to_string(),
        })
    }

    #[test]
    fn an_active_display_manager_is_stopped_and_started_again() {
        let fake = FakeHost::answering(|_, line| {
            output(if line.contains("is-active") {
                "active\n"
            } else {
                ""
            })
        });
        let session = fake.session(vec![step()]);
        session.apply(&log()).unwrap();
        assert_eq!(
            fake.calls(),
            [
                "systemctl is-active gdm.service",
                "systemctl stop gdm.service"
            ]
        );
        session.undo_all(&log()).unwrap();
        assert_eq!(fake.calls().last().unwrap(), "systemctl start gdm.service");
    }

    #[test]
    fn an_inactive_one_is_left_alone_and_not_started_afterwards() {
        let fake = FakeHost::answering(|_, _| output("inactive\n"));
        let session = fake.session(vec![step()]);
        session.apply(&log()).unwrap();
        session.undo_all(&log()).unwrap();
        assert_eq!(fake.calls(), ["systemctl is-active gdm.service"]);
    }

    #[test]
    fn libvirt_gets_one_hook_for_the_whole_hand_over_and_the_keys_in_metadata() {
        let config = testing::config(
            "[[pci]]\naddress = \"01:00.0\"\n[single_gpu]\ndisplay_manager = \"sddm.service\"\nmodules = [\"amdgpu\", \"snd_hda_intel\"]\n",
        );
        let paths = VmPaths::new(&BaseDirs::resolve(None, None), &config.name).unwrap();
        let step = StopDisplayManager::plan(&config, &paths).unwrap();
        let notes = testing::libvirt(&HostStep::StopDisplayManager(step), &config);
        assert_eq!(notes.comments.len(), 1);
        assert!(notes.comments[0].contains("stops sddm.service"));
        assert!(notes.comments[0].contains("[amdgpu, snd_hda_intel]"));
        assert!(notes.comments[0].contains("test prepare begin"));
        let element = &notes.metadata[0];
        assert_eq!(element.name, "vmrun:single-gpu");
        assert_eq!(element.children.len(), 2);
    }
}
