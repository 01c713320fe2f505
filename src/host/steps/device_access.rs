//! The device nodes QEMU opens itself by path, handed to the unprivileged QEMU user for the
//! run: `/dev/vfio/N` of each passed device's IOMMU group (vfio-pci opens it), the evdev nodes
//! (by-id links resolved to `/dev/input/eventN`), the `/dev/vfio/N` of each `[[mdev]]` (its
//! `iommu_group` once it is created) and the `[[usb]]` devices'
//! `/dev/bus/usb/BBB/DDD`. vmrun cannot pass these as descriptors: QEMU opens them by name.
//! Each node's owner and mode are journaled before its owner changes, so teardown and
//! `recover` give it back to whoever had it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::host::{pci, usb, Sysroot};
use crate::log::Log;
use crate::model::{PciAddress, UsbDevice, VmConfig};
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantDeviceAccess {
    /// The QEMU user, as `show` names it.
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Their IOMMU groups' `/dev/vfio/N`.
    pub pci: Vec<PciAddress>,
    /// The UUIDs of the mediated devices: their IOMMU groups' `/dev/vfio/N`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mdev: Vec<String>,
    pub evdev: Vec<PathBuf>,
    pub usb: Vec<UsbDevice>,
}

/// Journaled before a node changes owner: who had it, and its mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOwner {
    /// The node as the host names it (not under the host root), symlinks resolved.
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`0o600`), as a number.
    pub mode: u32,
}

impl GrantDeviceAccess {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        let identity = config.qemu.user.identity()?;
        let step = GrantDeviceAccess {
            user: identity.name.clone(),
            uid: identity.uid,
            gid: identity.gid,
            pci: config.pci.iter().map(|device| device.address).collect(),
            mdev: config
                .mdev
                .iter()
                .map(|device| device.uuid.clone())
                .collect(),
            evdev: config.input.evdev.clone(),
            usb: config.usb.clone(),
        };
        (!step.pci.is_empty()
            || !step.mdev.is_empty()
            || !step.evdev.is_empty()
            || !step.usb.is_empty())
        .then_some(step)
    }

    /// The `/dev/vfio/N` of `address`, or why there is none.
    fn vfio_node(host: &HostContext, address: PciAddress) -> Result<String, StepError> {
        let text = address.to_string();
        match pci::device_info(&host.root, &text) {
            None => Err(StepError::Other(format!(
                "{text} does not exist on this host, so QEMU has no /dev/vfio node to open"
            ))),
            Some(info) => match info.iommu_group {
                Some(group) => Ok(format!("/dev/vfio/{group}")),
                None => Err(StepError::Other(format!(
                    "{text} has no IOMMU group, so there is no /dev/vfio node for QEMU: {}",
                    pci::ENABLE_IOMMU_HINT
                ))),
            },
        }
    }

    /// Every node to hand over, as host paths, each once, with what it is for (messages).
    fn nodes(&self, host: &HostContext) -> Result<Vec<(PathBuf, String)>, StepError> {
        let mut nodes: Vec<(PathBuf, String)> = Vec::new();
        let mut add = |path: PathBuf, what: String| {
            if !nodes.iter().any(|(known, _)| *known == path) {
                nodes.push((path, what));
            }
        };
        for address in &self.pci {
            let node = Self::vfio_node(host, *address)?;
            // The kernel links the device to vfio-pci before vfio-pci's probe has made the
            // group's node (devtmpfs makes it a moment later): a bound device's node is waited for.
            let bound =
                pci::driver_of(&host.root, &address.to_string()).as_deref() == Some("vfio-pci");
            let present = || host.root.path(&node).exists();
            if !(present() || bound && host.wait_until(present)) {
                let driver = pci::driver_of(&host.root, &address.to_string());
                return Err(StepError::Other(format!(
                    "{node} (the IOMMU group of {address}) does not exist: {address} is not bound to \
                     vfio-pci (its driver: {}); bind it (the device's BindVfio step does) or check \
                     `dmesg` for vfio errors",
                    driver.as_deref().unwrap_or("none")
                )));
            }
            add(PathBuf::from(node), format!("the IOMMU group of {address}"));
        }
        for uuid in &self.mdev {
            // The mediated device exists by now: its step comes earlier.
            let node = super::mdev::vfio_node(&host.root, uuid)?;
            if !host.root.path(&node).exists() {
                return Err(StepError::Other(format!(
                    "{node} (the IOMMU group of the mediated device {uuid}) does not exist; is \
                     the vfio_mdev/kvmgt module loaded? `dmesg` says why"
                )));
            }
            add(
                PathBuf::from(node),
                format!("the IOMMU group of the mediated device {uuid}"),
            );
        }
        for path in &self.evdev {
            let real = resolve(&host.root, path).map_err(|source| StepError::Io {
                path: format!(
                    "input.evdev {} (list /dev/input/by-id/ for the right name; a device plugged \
                     in again may have a new name)",
                    path.display()
                ),
                source,
            })?;
            add(real, format!("input.evdev {}", path.display()));
        }
        let present = usb::devices(&host.root);
        for wanted in &self.usb {
            for device in usb::matching(&present, wanted) {
                let node = usb_node(host, wanted, device).map_err(StepError::Other)?;
                add(PathBuf::from(node), format!("usb {wanted}"));
            }
        }
        Ok(nodes)
    }
}

