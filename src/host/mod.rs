//! The host layer: every sysfs, /dev and /proc path is taken relative to a root directory
//! (`VMRUN_SYSROOT`, default `/`), and every access to sysfs goes through `SysfsIo`, so tests run
//! the same code over a fake tree whose writes are answered the way the kernel answers them.
//!
//! Host preparation is data: `steps::plan` lists the steps a VM needs, `session` applies them
//! through the `journal` and undoes them.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::{CpuSet, PciAddress};

pub mod context;
pub mod finding;
pub mod holders;
pub mod identity;
pub mod inhibit;
pub mod journal;
pub mod pci;
pub mod pci_health;
pub mod pci_ids;
pub mod runner;
pub mod session;
pub mod sriov;
pub mod steps;
pub mod topology;
pub mod usb;

/// The host's filesystem root: `/` normally, a fake tree in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysroot(PathBuf);

impl Sysroot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysroot(root.into())
    }

    pub fn from_env() -> Self {
        Sysroot(
            std::env::var_os("VMRUN_SYSROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/".into()),
        )
    }

    /// `absolute` re-rooted under this sysroot.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.0.join(absolute.trim_start_matches('/'))
    }
}

/// The CPUs the kernel reports online, from `/sys/devices/system/cpu/online`.
pub fn online_cpus(root: &Sysroot) -> Option<CpuSet> {
    std::fs::read_to_string(root.path("/sys/devices/system/cpu/online"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The host's DMI data (`/sys/class/dmi/id`), by file name: what `[smbios] from_host` copies.
/// Unreadable files (serials and the UUID need root) are left out.
pub fn dmi(root: &Sysroot) -> std::collections::BTreeMap<String, String> {
    let mut values = std::collections::BTreeMap::new();
    for field in crate::model::SMBIOS_FIELDS {
        let path = root.path(&format!("/sys/class/dmi/id/{}", field.dmi));
        if let Ok(text) = std::fs::read_to_string(path) {
            let text = text.trim();
            if !text.is_empty() {
                values.insert(field.dmi.to_string(), text.to_string());
            }
        }
    }
    values
}

/// Whether `/dev/vhost-net` is there for tap networking.
pub fn vhost_net(root: &Sysroot) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(root.path("/dev/vhost-net")).is_ok_and(|m| m.file_type().is_char_device())
}

/// The desktop user: `requested` (a name or uid), else the user who ran `sudo` (`SUDO_UID`),
/// else vmrun's own user unless that is root.
pub fn desktop_user(requested: Option<&str>) -> Option<crate::plan::DesktopUser> {
    let user = match requested {
        Some(word) => identity::find_user(word),
        None => {
            let uid = match identity::invoking_uid(|var| std::env::var(var).ok(), "SUDO_UID") {
                Some(uid) => nix::unistd::Uid::from_raw(uid),
                None if !nix::unistd::geteuid().is_root() => nix::unistd::geteuid(),
                None => return None,
            };
            nix::unistd::User::from_uid(uid).ok().flatten()
        }
    }?;
    Some(crate::plan::DesktopUser {
        name: user.name,
        uid: user.uid.as_raw(),
        home: user.dir,
    })
}

/// This process's cgroup v2 path (`/user.slice/user-1000.slice/session-2.scope`), from
/// `/proc/self/cgroup` under the host root; None on cgroup v1 or without /proc.
pub fn own_cgroup(root: &Sysroot) -> Option<String> {
    std::fs::read_to_string(root.path("/proc/self/cgroup"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
}

/// The CPUs this process's cgroup lets it (and its children) run on: `cpuset.cpus.effective`
/// of its cgroup v2 directory; None when unknown.
pub fn own_cgroup_cpus(root: &Sysroot) -> Option<(String, CpuSet)> {
    let cgroup = own_cgroup(root)?;
    let path = format!(
        "/sys/fs/cgroup{}/cpuset.cpus.effective",
        cgroup.trim_end_matches('/')
    );
    let cpus = std::fs::read_to_string(root.path(&path))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some((cgroup, cpus))
}

/// Finds a program the way `execvp` would.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads and writes of sysfs attributes, by absolute path (`/sys/bus/pci/...`).
pub trait SysfsIo {
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>>;
    fn write(&self, path: &str, data: &[u8]) -> std::io::Result<()>;
}

/// The real sysfs (or a plain tree) under a sysroot.
pub struct RealSysfs {
    pub root: Sysroot,
}

impl SysfsIo for RealSysfs {
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.root.path(path))
    }

    fn write(&self, path: &str, data: &[u8]) -> std::io::Result<()> {
        // sysfs attributes exist already: never create. A store replaces the whole value, which
        // O_TRUNC expresses for plain files too (it is what `echo x > attr` does).
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.root.path(path))?;
        file.write_all(data)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: `{text}` is not a hexadecimal id")]
    BadId { path: String, text: String },
    #[error(
        "{address} returned an empty ROM: the boot GPU's ROM is often unreadable after the host \
         firmware shadowed it; dump it from a system where the card is not the boot GPU, or use \
         the vendor's ROM"
    )]
    EmptyRom { address: PciAddress },
}

