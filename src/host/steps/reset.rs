//! How each passed PCI function is reset while the VM runs. vfio-pci resets a function when
//! QEMU opens and releases it, with the methods the kernel lists in the function's
//! `reset_method` (Linux 5.15 and later), tried in that order. `[[pci]] reset_method` writes the
//! profile's methods there for the run; without it, an AMD GPU in vendor-reset's device table
//! gets the `vendor_reset` module (when it is installed) and `device_specific`, the reset that
//! module provides. The value found is journaled before it is replaced and written back
//! afterwards; a module vmrun loaded is unloaded again.
//!
//! The preflight (findings named `reset`) shows each function's methods and warns of the cases
//! that leave a card unreset after the guest: an AMD GPU with the reset bug and no
//! `vendor_reset`, a function with no reset at all, and a function whose only reset is a bus
//! reset shared with devices the VM does not take.

use std::ops::RangeInclusive;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::host::pci::{self, PciDeviceInfo};
use crate::libvirt::xml::Element;
use crate::log::Log;
use crate::model::{PciAddress, VmConfig};
use crate::plan::VmPaths;

/// The module vendor-reset builds (`vendor-reset.ko`), as the kernel names it once loaded.
pub const VENDOR_RESET: &str = "vendor_reset";

/// The reset method vendor-reset provides: it hooks the kernel's device-specific reset.
const DEVICE_SPECIFIC: &str = "device_specific";

/// AMD (vendor 0x1002) device ids of vendor-reset's device table, by family: gnif/vendor-reset,
/// `src/device-db.h` at commit 084881c (its master branch; the table last changed in 1374629,
/// "add support for AMD Instinct MI100"). vendor-reset resets only these ids.
const VENDOR_RESET_TABLE: [(&str, &[u16]); 9] = [
    (
        "Polaris 10",
        &[
            0x67c0, 0x67c1, 0x67c2, 0x67c4, 0x67c7, 0x67d0, 0x67df, 0x67c8, 0x67c9, 0x67ca, 0x67cc,
            0x67cf, 0x6fdf,
        ],
    ),
    (
        "Polaris 11",
        &[
            0x67e0, 0x67e3, 0x67e8, 0x67eb, 0x67ef, 0x67ff, 0x67e1, 0x67e7, 0x67e9,
        ],
    ),
    (
        "Polaris 12",
        &[
            0x6980, 0x6981, 0x6985, 0x6986, 0x6987, 0x6995, 0x6997, 0x699f,
        ],
    ),
    (
        "Vega 10",
        &[
            0x6860, 0x6861, 0x6862, 0x6863, 0x6864, 0x6867, 0x6868, 0x6869, 0x686a, 0x686b, 0x686c,
            0x686d, 0x686e, 0x686f, 0x687f,
        ],
    ),
    (
        "Vega 20",
        &[0x66a0, 0x66a1, 0x66a2, 0x66a3, 0x66a4, 0x66a7, 0x66af],
    ),
    (
        "Navi 10",
        &[
            0x7310, 0x7312, 0x7318, 0x7319, 0x731a, 0x731b, 0x731e, 0x731f,
        ],
    ),
    ("Navi 14", &[0x7340, 0x7341, 0x7347, 0x734f]),
    ("Navi 12", &[0x7360, 0x7362]),
    ("Arcturus (Instinct MI100)", &[0x738c]),
];

/// AMD GPU families reported with the reset bug that vendor-reset has no reset for
/// (gnif/vendor-reset issues #65 Navi 21, #97 RX 7000, #107 RX 9060 XT), as device id ranges of
/// amdgpu's PCI id list.
const RESET_BUG_WITHOUT_VENDOR_RESET: [(RangeInclusive<u16>, &str); 3] = [
    (0x73a0..=0x73bf, "Navi 21 (RX 6800/6900)"),
    (0x7440..=0x749f, "Navi 31/32/33 (RX 7000)"),
    (0x7550..=0x759f, "Navi 44/48 (RX 9000)"),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetResetMethod {
    pub address: PciAddress,
    /// The profile's methods as the attribute takes them (`"flr bus"`); absent: the kernel's
    /// own, or `device_specific` through vendor-reset where that applies (decided on the host
    /// when the step applies, so the plan stays the same on any machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_method: Option<String>,
    /// Every function the VM passes: a bus reset is harmless when it covers only these.
    #[serde(skip)]
    pub passed: Vec<PciAddress>,
}

/// Journaled by `SetResetMethod` before it loads vendor_reset: unload it again, unless a
/// function of its table still selects `device_specific` (another VM's card).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadVendorReset {
    pub module: String,
}

/// Journaled by `SetResetMethod`: the function's `reset_method` back to the bytes it had.
/// Writing the same value twice is harmless, so a replayed record changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResetMethod {
    pub address: String,
    pub value: String,
}

fn attribute_path(address: &str) -> String {
    format!("/sys/bus/pci/devices/{address}/reset_method")
}

/// What the kernel says about a function's resets.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Resets {
    /// `reset_method` lists these (Linux 5.15 and later; empty: resets turned off by a write).
    Listed(Vec<String>),
    /// No `reset_method` but a `reset` attribute: a kernel before 5.15 that can reset it, with
    /// a method it does not name.
    Unnamed,
    /// Neither attribute: the kernel has no reset for the function (both are shown only for a
    /// function that has one).
    None,
}

