//! Single-GPU: the virtual consoles let go of the framebuffer. Only the bound ones are
//! unbound, and only those are bound again.

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnbindVtconsoles {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindVtconsole {
    pub name: String,
}

impl UnbindVtconsoles {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        config.single_gpu.as_ref().map(|_| UnbindVtconsoles {})
    }
}

impl Step for UnbindVtconsoles {
    fn describe(&self) -> String {
        "unbind the bound vtconsoles".into()
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let mut consoles: Vec<String> = std::fs::read_dir(host.root.path("/sys/class/vtconsole"))
            .map(|list| {
                list.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        consoles.sort();
        for name in consoles {
            let path = format!("/sys/class/vtconsole/{name}/bind");
            if host.read(&path).as_deref() == Some("1") {
                log.info(&format!("unbinding {name}"));
                record.change(BindVtconsole { name: name.clone() }, || {
                    host.write(&path, "0")
                })?;
            }
        }
        Ok(())
    }
}

impl Undoable for BindVtconsole {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        log.info(&format!("rebinding {}", self.name));
        host.write(&format!("/sys/class/vtconsole/{}/bind", self.name), "1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::steps::testing::{log, FakeHost};
    use crate::host::steps::HostStep;

    #[test]
    fn bound_vtconsoles_are_unbound_and_only_they_are_bound_again() {
        let fake = FakeHost::new();
        fake.write("/sys/class/vtconsole/vtcon0/bind", "0");
        fake.write("/sys/class/vtconsole/vtcon1/bind", "1");
        let session = fake.session(vec![HostStep::UnbindVtconsoles(UnbindVtconsoles {})]);
        session.apply(&log()).unwrap();
        assert_eq!(fake.read("/sys/class/vtconsole/vtcon1/bind"), "0");
        assert_eq!(session.leftovers().unwrap().len(), 1);
        session.undo_all(&log()).unwrap();
        assert_eq!(fake.read("/sys/class/vtconsole/vtcon0/bind"), "0");
        assert_eq!(fake.read("/sys/class/vtconsole/vtcon1/bind"), "1");
    }
}
