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
