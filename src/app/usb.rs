//! `vmrun usb NAME attach|detach|list`: hot-plug of host USB devices into a running VM. A
//! `vendor:product` is looked up among the host's devices (sysfs) so that it is plugged by its
//! port, and two identical devices are told apart instead of QEMU picking one.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{App, AppError};
use crate::host::journal::{Journal, JournalEntry};
use crate::host::steps::device_access::{self, RestoreOwner};
use crate::host::steps::Undo;
use crate::host::usb::{self as host_usb, HostUsbDevice};
use crate::model::UsbDevice;
use crate::run::control::ControlError;
use crate::run::state;
use crate::run::usb::{self as run_usb, GuestUsb, UsbHost};

/// What `attach` did.
pub struct Attached {
    /// The device's id in the guest (for `detach` and `list`).
    pub id: String,
    /// The host device it is, when it is plugged in now.
    pub host: Option<HostUsbDevice>,
}

/// What `list` shows: the guest's USB devices and the host's.
#[derive(Serialize)]
pub struct UsbListing {
    pub name: String,
    pub running: bool,
    pub guest: Vec<GuestUsb>,
    pub host: Vec<HostUsbDevice>,
}

impl App {
    fn running_target(&self, name_or_profile: &str) -> Result<super::Target, AppError> {
        let target = self.target(name_or_profile)?;
        if state::running(&target.paths).is_none() {
            return Err(ControlError::NotRunning(target.name).into());
        }
        Ok(target)
    }

    /// Plugs a host device into the running VM. Not written anywhere: the next start has only
    /// the profile's `[[usb]]` devices.
    pub fn usb_attach(
        &self,
        name_or_profile: &str,
        device: &UsbDevice,
    ) -> Result<Attached, AppError> {
        let target = self.running_target(name_or_profile)?;
        let host = host_usb::devices(&self.sysroot);
        let (plug, present) = match device {
            UsbDevice::Port(port) => (
                UsbHost {
                    id: format!("usb-{port}"),
                    port: Some((port.bus, port.path())),
                    ids: None,
                },
                host.iter().find(|d| d.usb_port == *port).cloned(),
            ),
            UsbDevice::Id(id) => {
                let matching: Vec<&HostUsbDevice> =
                    host.iter().filter(|d| d.usb_id == *id).collect();
                match matching.as_slice() {
                    // Not plugged in now: QEMU takes it when it is.
                    [] => (
                        UsbHost {
                            id: format!("usb-{:04x}-{:04x}", id.vendor, id.product),
                            port: None,
                            ids: Some((id.vendor, id.product)),
                        },
                        None,
                    ),
                    [one] => (
                        UsbHost {
                            id: format!("usb-{}", one.port),
                            port: Some((one.usb_port.bus, one.usb_port.path())),
                            ids: Some((id.vendor, id.product)),
                        },
                        Some((*one).clone()),
                    ),
                    several => {
                        let ports: Vec<String> = several
                            .iter()
                            .map(|d| format!("{} ({})", d.port, d.description()))
                            .collect();
                        return Err(AppError::Usage(format!(
                            "{} devices on this host are {id}: {}; give the port of the one to attach, e.g. `vmrun usb {} attach {}`",
                            several.len(),
                            ports.join(", "),
                            target.name,
                            several[0].port
                        )));
                    }
                }
            }
        };
        let guest = run_usb::guest_devices(&target.paths, &target.name)?;
        if let Some(already) = guest.iter().find(|g| {
            g.id == plug.id
                || plug.port.as_ref().is_some_and(|(bus, path)| {
                    g.port.as_deref() == Some(format!("{bus}-{path}").as_str())
                })
                || (plug.port.is_none()
                    && plug.ids.is_some_and(|(v, p)| {
                        g.device.as_deref() == Some(format!("{v:04x}:{p:04x}").as_str())
                    }))
        }) {
            return Err(AppError::Host(format!(
                "{device} is already in {} as `{}`",
                target.name, already.id
            )));
        }
        // QEMU opens the node itself on device_add, as its unprivileged user: hand it over
        // first, journaled with the VM's other changes so that teardown and `recover` give
        // it back.
        let handed = match present.as_ref().and_then(|d| d.node.as_deref()) {
            Some(node) => self.hand_usb_node(&target, node)?,
            None => None,
        };
        if let Err(error) = run_usb::attach(&target.paths, &target.name, &plug) {
            if let Some(was) = handed {
                let _ = self.give_usb_node_back(&target, &was.path);
            }
            return Err(error.into());
        }
        Ok(Attached {
            id: plug.id,
            host: present,
        })
    }