impl Resets {
    fn read(host: &HostContext, address: &str) -> Self {
        if let Some(text) = host.read(&attribute_path(address)) {
            return Resets::Listed(text.split_whitespace().map(str::to_string).collect());
        }
        if host
            .root
            .path(&format!("/sys/bus/pci/devices/{address}/reset"))
            .exists()
        {
            Resets::Unnamed
        } else {
            Resets::None
        }
    }

    /// Whether the function has a reset of its own, not one of its whole bus.
    fn function_level(&self) -> bool {
        match self {
            Resets::Listed(methods) => methods.iter().any(|m| m != "bus" && m != "cxl_bus"),
            Resets::Unnamed => true,
            Resets::None => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Resets::Listed(methods) if methods.is_empty() => {
                "reset methods: none (resets are turned off)".to_string()
            }
            Resets::Listed(methods) => format!("reset methods: {}", methods.join(" ")),
            Resets::Unnamed => {
                "can be reset (this kernel has no reset_method to say how; Linux 5.15 added it)"
                    .to_string()
            }
            Resets::None => "no reset method".to_string(),
        }
    }
}

/// The ids of an AMD GPU (vendor 0x1002, display class 0x03): its device id.
fn amd_gpu(info: &PciDeviceInfo) -> Option<u16> {
    let (vendor, device) = info.vendor_device.split_once(':')?;
    if vendor != "1002" || info.class_code >> 16 != 0x03 {
        return None;
    }
    u16::from_str_radix(device, 16).ok()
}

/// The family of an AMD GPU vendor-reset can reset.
fn vendor_reset_family(info: &PciDeviceInfo) -> Option<&'static str> {
    let device = amd_gpu(info)?;
    VENDOR_RESET_TABLE
        .iter()
        .find(|(_, ids)| ids.contains(&device))
        .map(|(family, _)| *family)
}

/// The family of an AMD GPU with the reset bug that vendor-reset does not handle.
fn unhandled_family(info: &PciDeviceInfo) -> Option<&'static str> {
    let device = amd_gpu(info)?;
    RESET_BUG_WITHOUT_VENDOR_RESET
        .iter()
        .find(|(ids, _)| ids.contains(&device))
        .map(|(_, family)| *family)
}

fn vendor_reset_loaded(host: &HostContext) -> bool {
    host.root
        .path(&format!("/sys/module/{VENDOR_RESET}"))
        .is_dir()
        || host.module_loaded(VENDOR_RESET)
}

/// The running kernel's release (`uname -r`), through the host root.
fn kernel_release(host: &HostContext) -> Option<String> {
    host.read("/proc/sys/kernel/osrelease")
        .filter(|release| !release.is_empty() && !release.contains('/'))
}

/// Whether `vendor-reset.ko` (any compression; dkms puts it under `updates/dkms`) is installed
/// for the running kernel: a walk of `/lib/modules/RELEASE` through the host root that follows
/// no symbolic link (`build` and `source` point into the kernel sources).
fn vendor_reset_installed(host: &HostContext) -> bool {
    fn walk(dir: &Path, depth: u32) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.filter_map(Result::ok).any(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => depth > 0 && walk(&entry.path(), depth - 1),
                Ok(kind) if kind.is_file() => {
                    name.starts_with("vendor-reset.ko") || name.starts_with("vendor_reset.ko")
                }
                _ => false,
            }
        })
    }
    kernel_release(host)
        .is_some_and(|release| walk(&host.root.path(&format!("/lib/modules/{release}")), 8))
}

/// The other devices on `address`'s bus (under its parent bridge), or `None` on a root bus,
/// where no bus reset exists. The bus is known from the device's place under `/sys/devices`;
/// a tree without it (plain directories) counts bus 00 as the root bus.
fn bus_siblings(host: &HostContext, address: PciAddress) -> Option<Vec<PciDeviceInfo>> {
    let own = address.to_string();
    let (bus, _) = own.rsplit_once(':')?;
    let real = std::fs::canonicalize(host.root.path(&format!("/sys/bus/pci/devices/{own}"))).ok();
    let parent = real
        .as_ref()
        .and_then(|path| path.parent())
        .and_then(|parent| parent.file_name())
        .map(|name| name.to_string_lossy().into_owned());
    let root_bus = match parent {
        Some(parent) if parent.starts_with("pci") => true,
        Some(parent) if parent.parse::<PciAddress>().is_ok() => false,
        _ => address.bus == 0,
    };
    if root_bus {
        return None;
    }
    let mut siblings: Vec<PciDeviceInfo> =
        std::fs::read_dir(host.root.path("/sys/bus/pci/devices"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|other| {
                        *other != own && other.rsplit_once(':').map(|(b, _)| b) == Some(bus)
                    })
                    .filter_map(|other| pci::device_info(&host.root, &other))
                    .collect()
            })
            .unwrap_or_default();
    siblings.sort_by(|a, b| a.address.cmp(&b.address));
    Some(siblings)
}

fn name(info: &PciDeviceInfo) -> String {
    let driver = info.driver.as_deref().unwrap_or("no driver");
    let bridge = if info.is_bridge() {
        ", a bridge: with everything behind it"
    } else {
        ""
    };
    format!(
        "{} ({}, {driver}{bridge})",
        info.address, info.vendor_device
    )
}