/// The `/dev/bus/usb` node of a plugged-in `[[usb]]` device, or why QEMU could not open it.
fn usb_node<'a>(
    host: &HostContext,
    wanted: &UsbDevice,
    device: &'a usb::HostUsbDevice,
) -> Result<&'a str, String> {
    let Some(node) = device.node.as_deref() else {
        return Err(format!(
            "usb {wanted}: sysfs gives no busnum/devnum for {}, so its /dev/bus/usb node is \
             unknown",
            device.port
        ));
    };
    if !host.root.path(node).exists() {
        return Err(format!(
            "usb {wanted}: {node} does not exist; is /dev/bus/usb populated (udev)?"
        ));
    }
    Ok(node)
}

/// `path` with every symlink followed, as a host path, staying under the host root: evdev
/// by-id links are relative (`../event5`), and in tests the root is a directory.
pub fn resolve(root: &Sysroot, path: &Path) -> std::io::Result<PathBuf> {
    let base = std::fs::canonicalize(root.path("/"))?;
    let real = std::fs::canonicalize(root.path(&path.to_string_lossy()))?;
    let inside = real.strip_prefix(&base).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("resolves to {}, outside the host root", real.display()),
        )
    })?;
    Ok(Path::new("/").join(inside))
}

/// How to give `node` (a host path) back, read before it changes; None when `uid:gid` already
/// own it with read and write, so that nothing needs to change (or be undone).
pub fn current_owner(
    root: &Sysroot,
    node: &Path,
    uid: u32,
    gid: u32,
) -> Result<Option<RestoreOwner>, StepError> {
    let meta =
        std::fs::metadata(root.path(&node.to_string_lossy())).map_err(|source| StepError::Io {
            path: node.display().to_string(),
            source,
        })?;
    let mode = meta.mode() & 0o7777;
    if meta.uid() == uid && meta.gid() == gid && mode & 0o600 == 0o600 {
        return Ok(None);
    }
    Ok(Some(RestoreOwner {
        path: node.to_path_buf(),
        uid: meta.uid(),
        gid: meta.gid(),
        mode,
    }))
}

fn set_owner(root: &Sysroot, node: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), StepError> {
    let real = root.path(&node.to_string_lossy());
    let io = |source: std::io::Error| StepError::Io {
        path: node.display().to_string(),
        source,
    };
    nix::unistd::chown(
        &real,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|errno| io(errno.into()))?;
    // After chown: changing the owner clears set-id bits, which the mode puts back.
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode)).map_err(io)
}

/// Gives the node `was` describes to `uid:gid` with its mode plus owner read and write (the
/// group and others keep what they had).
pub fn hand_over(root: &Sysroot, was: &RestoreOwner, uid: u32, gid: u32) -> Result<(), StepError> {
    set_owner(root, &was.path, uid, gid, was.mode | 0o600)
}

/// Gives the node back to the owner and mode `was` recorded.
pub fn give_back(root: &Sysroot, was: &RestoreOwner) -> Result<(), StepError> {
    set_owner(root, &was.path, was.uid, was.gid, was.mode)
}

impl Step for GrantDeviceAccess {
    fn describe(&self) -> String {
        let mut what = Vec::new();
        if !self.pci.is_empty() {
            let addresses: Vec<String> = self.pci.iter().map(ToString::to_string).collect();
            what.push(format!("/dev/vfio of {}", addresses.join(", ")));
        }
        if !self.mdev.is_empty() {
            what.push(format!(
                "/dev/vfio of the mediated device(s) {}",
                self.mdev.join(", ")
            ));
        }
        if !self.evdev.is_empty() {
            what.push(format!("{} evdev node(s)", self.evdev.len()));
        }
        if !self.usb.is_empty() {
            let devices: Vec<String> = self.usb.iter().map(ToString::to_string).collect();
            what.push(format!("the /dev/bus/usb node of {}", devices.join(", ")));
        }
        format!(
            "give {} to the QEMU user {} ({}:{}), remembering their owners",
            what.join(", "),
            self.user,
            self.uid,
            self.gid
        )
    }