    /// Unplugs a device from the running VM, found by its port or ids (also one the profile
    /// gave it; it is there again on the next start). Returns its id in the guest.
    pub fn usb_detach(
        &self,
        name_or_profile: &str,
        device: &UsbDevice,
    ) -> Result<String, AppError> {
        let target = self.running_target(name_or_profile)?;
        let guest = run_usb::guest_devices(&target.paths, &target.name)?;
        let host = host_usb::devices(&self.sysroot);
        let matching: Vec<&GuestUsb> = guest
            .iter()
            .filter(|g| match device {
                UsbDevice::Port(port) => g.port.as_deref() == Some(port.to_string().as_str()),
                UsbDevice::Id(id) => {
                    g.device.as_deref() == Some(id.to_string().as_str())
                        || host
                            .iter()
                            .any(|h| h.usb_id == *id && g.port.as_deref() == Some(h.port.as_str()))
                }
            })
            .collect();
        match matching.as_slice() {
            [] => Err(AppError::Host(format!(
                "{device} is not in {}; `vmrun usb {} list` shows what is",
                target.name, target.name
            ))),
            [one] => {
                run_usb::detach(&target.paths, &target.name, &one.id)?;
                // QEMU no longer needs the node: its owner gets it back now, not at teardown.
                let node = host
                    .iter()
                    .find(|h| one.port.as_deref() == Some(h.port.as_str()))
                    .and_then(|h| h.node.as_deref());
                if let Some(node) = node {
                    self.give_usb_node_back(&target, Path::new(node))?;
                }
                Ok(one.id.clone())
            }
            several => {
                let ids: Vec<&str> = several.iter().map(|g| g.id.as_str()).collect();
                Err(AppError::Usage(format!(
                    "{device} matches {} devices in {} ({}); detach by port",
                    several.len(),
                    target.name,
                    ids.join(", ")
                )))
            }
        }
    }

    /// Gives a USB node to the user the VM's QEMU runs as, journaling its owner first. None
    /// when nothing changed (QEMU runs as root, or the user owns the node already).
    fn hand_usb_node(
        &self,
        target: &super::Target,
        node: &str,
    ) -> Result<Option<RestoreOwner>, AppError> {
        let Some((uid, gid)) = state::running(&target.paths).and_then(|run| qemu_ids(run.qemu_pid))
        else {
            return Ok(None);
        };
        if uid == 0 {
            return Ok(None);
        }
        let node = device_access::resolve(&self.sysroot, Path::new(node)).map_err(|source| {
            AppError::Host(format!(
                "{node}: {source}; the device may have been unplugged just now"
            ))
        })?;
        let host_error = |e: crate::host::context::StepError| AppError::Host(e.to_string());
        let Some(was) =
            device_access::current_owner(&self.sysroot, &node, uid, gid).map_err(host_error)?
        else {
            return Ok(None);
        };
        Journal::at(&target.paths.journal).append(&JournalEntry {
            step: None,
            undo: Undo::from(was.clone()),
        })?;
        device_access::hand_over(&self.sysroot, &was, uid, gid).map_err(host_error)?;
        Ok(Some(was))
    }

    /// Gives `node` back to the owner the journal remembers for it (from `attach` or the
    /// start) and drops that entry; nothing when the journal has none.
    fn give_usb_node_back(&self, target: &super::Target, node: &Path) -> Result<(), AppError> {
        let node: PathBuf =
            device_access::resolve(&self.sysroot, node).unwrap_or_else(|_| node.to_path_buf());
        let journal = Journal::at(&target.paths.journal);
        let entries = journal.entries()?;
        let mine = |entry: &JournalEntry| match &entry.undo {
            Undo::RestoreOwner(was) if was.path == node => Some(was.clone()),
            _ => None,
        };
        let Some(was) = entries.iter().rev().find_map(mine) else {
            return Ok(());
        };
        if self.sysroot.path(&node.to_string_lossy()).exists() {
            device_access::give_back(&self.sysroot, &was)
                .map_err(|e| AppError::Host(e.to_string()))?;
        }
        let rest: Vec<JournalEntry> = entries.into_iter().filter(|e| mine(e).is_none()).collect();
        journal.replace(&rest)?;
        Ok(())
    }

    /// The guest's USB devices (empty when it is not running) and the host's.
    pub fn usb_list(&self, name_or_profile: &str) -> Result<UsbListing, AppError> {
        let target = self.target(name_or_profile)?;
        let host = host_usb::devices(&self.sysroot);
        let (running, guest) = match run_usb::guest_devices(&target.paths, &target.name) {
            Ok(guest) => (true, guest),
            Err(ControlError::NotRunning(_)) => (false, Vec::new()),
            Err(error) => return Err(error.into()),
        };
        Ok(UsbListing {
            name: target.name,
            running,
            guest,
            host,
        })
    }
}

/// The effective uid and gid of process `pid` (QEMU), from its `/proc/PID/status`: who QEMU
/// runs as after it dropped root. QEMU is a real process even over a fake host root.
fn qemu_ids(pid: u32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let effective = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<u32>()
            .ok()
    };
    Some((effective("Uid:")?, effective("Gid:")?))
}
