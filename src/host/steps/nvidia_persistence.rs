//! NVIDIA persistence: `nvidia-persistenced` keeps every NVIDIA GPU's `/dev/nvidia*` open so
//! that the driver stays initialised, which is exactly what keeps a GPU from leaving the
//! `nvidia` driver (and persistence mode must be off before a GPU is bound to vfio-pci). When
//! a passed function is NVIDIA's (and not on vfio-pci already) and the daemon runs, it is
//! stopped for the run and started after. Planned for every VM with passed functions (the plan
//! is pure); whether a function is NVIDIA's and whether the daemon runs are read when it
//! applies.

use serde::Serialize;

use super::display_manager::StartUnit;
use super::holders::NVIDIA_PERSISTENCED;
use super::{LibvirtContext, LibvirtNotes, Recorder, Step};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::host::holders::is_nvidia;
use crate::host::pci;
use crate::log::Log;
use crate::model::{PciAddress, VmConfig};
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StopNvidiaPersistence {
    pub devices: Vec<PciAddress>,
    pub unit: String,
}

impl StopNvidiaPersistence {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        (!config.pci.is_empty()).then(|| StopNvidiaPersistence {
            devices: config.pci.iter().map(|device| device.address).collect(),
            unit: NVIDIA_PERSISTENCED.to_string(),
        })
    }

    /// The passed functions that are NVIDIA's (vendor 0x10de), read through the host root,
    /// but for those vfio-pci (or pci-stub) has already: the daemon holds none of those.
    fn nvidia(&self, host: &HostContext) -> Vec<String> {
        self.devices
            .iter()
            .map(ToString::to_string)
            .filter(|address| is_nvidia(&host.root, address))
            .filter(|address| !pci::on_vfio(&host.root, address))
            .collect()
    }

    fn active(&self, host: &HostContext, log: &Log) -> Result<bool, StepError> {
        let state = host.run(&["systemctl", "is-active", &self.unit], log)?;
        Ok(state.stdout.trim() == "active")
    }
}

impl Step for StopNvidiaPersistence {
    fn describe(&self) -> String {
        format!(
            "stop {} for the run if a passed function is NVIDIA's and it is active",
            self.unit
        )
    }

    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        LibvirtNotes::comment(format!(
            "vmrun stops {} for the run when a passed function is NVIDIA's and starts it after: libvirt needs \
             {} and `systemctl start {}` on `{} release end`",
            self.unit,
            vm.hook("prepare begin"),
            self.unit,
            vm.written.name
        ))
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let nvidia = self.nvidia(host);
        if nvidia.is_empty() {
            return Vec::new();
        }
        let devices = nvidia.join(", ");
        // `systemctl is-active` only reads; a silent log keeps the preflight's output its own.
        match self.active(host, &Log::new(0, true).without_stderr()) {
            Ok(true) => vec![Finding::pass(
                "nvidia",
                format!(
                    "{} is active and holds the NVIDIA GPUs' nodes: it will be stopped for the run ({devices} \
                     passed) and started after",
                    self.unit
                ),
            )],
            Ok(false) => vec![Finding::pass(
                "nvidia",
                format!("{} is not active: nothing to stop for {devices}", self.unit),
            )],
            Err(error) => vec![Finding::warn(
                "nvidia",
                format!(
                    "cannot tell whether {} runs ({error}); if it does, it holds {devices}",
                    self.unit
                ),
            )],
        }
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        if self.nvidia(host).is_empty() {
            log.debug("no passed function is NVIDIA's: persistence left alone");
            return Ok(());
        }
        if !self.active(host, log)? {
            log.debug(&format!("{} is not active", self.unit));
            return Ok(());
        }
        log.info(&format!(
            "stopping {} for the run (it holds the NVIDIA GPUs)",
            self.unit
        ));
        record.change(
            StartUnit {
                unit: self.unit.clone(),
            },
            || {
                host.run_checked(&["systemctl", "stop", &self.unit], log)
                    .map(|_| ())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::holders::tests::{gpu, process, systemd, GPU};
    use crate::host::steps::testing::{self, log, FakeHost};
    use crate::host::steps::HostStep;
    use crate::plan::{BaseDirs, VmPaths};

    fn step() -> StopNvidiaPersistence {
        StopNvidiaPersistence {
            devices: vec![GPU.parse().unwrap()],
            unit: NVIDIA_PERSISTENCED.to_string(),
        }
    }

    fn persistenced(fake: &FakeHost) {
        fake.write(".fake/services/nvidia-persistenced.service", "active\n");
        process(
            fake,
            800,
            "nvidia-persiste",
            0,
            "/system.slice/nvidia-persistenced.service",
            &["/dev/nvidiactl", "/dev/nvidia0"],
        );
    }

    #[test]
    fn the_daemon_is_stopped_for_an_nvidia_function_and_started_after() {
        let fake = FakeHost::answering(systemd);
        gpu(&fake, GPU, "0x10de", &["card0"]);
        persistenced(&fake);
        let findings = step().preflight(&fake.host());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].status, Status::Pass);
        assert!(
            findings[0].message.contains("will be stopped for the run"),
            "{findings:?}"
        );
        let session = fake.session(vec![HostStep::StopNvidiaPersistence(step())]);
        session.apply(&log()).unwrap();
        assert!(!fake.exists("/proc/800"), "its process is gone");
        assert_eq!(
            fake.read(".fake/services/nvidia-persistenced.service"),
            "inactive"
        );
        session.undo_all(&log()).unwrap();
        assert_eq!(
            fake.read(".fake/services/nvidia-persistenced.service"),
            "active"
        );
        assert_eq!(
            fake.calls()[1..],
            [
                "systemctl is-active nvidia-persistenced.service",
                "systemctl stop nvidia-persistenced.service",
                "systemctl start nvidia-persistenced.service"
            ]
        );
    }