    /// The nodes that should exist already. `/dev/vfio/N` appears only once a device is on
    /// vfio-pci, so for those only the group is required; missing evdev nodes are the
    /// `input` check's.
    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let mut findings = Vec::new();
        for address in &self.pci {
            if !pci::device_exists(&host.root, *address) {
                continue; // the pci check names it
            }
            if let Err(error) = Self::vfio_node(host, *address) {
                findings.push(Finding::fail("device_access", error.to_string()));
            }
        }
        let present = usb::devices(&host.root);
        for wanted in &self.usb {
            let found: Vec<&usb::HostUsbDevice> = usb::matching(&present, wanted).collect();
            if found.is_empty() {
                findings.push(Finding::warn(
                    "device_access",
                    format!(
                        "usb {wanted} is not plugged in: QEMU waits for it, but as {} it cannot \
                         open the node the device gets when plugged in later; plug it in before \
                         the start or attach it then with `vmrun usb NAME attach {wanted}`",
                        self.user
                    ),
                ));
            }
            for device in found {
                if let Err(problem) = usb_node(host, wanted, device) {
                    findings.push(Finding::fail("device_access", problem));
                }
            }
        }
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        for (node, what) in self.nodes(host)? {
            let Some(was) = current_owner(&host.root, &node, self.uid, self.gid)? else {
                log.debug(&format!(
                    "{} ({what}) is {}'s already",
                    node.display(),
                    self.user
                ));
                continue;
            };
            log.info(&format!(
                "giving {} ({what}) to {} (was {}:{} mode {:04o})",
                node.display(),
                self.user,
                was.uid,
                was.gid,
                was.mode
            ));
            record.change(was.clone(), || {
                hand_over(&host.root, &was, self.uid, self.gid)
            })?;
        }
        Ok(())
    }
}

impl Undoable for RestoreOwner {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        // Gone with its device (a group left vfio-pci, a USB device was unplugged): a node
        // made again later is the kernel's new one, root's.
        if !host.root.path(&self.path.to_string_lossy()).exists() {
            return Ok(());
        }
        log.info(&format!(
            "giving {} back to {}:{} (mode {:04o})",
            self.path.display(),
            self.uid,
            self.gid,
            self.mode
        ));
        give_back(&host.root, self)
    }

    fn verify_restored(&self, host: &HostContext) -> Result<(), String> {
        let Ok(meta) = std::fs::metadata(host.root.path(&self.path.to_string_lossy())) else {
            return Ok(());
        };
        let now = (meta.uid(), meta.gid(), meta.mode() & 0o7777);
        if now == (self.uid, self.gid, self.mode) {
            Ok(())
        } else {
            Err(format!(
                "{} is {}:{} mode {:04o}, not {}:{} mode {:04o} again",
                self.path.display(),
                now.0,
                now.1,
                now.2,
                self.uid,
                self.gid,
                self.mode
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evdev_links_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("dev/input");
        std::fs::create_dir_all(input.join("by-id")).unwrap();
        std::fs::write(input.join("event5"), "").unwrap();
        std::os::unix::fs::symlink("../event5", input.join("by-id/kbd-event-kbd")).unwrap();
        let root = Sysroot::new(dir.path());
        assert_eq!(
            resolve(&root, Path::new("/dev/input/by-id/kbd-event-kbd")).unwrap(),
            PathBuf::from("/dev/input/event5")
        );
        std::os::unix::fs::symlink("/etc/hostname", input.join("by-id/outside")).unwrap();
        assert!(resolve(&root, Path::new("/dev/input/by-id/outside")).is_err());
    }

    #[test]
    fn a_node_is_handed_over_with_owner_read_write_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev/vfio")).unwrap();
        let node = dir.path().join("dev/vfio/7");
        std::fs::write(&node, "").unwrap();
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o040)).unwrap();
        let root = Sysroot::new(dir.path());
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let was = current_owner(&root, Path::new("/dev/vfio/7"), me.0, me.1)
            .unwrap()
            .expect("mode 0040 lacks owner read/write");
        assert_eq!(was.mode, 0o040);
        hand_over(&root, &was, me.0, me.1).unwrap();
        let mode = std::fs::metadata(&node).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o640, "the group keeps its bits, the owner gets rw");
        assert!(current_owner(&root, Path::new("/dev/vfio/7"), me.0, me.1)
            .unwrap()
            .is_none());
        set_owner(&root, &was.path, was.uid, was.gid, was.mode).unwrap();
        assert_eq!(std::fs::metadata(&node).unwrap().mode() & 0o7777, 0o040);
    }
}