fn device_path(address: PciAddress, attribute: &str) -> String {
    format!("/sys/bus/pci/devices/{address}/{attribute}")
}

fn read_hex(io: &dyn SysfsIo, path: &str) -> Result<u16, HostError> {
    let bytes = io.read(path).map_err(|source| HostError::Io {
        path: path.to_string(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    u16::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|_| HostError::BadId {
        path: path.to_string(),
        text,
    })
}

/// A device's `vendor:device` ids from sysfs.
pub fn pci_ids(io: &dyn SysfsIo, address: PciAddress) -> Result<(u16, u16), HostError> {
    Ok((
        read_hex(io, &device_path(address, "vendor"))?,
        read_hex(io, &device_path(address, "device"))?,
    ))
}

/// Reads a device's option ROM through sysfs: enable `rom`, read it, disable it again (also
/// when the read fails).
pub fn read_rom(io: &dyn SysfsIo, address: PciAddress) -> Result<Vec<u8>, HostError> {
    let path = device_path(address, "rom");
    let io_error = |source| HostError::Io {
        path: path.clone(),
        source,
    };
    io.write(&path, b"1").map_err(io_error)?;
    let data = io.read(&path);
    let disabled = io.write(&path, b"0");
    let data = data.map_err(io_error)?;
    disabled.map_err(io_error)?;
    if data.is_empty() {
        return Err(HostError::EmptyRom { address });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A device whose ROM reads back only while enabled, as the kernel's `rom` attribute does.
    struct FakeRomDevice {
        rom: Vec<u8>,
        enabled: RefCell<bool>,
        writes: RefCell<Vec<String>>,
        fail_read: bool,
    }

    impl SysfsIo for FakeRomDevice {
        fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
            if path.ends_with("/vendor") {
                return Ok(b"0x10de\n".to_vec());
            }
            if path.ends_with("/device") {
                return Ok(b"0x1c02\n".to_vec());
            }
            if self.fail_read {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            if *self.enabled.borrow() {
                Ok(self.rom.clone())
            } else {
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            }
        }

        fn write(&self, path: &str, data: &[u8]) -> std::io::Result<()> {
            self.writes
                .borrow_mut()
                .push(format!("{path}={}", String::from_utf8_lossy(data)));
            *self.enabled.borrow_mut() = data == b"1";
            Ok(())
        }
    }

    fn device(fail_read: bool) -> FakeRomDevice {
        FakeRomDevice {
            rom: vec![0x55, 0xAA, 1, 2],
            enabled: RefCell::new(false),
            writes: RefCell::new(Vec::new()),
            fail_read,
        }
    }

    #[test]
    fn the_rom_is_enabled_read_and_disabled_again() {
        let address: PciAddress = "01:00.0".parse().unwrap();
        let fake = device(false);
        assert_eq!(read_rom(&fake, address).unwrap(), vec![0x55, 0xAA, 1, 2]);
        assert_eq!(
            *fake.writes.borrow(),
            [
                "/sys/bus/pci/devices/0000:01:00.0/rom=1",
                "/sys/bus/pci/devices/0000:01:00.0/rom=0"
            ]
        );
        assert!(!*fake.enabled.borrow());
        assert_eq!(pci_ids(&fake, address).unwrap(), (0x10de, 0x1c02));
    }

    #[test]
    fn a_failed_read_still_disables_the_rom() {
        let address: PciAddress = "01:00.0".parse().unwrap();
        let fake = device(true);
        assert!(read_rom(&fake, address).is_err());
        assert!(!*fake.enabled.borrow(), "left enabled after a failed read");
    }

    #[test]
    fn sysroot_reroots_absolute_paths() {
        let root = Sysroot::new("/tmp/fake");
        assert_eq!(
            root.path("/sys/bus/pci"),
            PathBuf::from("/tmp/fake/sys/bus/pci")
        );
    }
}