impl SetResetMethod {
    pub fn plan<'a>(config: &'a VmConfig, _paths: &VmPaths) -> impl Iterator<Item = Self> + 'a {
        let passed: Vec<PciAddress> = config.pci.iter().map(|device| device.address).collect();
        config.pci.iter().map(move |device| SetResetMethod {
            address: device.address,
            reset_method: device
                .reset_method
                .as_ref()
                .map(|methods| methods.join(" ")),
            passed: passed.clone(),
        })
    }

    fn wanted(&self) -> Vec<&str> {
        self.reset_method
            .as_deref()
            .map(|methods| methods.split_whitespace().collect())
            .unwrap_or_default()
    }

    /// Whether the step loads vendor_reset for this function: an AMD GPU in its table, unless
    /// the profile chose methods without `device_specific`.
    fn uses_vendor_reset(&self) -> bool {
        self.reset_method.is_none() || self.wanted().contains(&DEVICE_SPECIFIC)
    }

    /// The findings about the profile's `reset_method` on this host.
    fn profile_findings(
        &self,
        host: &HostContext,
        resets: &Resets,
        vendor_reset: Option<&str>,
    ) -> Vec<Finding> {
        let Some(written) = &self.reset_method else {
            return Vec::new();
        };
        let address = self.address;
        let offered = match resets {
            Resets::Listed(offered) => offered,
            Resets::Unnamed => {
                return vec![Finding::fail(
                    "reset",
                    format!(
                        "{address}: reset_method = \"{written}\", but this kernel has no reset_method \
                         attribute (Linux 5.15 added it), so the reset cannot be chosen; remove \
                         reset_method from this [[pci]] or boot a newer kernel"
                    ),
                )]
            }
            Resets::None => {
                return vec![Finding::fail(
                    "reset",
                    format!(
                        "{address}: reset_method = \"{written}\", but the kernel has no reset for this \
                         function (no reset_method attribute) or is older than Linux 5.15; remove \
                         reset_method from this [[pci]]"
                    ),
                )]
            }
        };
        // vendor-reset's device_specific is offered only once the module is loaded: the step
        // loads it first when it is installed.
        let module_ready =
            vendor_reset.is_some() && (vendor_reset_loaded(host) || vendor_reset_installed(host));
        let missing: Vec<&str> = self
            .wanted()
            .into_iter()
            .filter(|m| {
                // device_specific appears once the step has loaded vendor_reset.
                let coming = *m == DEVICE_SPECIFIC && module_ready;
                !(coming || offered.iter().any(|o| o == m))
            })
            .collect();
        if missing.is_empty() {
            let now = if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(" ")
            };
            return vec![Finding::pass(
                "reset",
                format!(
                    "{address}: reset_method \"{written}\" is written for the run (now {now}) and \
                     restored after"
                ),
            )];
        }
        let offers = if offered.is_empty() {
            "none (resets are turned off)".to_string()
        } else {
            offered.join(" ")
        };
        let hint = if missing.contains(&DEVICE_SPECIFIC) && vendor_reset.is_some() {
            "; device_specific comes with the vendor_reset module, which is not installed for this \
             kernel"
        } else {
            ""
        };
        vec![Finding::fail(
            "reset",
            format!(
                "{address} does not offer the reset method{} {} (reset_method = \"{written}\"); it \
                 offers: {offers}{hint}. Write methods from that list (if an earlier write narrowed it, \
                 `echo default > /sys/bus/pci/devices/{address}/reset_method` shows the kernel's full list)",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            ),
        )]
    }
}

impl Step for SetResetMethod {
    fn describe(&self) -> String {
        match &self.reset_method {
            Some(methods) => format!(
                "set {}'s reset_method to \"{methods}\" while the VM runs",
                self.address
            ),
            None => format!(
                "select vendor-reset's device_specific reset for {} while the VM runs if it is an AMD \
                 GPU vendor-reset knows and the module is installed",
                self.address
            ),
        }
    }

    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        let Some(methods) = &self.reset_method else {
            return LibvirtNotes::default();
        };
        LibvirtNotes {
            comments: vec![format!(
                "vmrun writes \"{methods}\" to /sys/bus/pci/devices/{}/reset_method while the VM runs and \
                 restores it after; libvirt has no such setting: {} would write it, and one acting on \
                 `release end` write the old value back",
                self.address,
                vm.hook("prepare begin")
            )],
            metadata: vec![Element::new("vmrun:pci")
                .attr("address", self.address.to_string())
                .attr("reset-method", methods.clone())],
            devices: Vec::new(),
        }
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        // An absent device is the vfio step's to report.
        let address = self.address.to_string();
        let Some(info) = pci::device_info(&host.root, &address) else {
            return Vec::new();
        };
        let resets = Resets::read(host, &address);
        let vendor_reset = vendor_reset_family(&info);
        let mut findings = Vec::new();