    #[test]
    fn a_non_nvidia_function_leaves_it_untouched() {
        let fake = FakeHost::answering(systemd);
        gpu(&fake, GPU, "0x1002", &["card0"]);
        persistenced(&fake);
        assert!(step().preflight(&fake.host()).is_empty());
        let session = fake.session(vec![HostStep::StopNvidiaPersistence(step())]);
        session.apply(&log()).unwrap();
        session.undo_all(&log()).unwrap();
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
        assert!(fake.exists("/proc/800/comm"));
    }

    #[test]
    fn an_nvidia_function_already_on_vfio_leaves_it_untouched() {
        let fake = FakeHost::answering(systemd);
        gpu(&fake, GPU, "0x10de", &[]);
        std::fs::create_dir_all(fake.root().join("sys/bus/pci/drivers/vfio-pci")).unwrap();
        std::os::unix::fs::symlink(
            "../../drivers/vfio-pci",
            fake.root()
                .join(format!("sys/bus/pci/devices/{GPU}/driver")),
        )
        .unwrap();
        persistenced(&fake);
        assert!(step().preflight(&fake.host()).is_empty());
        fake.session(vec![HostStep::StopNvidiaPersistence(step())])
            .apply(&log())
            .unwrap();
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    }

    #[test]
    fn an_inactive_daemon_is_neither_stopped_nor_started() {
        let fake = FakeHost::answering(systemd);
        gpu(&fake, GPU, "0x10de", &["card0"]);
        let findings = step().preflight(&fake.host());
        assert!(
            findings[0].message.contains("is not active"),
            "{findings:?}"
        );
        let session = fake.session(vec![HostStep::StopNvidiaPersistence(step())]);
        session.apply(&log()).unwrap();
        session.undo_all(&log()).unwrap();
        assert_eq!(
            fake.calls(),
            [
                "systemctl is-active nvidia-persistenced.service",
                "systemctl is-active nvidia-persistenced.service"
            ]
        );
    }

    #[test]
    fn planned_for_every_vm_with_passed_functions() {
        let paths = VmPaths::new(&BaseDirs::resolve(None, None), &"test".parse().unwrap()).unwrap();
        assert!(StopNvidiaPersistence::plan(&testing::config(""), &paths).is_none());
        let config = testing::config("[[pci]]\naddress = \"01:00.0\"\n");
        let planned = StopNvidiaPersistence::plan(&config, &paths).unwrap();
        assert_eq!(planned, step());
        let notes = testing::libvirt(&HostStep::StopNvidiaPersistence(planned), &config);
        assert!(notes.comments[0].contains("test prepare begin"));
    }
}
