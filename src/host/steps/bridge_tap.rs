//! `network.mode = "bridge"`: vmrun makes the VM's tap device, puts it on the bridge and brings
//! it up, and deletes it after the run. QEMU only opens it by name: its bridge helper is a
//! program QEMU would have to start, which its sandbox forbids.

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::log::Log;
use crate::model::{NetworkMode, VmConfig};
use crate::plan::argv::tap_name;
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddBridgeTap {
    pub tap: String,
    pub bridge: String,
}

/// Journaled by `AddBridgeTap` before the tap exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTap {
    pub tap: String,
}

impl AddBridgeTap {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        match &config.network.mode {
            NetworkMode::Bridge(bridge) => Some(AddBridgeTap {
                tap: tap_name(&config.name),
                bridge: bridge.clone(),
            }),
            _ => None,
        }
    }
}

fn exists(host: &HostContext, interface: &str) -> bool {
    host.root
        .path(&format!("/sys/class/net/{interface}"))
        .exists()
}

impl Step for AddBridgeTap {
    fn describe(&self) -> String {
        format!(
            "create tap {} on bridge {} (deleted after the run)",
            self.tap, self.bridge
        )
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let bridge = host
            .root
            .path(&format!("/sys/class/net/{}/bridge", self.bridge));
        let mut findings = vec![if bridge.is_dir() {
            Finding::pass("network", format!("bridge {} exists", self.bridge))
        } else {
            Finding::fail(
                "network",
                format!(
                    "network.bridge: {} is not a bridge on this host; create it (e.g. with NetworkManager or \
                     systemd-networkd) or use mode = \"user\"",
                    self.bridge
                ),
            )
        }];
        if crate::host::find_program("ip").is_none() {
            findings.push(Finding::fail(
                "network",
                "`ip` is not on PATH: install iproute2 to bridge the VM",
            ));
        }
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let tap = self.tap.as_str();
        log.info(&format!("creating tap {tap} on bridge {}", self.bridge));
        record.change(DeleteTap { tap: tap.into() }, || {
            if !exists(host, tap) {
                host.run_checked(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"], log)?;
            }
            host.run_checked(
                &["ip", "link", "set", "dev", tap, "master", &self.bridge],
                log,
            )?;
            host.run_checked(&["ip", "link", "set", "dev", tap, "up"], log)
                .map(|_| ())
        })
    }
}

impl Undoable for DeleteTap {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        if !exists(host, &self.tap) {
            return Ok(());
        }
        log.info(&format!("deleting tap {}", self.tap));
        host.run_checked(&["ip", "link", "del", "dev", &self.tap], log)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::steps::testing::{log, output, FakeHost};
    use crate::host::steps::HostStep;

    /// `ip` as the kernel would answer it: the tap's sysfs directory comes and goes.
    fn ip() -> FakeHost {
        FakeHost::answering(|root, line| {
            let dir = root.join("sys/class/net/vmrun-t");
            if line.starts_with("ip tuntap add") {
                std::fs::create_dir_all(&dir).unwrap();
            } else if line.starts_with("ip link del") {
                std::fs::remove_dir_all(&dir).unwrap();
            }
            output("")
        })
    }

    fn step() -> HostStep {
        HostStep::AddBridgeTap(AddBridgeTap {
            tap: "vmrun-t".to_string(),
            bridge: "br0".to_string(),
        })
    }

    #[test]
    fn the_tap_is_made_on_the_bridge_and_deleted_after() {
        let fake = ip();
        let session = fake.session(vec![step()]);
        session.apply(&log()).unwrap();
        assert!(fake.exists("/sys/class/net/vmrun-t"));
        session.undo_all(&log()).unwrap();
        assert!(!fake.exists("/sys/class/net/vmrun-t"));
        assert_eq!(
            fake.calls(),
            [
                "ip tuntap add dev vmrun-t mode tap",
                "ip link set dev vmrun-t master br0",
                "ip link set dev vmrun-t up",
                "ip link del dev vmrun-t",
            ]
        );
    }

    #[test]
    fn a_missing_bridge_fails_the_preflight() {
        let fake = FakeHost::new();
        let step = AddBridgeTap {
            tap: "vmrun-t".to_string(),
            bridge: "br0".to_string(),
        };
        let findings = step.preflight(&fake.host());
        assert!(
            findings[0].message.contains("br0 is not a bridge"),
            "{findings:?}"
        );
        fake.write("/sys/class/net/br0/bridge/bridge_id", "8000.1");
        assert!(step.preflight(&fake.host())[0]
            .message
            .contains("bridge br0 exists"));
    }
}