        if resets.function_level() {
            findings.push(Finding::pass(
                "reset",
                format!("{address} {}", resets.describe()),
            ));
        } else {
            // Only a bus reset, or none: vfio-pci resets a function that has no reset of its
            // own with a reset of its whole bus, which needs every device on it.
            match bus_siblings(host, self.address) {
                Some(siblings) if !siblings.is_empty() => {
                    let others: Vec<String> = siblings
                        .iter()
                        .filter(|s| !self.passed.iter().any(|p| p.to_string() == s.address))
                        .map(name)
                        .collect();
                    let bus = address.rsplit_once(':').map_or("", |(bus, _)| bus);
                    if others.is_empty() {
                        findings.push(Finding::pass(
                            "reset",
                            format!(
                                "{address} {}: it is reset with a reset of bus {bus}, whose other devices \
                                 the VM passes too",
                                resets.describe()
                            ),
                        ));
                    } else {
                        findings.push(Finding::warn(
                            "reset",
                            format!(
                                "{address} {}: its only reset is a reset of bus {bus}, which resets every \
                                 device on it, and {} stay with the host: vfio-pci then cannot reset \
                                 {address}, and the guest gets it as the host or the last guest left it \
                                 (a GPU may stay black or fail to start). Pass those functions too, or \
                                 put the card in a slot of its own",
                                resets.describe(),
                                others.join(", ")
                            ),
                        ));
                    }
                }
                _ if resets == Resets::None || resets == Resets::Listed(Vec::new()) => {
                    findings.push(Finding::warn(
                        "reset",
                        format!(
                            "{address} has no reset method: neither vfio-pci nor the kernel can reset it, \
                             so the guest gets it as the host or the last guest left it (a GPU may stay \
                             black or fail to start in the guest); a reboot resets it"
                        ),
                    ));
                }
                _ => findings.push(Finding::pass(
                    "reset",
                    format!("{address} {}", resets.describe()),
                )),
            }
        }

        if let Some(family) = vendor_reset {
            let what = if self.uses_vendor_reset() {
                if self.reset_method.is_some() {
                    "the profile's reset_method is written"
                } else {
                    "vmrun selects device_specific for the run"
                }
            } else {
                "the profile's reset_method is written instead of vendor-reset's device_specific"
            };
            if vendor_reset_loaded(host) {
                findings.push(Finding::pass(
                    "reset",
                    format!(
                        "{address} is an AMD {family} GPU in vendor-reset's table and {VENDOR_RESET} is \
                         loaded: {what}"
                    ),
                ));
            } else if vendor_reset_installed(host) {
                let load = if self.uses_vendor_reset() {
                    "vmrun loads it for the run (and unloads it after)"
                } else {
                    "vmrun leaves it unloaded"
                };
                findings.push(Finding::pass(
                    "reset",
                    format!(
                        "{address} is an AMD {family} GPU in vendor-reset's table and {VENDOR_RESET} is \
                         installed: {load}; {what}"
                    ),
                ));
            } else {
                let release = kernel_release(host).unwrap_or_else(|| "?".to_string());
                findings.push(Finding::warn(
                    "reset",
                    format!(
                        "{address} is an AMD {family} GPU, which has the AMD reset bug, and the \
                         {VENDOR_RESET} module that resets it is neither loaded nor installed for this \
                         kernel ({release}): the card may not come back after the guest (black screen, \
                         the next start fails). Install vendor-reset (github.com/gnif/vendor-reset, with \
                         dkms); vmrun then loads it for the run and selects device_specific"
                    ),
                ));
            }
        } else if let Some(family) = unhandled_family(&info) {
            findings.push(Finding::warn(
                "reset",
                format!(
                    "{address} is an AMD {family} GPU: cards of this family are reported with the AMD \
                     reset bug, and vendor-reset has no reset for them. Shut the guest down from inside \
                     it; if the card stays black or the next start fails, suspend and resume the host \
                     (or reboot) before starting the VM again"
                ),
            ));
        }

        findings.extend(self.profile_findings(host, &resets, vendor_reset));
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let address = self.address.to_string();
        let path = attribute_path(&address);
        let family = pci::device_info(&host.root, &address)
            .as_ref()
            .and_then(vendor_reset_family);
        if let Some(family) = family.filter(|_| self.uses_vendor_reset()) {
            if !vendor_reset_loaded(host) && vendor_reset_installed(host) {
                log.info(&format!(
                    "loading {VENDOR_RESET} for {address} (AMD {family})"
                ));
                record.change(
                    UnloadVendorReset {
                        module: VENDOR_RESET.to_string(),
                    },
                    || {
                        host.run_checked(&["modprobe", VENDOR_RESET], log)
                            .map(|_| ())
                    },
                )?;
            }
        }
        let wanted = match &self.reset_method {
            Some(methods) => methods.clone(),
            None if family.is_some() && vendor_reset_loaded(host) => DEVICE_SPECIFIC.to_string(),
            None => return Ok(()),
        };
        let Ok(bytes) = host.sysfs.read(&path) else {
            if self.reset_method.is_none() {
                // Before Linux 5.15 the kernel tries the device-specific reset first anyway, which
                // is what vendor-reset hooks: loading it is all there is to do.
                log.debug(&format!(
                    "no {path}: vendor-reset's reset is the kernel's first"
                ));
                return Ok(());
            }
            return Err(StepError::Other(format!(
                "{address}: reset_method = \"{wanted}\" cannot be written: {path} does not exist (a kernel \
                 before Linux 5.15, or a function without any reset); remove reset_method from its [[pci]]"
            )));
        };
        // The value as read, newline included: what is written back is exactly what was there.
        let value = String::from_utf8_lossy(&bytes).into_owned();
        if value.trim() == wanted {
            log.debug(&format!("{address} reset_method is already {wanted}"));
            return Ok(());
        }
        log.info(&format!(
            "{address} reset_method {} → {wanted}",
            if value.trim().is_empty() {
                "(none)"
            } else {
                value.trim()
            }
        ));
        record.change(
            RestoreResetMethod {
                address: address.clone(),
                value: value.clone(),
            },
            || {
                host.write(&path, &wanted).map_err(|error| {
                    StepError::Other(format!(
                        "the kernel refused reset_method \"{wanted}\" for {address} (it offered: {}): {error}",
                        value.trim()
                    ))
                })
            },
        )
    }
}

impl Undoable for UnloadVendorReset {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        if !vendor_reset_loaded(host) {
            return Ok(());
        }
        // This VM's own functions were given back their methods first (undone in reverse).
        let still_used: Vec<String> = std::fs::read_dir(host.root.path("/sys/bus/pci/devices"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|address| {
                        host.read(&attribute_path(address)).is_some_and(|methods| {
                            methods.split_whitespace().any(|m| m == DEVICE_SPECIFIC)
                        }) && pci::device_info(&host.root, address)
                            .as_ref()
                            .and_then(vendor_reset_family)
                            .is_some()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !still_used.is_empty() {
            log.info(&format!(
                "{} stays loaded: {} still select device_specific (another VM's?)",
                self.module,
                still_used.join(", ")
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

impl Undoable for RestoreResetMethod {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let path = attribute_path(&self.address);
        if !host.root.path(&path).exists() {
            // The function is gone (removed, or the machine rebooted before `recover`): one
            // that appears again starts with the kernel's methods.
            log.debug(&format!("no {path}: nothing to restore"));
            return Ok(());
        }
        log.info(&format!(
            "{} reset_method back to {}",
            self.address,
            if self.value.trim().is_empty() {
                "(none)"
            } else {
                self.value.trim()
            }
        ));
        // An empty list (resets turned off) reads as nothing; the kernel takes a lone newline
        // for it, where an empty write would never reach it.
        let value = if self.value.is_empty() {
            "\n"
        } else {
            &self.value
        };
        host.write(&path, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::journal::Journal;
    use crate::host::steps::testing::{self, log, output, FakeHost};
    use crate::host::steps::{HostStep, Undo};

    const GPU: &str = "0000:01:00.0";
    const AUDIO: &str = "0000:01:00.1";
    const RELEASE: &str = "6.1.0-28-amd64";

    fn step(address: &str, methods: Option<&str>, passed: &[&str]) -> SetResetMethod {
        SetResetMethod {
            address: address.parse().unwrap(),
            reset_method: methods.map(str::to_string),
            passed: passed.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    /// modprobe as the kernel answers it: a load adds the module to /proc/modules, `-r`
    /// takes it out.
    fn host() -> FakeHost {
        let fake = FakeHost::answering(|root, line| {
            let modules = root.join("proc/modules");
            let text = std::fs::read_to_string(&modules).unwrap_or_default();
            if let Some(module) = line.strip_prefix("modprobe -r ") {
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
        });
        fake.write("/proc/modules", "");
        fake.write("/proc/sys/kernel/osrelease", &format!("{RELEASE}\n"));
        fake
    }

    /// A function with its ids, class and (unless `None`) reset_method; `reset` is there when
    /// the kernel has any reset for it.
    fn function(fake: &FakeHost, address: &str, ids: &str, class: &str, methods: Option<&str>) {
        let (vendor, device) = ids.split_once(':').unwrap();
        let dir = format!("/sys/bus/pci/devices/{address}");
        fake.write(&format!("{dir}/vendor"), &format!("0x{vendor}\n"));
        fake.write(&format!("{dir}/device"), &format!("0x{device}\n"));
        fake.write(&format!("{dir}/class"), &format!("{class}\n"));
        if let Some(methods) = methods {
            fake.write(&format!("{dir}/reset_method"), methods);
            if !methods.trim().is_empty() {
                fake.write(&format!("{dir}/reset"), "");
            }
        }
    }

    fn raw(fake: &FakeHost, address: &str) -> Vec<u8> {
        std::fs::read(
            fake.root()
                .join(attribute_path(address).trim_start_matches('/')),
        )
        .unwrap()
    }

    fn install_vendor_reset(fake: &FakeHost) {
        fake.write(
            &format!("/lib/modules/{RELEASE}/updates/dkms/vendor-reset.ko.xz"),
            "",
        );
    }

    fn journal(fake: &FakeHost) -> Vec<Undo> {
        Journal::at(&fake.root().join("journal"))
            .entries()
            .unwrap()
            .into_iter()
            .map(|entry| entry.undo)
            .collect()
    }

    fn messages(findings: &[Finding], status: Status) -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.status == status)
            .map(|f| {
                assert_eq!(f.check, "reset");
                f.message.clone()
            })
            .collect()
    }

    #[test]
    fn the_profiles_methods_are_written_for_the_run_and_the_exact_bytes_come_back() {
        let fake = host();
        function(&fake, GPU, "8086:10d3", "0x020000", Some("flr pm bus\n"));
        let session = fake.session(vec![HostStep::SetResetMethod(step(
            GPU,
            Some("bus"),
            &[GPU],
        ))]);
        session.apply(&log()).unwrap();
        assert_eq!(raw(&fake, GPU), b"bus");
        assert_eq!(
            journal(&fake),
            [Undo::RestoreResetMethod(RestoreResetMethod {
                address: GPU.to_string(),
                value: "flr pm bus\n".to_string(),
            })]
        );
        session.undo_all(&log()).unwrap();
        assert_eq!(raw(&fake, GPU), b"flr pm bus\n");
        assert!(session.leftovers().unwrap().is_empty());
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    }

    #[test]
    fn a_value_already_set_is_left_alone_and_an_empty_one_comes_back_as_a_newline() {
        let fake = host();
        function(&fake, GPU, "8086:10d3", "0x020000", Some("bus\n"));
        function(&fake, AUDIO, "8086:10d3", "0x020000", Some(""));
        let session = fake.session(vec![
            HostStep::SetResetMethod(step(GPU, Some("bus"), &[GPU, AUDIO])),
            HostStep::SetResetMethod(step(AUDIO, Some("flr"), &[GPU, AUDIO])),
        ]);
        session.apply(&log()).unwrap();
        let entries = journal(&fake);
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(raw(&fake, AUDIO), b"flr");
        session.undo_all(&log()).unwrap();
        assert_eq!(raw(&fake, GPU), b"bus\n");
        // Resets turned off read as nothing; the kernel takes a newline for that.
        assert_eq!(raw(&fake, AUDIO), b"\n");
        // A function gone before the undo is skipped; undoing twice changes nothing.
        let record = RestoreResetMethod {
            address: "0000:09:00.0".to_string(),
            value: "flr\n".to_string(),
        };
        record.undo(&fake.host(), &log()).unwrap();
        assert!(!fake.exists(&attribute_path("0000:09:00.0")));
    }

    #[test]
    fn a_kernel_without_reset_method_cannot_take_the_profiles_methods() {
        let fake = host();
        function(&fake, GPU, "8086:10d3", "0x020000", None);
        fake.write(&format!("/sys/bus/pci/devices/{GPU}/reset"), "");
        let session = fake.session(vec![HostStep::SetResetMethod(step(
            GPU,
            Some("flr"),
            &[GPU],
        ))]);
        let error = session.apply(&log()).unwrap_err().to_string();
        assert!(error.contains("Linux 5.15"), "{error}");
        assert!(journal(&fake).is_empty());
        let findings = step(GPU, Some("flr"), &[GPU]).preflight(&fake.host());
        let fails = messages(&findings, Status::Fail);
        assert_eq!(fails.len(), 1, "{findings:?}");
        assert!(fails[0].contains("no reset_method attribute (Linux 5.15"));
        // Without the key the function is only described.
        let plain = step(GPU, None, &[GPU]).preflight(&fake.host());
        assert_eq!(messages(&plain, Status::Pass).len(), 1, "{plain:?}");
        assert!(plain[0].message.contains("this kernel has no reset_method"));
    }

    #[test]
    fn vendor_reset_is_loaded_and_device_specific_selected_then_both_undone() {
        let fake = host();
        function(&fake, GPU, "1002:67df", "0x030000", Some("bus\n"));
        install_vendor_reset(&fake);
        let passed = [GPU];
        let findings = step(GPU, None, &passed).preflight(&fake.host());
        let passes = messages(&findings, Status::Pass);
        assert!(
            passes.iter().any(|m| m.contains("AMD Polaris 10")
                && m.contains("vendor_reset is installed: vmrun loads it for the run")),
            "{findings:?}"
        );
        let session = fake.session(vec![HostStep::SetResetMethod(step(GPU, None, &passed))]);
        session.apply(&log()).unwrap();
        assert_eq!(fake.calls(), ["modprobe vendor_reset"]);
        assert!(fake.read("/proc/modules").starts_with("vendor_reset "));
        assert_eq!(raw(&fake, GPU), b"device_specific");
        assert_eq!(
            journal(&fake),
            [
                Undo::UnloadVendorReset(UnloadVendorReset {
                    module: VENDOR_RESET.to_string()
                }),
                Undo::RestoreResetMethod(RestoreResetMethod {
                    address: GPU.to_string(),
                    value: "bus\n".to_string(),
                }),
            ]
        );
        session.undo_all(&log()).unwrap();
        assert_eq!(raw(&fake, GPU), b"bus\n");
        assert_eq!(
            fake.calls(),
            ["modprobe vendor_reset", "modprobe -r vendor_reset"]
        );
        assert!(fake.read("/proc/modules").is_empty());
    }

    #[test]
    fn vendor_reset_stays_loaded_while_another_card_selects_device_specific() {
        let fake = host();
        function(&fake, GPU, "1002:67df", "0x030000", Some("bus\n"));
        // Another VM's Vega, given device_specific after this VM loaded the module.
        function(
            &fake,
            "0000:02:00.0",
            "1002:687f",
            "0x030000",
            Some("bus\n"),
        );
        install_vendor_reset(&fake);
        let session = fake.session(vec![HostStep::SetResetMethod(step(GPU, None, &[GPU]))]);
        session.apply(&log()).unwrap();
        fake.write(&attribute_path("0000:02:00.0"), "device_specific\n");
        session.undo_all(&log()).unwrap();
        assert_eq!(raw(&fake, GPU), b"bus\n");
        assert_eq!(fake.calls(), ["modprobe vendor_reset"]);
        assert!(fake.read("/proc/modules").starts_with("vendor_reset "));
        // Once that card is given back too, a replayed record unloads it.
        fake.write(&attribute_path("0000:02:00.0"), "bus\n");
        UnloadVendorReset {
            module: VENDOR_RESET.to_string(),
        }
        .undo(&fake.host(), &log())
        .unwrap();
        assert_eq!(
            fake.calls(),
            ["modprobe vendor_reset", "modprobe -r vendor_reset"]
        );
    }

    #[test]
    fn a_vendor_reset_the_host_loaded_stays_loaded() {
        let fake = host();
        function(&fake, GPU, "1002:731f", "0x030000", Some("bus\n"));
        fake.write("/sys/module/vendor_reset/initstate", "live\n");
        let session = fake.session(vec![HostStep::SetResetMethod(step(GPU, None, &[GPU]))]);
        session.apply(&log()).unwrap();
        assert_eq!(raw(&fake, GPU), b"device_specific");
        session.undo_all(&log()).unwrap();
        assert_eq!(raw(&fake, GPU), b"bus\n");
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    }

    #[test]
    fn without_vendor_reset_nothing_changes_and_check_warns() {
        let fake = host();
        function(&fake, GPU, "1002:67ff", "0x030000", Some("bus\n"));
        let session = fake.session(vec![HostStep::SetResetMethod(step(GPU, None, &[GPU]))]);
        session.apply(&log()).unwrap();
        assert!(journal(&fake).is_empty());
        assert_eq!(raw(&fake, GPU), b"bus\n");
        let findings = step(GPU, None, &[GPU]).preflight(&fake.host());
        let warnings = messages(&findings, Status::Warn);
        assert_eq!(warnings.len(), 1, "{findings:?}");
        assert!(warnings[0].contains("AMD Polaris 11 GPU"), "{warnings:?}");
        assert!(warnings[0].contains(&format!(
            "neither loaded nor installed for this kernel ({RELEASE})"
        )));
        assert!(warnings[0].contains("gnif/vendor-reset"));
        // The same card with a profile that names other methods does not want the module.
        let own = step(GPU, Some("bus"), &[GPU]);
        assert!(!own.uses_vendor_reset());
        install_vendor_reset(&fake);
        let session = fake.session(vec![HostStep::SetResetMethod(own)]);
        session.apply(&log()).unwrap();
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn device_specific_from_the_profile_is_offered_once_vendor_reset_can_load() {
        let fake = host();
        function(&fake, GPU, "1002:687f", "0x030000", Some("bus\n"));
        let wanted = step(GPU, Some("device_specific bus"), &[GPU]);
        let fails = messages(&wanted.preflight(&fake.host()), Status::Fail);
        assert_eq!(fails.len(), 1);
        assert!(fails[0].contains("does not offer the reset method device_specific"));
        assert!(
            fails[0].contains("it offers: bus; device_specific comes with the vendor_reset module")
        );
        install_vendor_reset(&fake);
        let findings = wanted.preflight(&fake.host());
        assert!(messages(&findings, Status::Fail).is_empty(), "{findings:?}");
        let session = fake.session(vec![HostStep::SetResetMethod(wanted)]);
        session.apply(&log()).unwrap();
        assert_eq!(fake.calls(), ["modprobe vendor_reset"]);
        assert_eq!(raw(&fake, GPU), b"device_specific bus");
    }

    #[test]
    fn a_method_the_function_does_not_offer_fails_the_preflight_naming_what_it_offers() {
        let fake = host();
        function(&fake, GPU, "10de:2184", "0x030000", Some("flr bus\n"));
        let findings = step(GPU, Some("pm acpi"), &[GPU]).preflight(&fake.host());
        let fails = messages(&findings, Status::Fail);
        assert_eq!(fails.len(), 1, "{findings:?}");
        assert!(
            fails[0].starts_with(
                "0000:01:00.0 does not offer the reset methods pm, acpi (reset_method = \"pm acpi\"); \
                 it offers: flr bus."
            ),
            "{}",
            fails[0]
        );
        let ok = step(GPU, Some("bus flr"), &[GPU]).preflight(&fake.host());
        assert_eq!(
            messages(&ok, Status::Pass),
            [
                "0000:01:00.0 reset methods: flr bus",
                "0000:01:00.0: reset_method \"bus flr\" is written for the run (now flr bus) and \
                 restored after"
            ]
        );
    }

    #[test]
    fn a_function_without_any_reset_is_warned_of() {
        let fake = host();
        function(&fake, GPU, "10de:2184", "0x030000", None);
        let findings = step(GPU, None, &[GPU]).preflight(&fake.host());
        let warnings = messages(&findings, Status::Warn);
        assert_eq!(warnings.len(), 1, "{findings:?}");
        assert!(warnings[0].starts_with("0000:01:00.0 has no reset method"));
        let fails = messages(
            &step(GPU, Some("bus"), &[GPU]).preflight(&fake.host()),
            Status::Fail,
        );
        assert!(fails[0].contains("the kernel has no reset for this function"));
    }

    #[test]
    fn a_bus_reset_shared_with_the_hosts_devices_names_them() {
        let fake = host();
        // A GPU and its audio function without a reset of their own, a NIC the host keeps
        // behind the same bridge (bus 03).
        let (gpu, audio, nic) = ("0000:03:00.0", "0000:03:00.1", "0000:03:01.0");
        function(&fake, gpu, "10de:1c02", "0x030000", Some("bus\n"));
        function(&fake, audio, "10de:10f1", "0x040300", None);
        function(&fake, nic, "8086:10d3", "0x020000", Some("flr\n"));
        let findings = step(gpu, None, &[gpu, audio]).preflight(&fake.host());
        let warnings = messages(&findings, Status::Warn);
        assert_eq!(warnings.len(), 1, "{findings:?}");
        assert!(
            warnings[0].starts_with(
                "0000:03:00.0 reset methods: bus: its only reset is a reset of bus 0000:03, which \
                 resets every device on it, and 0000:03:01.0 (8086:10d3, no driver) stay with the host"
            ),
            "{}",
            warnings[0]
        );
        assert!(!warnings[0].contains("0000:03:00.1"));
        // The audio function has no method at all: the same bus reset is its only one.
        let audio_findings = step(audio, None, &[gpu, audio]).preflight(&fake.host());
        assert!(messages(&audio_findings, Status::Warn)[0].contains("0000:03:01.0"));
        // With the NIC passed too, the bus reset covers only the VM's devices.
        let all = step(gpu, None, &[gpu, audio, nic]).preflight(&fake.host());
        assert!(messages(&all, Status::Warn).is_empty(), "{all:?}");
        assert!(messages(&all, Status::Pass)[0].contains("whose other devices the VM passes too"));
        // A function alone on its bus with only `bus` is fine.
        function(
            &fake,
            "0000:05:00.0",
            "8086:10d3",
            "0x020000",
            Some("bus\n"),
        );
        let alone = step("0000:05:00.0", None, &["0000:05:00.0"]).preflight(&fake.host());
        assert_eq!(
            messages(&alone, Status::Pass),
            ["0000:05:00.0 reset methods: bus"]
        );
    }

    #[test]
    fn amd_cards_vendor_reset_does_not_handle_get_advice() {
        let fake = host();
        function(&fake, GPU, "1002:744c", "0x030000", Some("bus\n"));
        let findings = step(GPU, None, &[GPU]).preflight(&fake.host());
        let warnings = messages(&findings, Status::Warn);
        assert_eq!(warnings.len(), 1, "{findings:?}");
        assert!(warnings[0].contains("AMD Navi 31/32/33 (RX 7000) GPU"));
        assert!(warnings[0].contains("suspend and resume the host"));
        // Its HDMI audio function (not a display) is not the card's reset.
        function(&fake, AUDIO, "1002:ab30", "0x040300", Some("flr\n"));
        assert!(messages(
            &step(AUDIO, None, &[GPU, AUDIO]).preflight(&fake.host()),
            Status::Warn
        )
        .is_empty());
        // An absent function is the vfio step's to report.
        assert!(step("0000:0a:00.0", None, &[])
            .preflight(&fake.host())
            .is_empty());
    }

    #[test]
    fn the_vendor_reset_table_holds_every_id_of_its_source() {
        let ids: Vec<u16> = VENDOR_RESET_TABLE
            .iter()
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        // src/device-db.h at 084881c has 67 AMD entries, none twice.
        assert_eq!(ids.len(), 67);
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        for (range, _) in &RESET_BUG_WITHOUT_VENDOR_RESET {
            assert!(!ids.iter().any(|id| range.contains(id)));
        }
    }

    #[test]
    fn one_step_per_function_knowing_every_passed_function() {
        let none = testing::config("");
        let paths = VmPaths::new(&crate::plan::BaseDirs::resolve(None, None), &none.name).unwrap();
        assert_eq!(SetResetMethod::plan(&none, &paths).count(), 0);
        let two = testing::config(
            "[[pci]]\naddress = \"01:00.0\"\nreset_method = \"flr  bus\"\n[[pci]]\naddress = \"01:00.1\"\n",
        );
        let planned: Vec<SetResetMethod> = SetResetMethod::plan(&two, &paths).collect();
        assert_eq!(
            planned,
            [
                step(GPU, Some("flr bus"), &[GPU, AUDIO]),
                step(AUDIO, None, &[GPU, AUDIO])
            ]
        );
        let json = serde_json::to_value(HostStep::SetResetMethod(planned[0].clone())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"step": "set_reset_method", "address": GPU, "reset_method": "flr bus"})
        );
    }

    #[test]
    fn libvirt_gets_a_comment_and_the_key_in_metadata() {
        let config = testing::config("");
        let notes = testing::libvirt(
            &HostStep::SetResetMethod(step(GPU, Some("bus"), &[])),
            &config,
        );
        assert!(notes.comments[0].contains("/sys/bus/pci/devices/0000:01:00.0/reset_method"));
        assert!(notes.metadata[0]
            .attributes
            .contains(&("reset-method".to_string(), "bus".to_string())));
        let none = testing::libvirt(&HostStep::SetResetMethod(step(GPU, None, &[])), &config);
        assert!(none.comments.is_empty() && none.metadata.is_empty());
    }
}
