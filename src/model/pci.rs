//! `[[pci]]`: passed-through host devices and their ROMs.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawPci {
    pub address: Option<Text>,
    pub romfile: Option<Text>,
    pub vga: Option<Flag>,
    pub rombar: Option<Flag>,
    pub rescan: Option<Flag>,
    pub boot_order: Option<Int>,
    pub reset_method: Option<Text>,
    // SR-IOV: a virtual function of a physical function, instead of `address`.
    pub pf: Option<Text>,
    pub vf: Option<Int>,
    pub mac: Option<Text>,
    pub vlan: Option<Int>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    pub address: PciAddress,
    pub romfile: Option<PathBuf>,
    /// The guest's primary display adapter (gets `x-vga=on` under SeaBIOS).
    pub vga: bool,
    pub rombar: Option<bool>,
    /// Remove the device and rescan the bus before binding it: the host firmware or a host
    /// driver can leave its BARs where vfio-pci cannot reserve them ("BAR can't reserve").
    pub rescan: bool,
    /// QEMU's `bootindex`, shared with the disks' boot orders.
    pub boot_order: Option<u32>,
    /// The kernel reset methods written to the function's `reset_method` for the run, in the
    /// order the kernel tries them (`["bus"]`); `None` leaves the kernel's own choice.
    pub reset_method: Option<Vec<String>>,
    /// A virtual function of an SR-IOV physical function (`pf` + `vf`). `address` is then the
    /// PF's in the model as written, and the VF's once `plan::resolve` has computed it from the
    /// PF's `sriov_offset` and `sriov_stride` (every stage after resolution sees the VF's).
    pub sriov: Option<SriovVf>,
}

/// `pf` + `vf` (+ `mac`, `vlan`) of a `[[pci]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SriovVf {
    pub pf: PciAddress,
    /// 0-based: the PF's (N+1)th VF, `virtfnN` in sysfs.
    pub index: u16,
    pub mac: Option<MacAddress>,
    pub vlan: Option<u16>,
}

/// The reset methods a kernel's `reset_method` attribute knows (drivers/pci/pci.c,
/// `pci_reset_fn_methods`, Linux 5.15 and later).
pub const RESET_METHODS: [&str; 7] = [
    "flr",
    "af_flr",
    "pm",
    "bus",
    "cxl_bus",
    "device_specific",
    "acpi",
];

/// `reset_method = "flr bus"`: one or more known method names separated by spaces, each at
/// most once (the kernel refuses a repeated name).
fn reset_methods(text: &str) -> Result<Vec<String>, String> {
    let known = RESET_METHODS.join(", ");
    let mut methods: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        if !RESET_METHODS.contains(&word) {
            return Err(format!(
                "`{word}` is not a kernel reset method; write one or more of {known}, separated by \
                 spaces, e.g. \"flr bus\""
            ));
        }
        if methods.iter().any(|m| m == word) {
            return Err(format!(
                "`{word}` is named twice; name each method once, e.g. \"flr bus\""
            ));
        }
        methods.push(word.to_string());
    }
    if methods.is_empty() {
        return Err(format!(
            "\"{text}\" names no reset method; write one or more of {known}, separated by spaces, or leave \
             the key out to keep the kernel's choice"
        ));
    }
    Ok(methods)
}

impl Validator {
    pub(super) fn pci(
        &mut self,
        raw: &RawProfile,
        firmware: &Firmware,
        disks: &[Disk],
    ) -> Vec<PciDevice> {
        let mut devices = Vec::new();
        let mut seen: HashMap<PciAddress, (usize, String)> = HashMap::new();
        let mut vga_seen: Option<usize> = None;
        let mut vf_seen: HashMap<(PciAddress, u16), usize> = HashMap::new();
        let mut boot_orders: HashMap<u32, String> = disks
            .iter()
            .enumerate()
            .filter_map(|(index, disk)| Some((disk.boot_order?, format!("disk[{index}]"))))
            .collect();
        for (index, spanned) in raw.pci.iter().enumerate() {
            let p = spanned.get_ref();
            let key = |field: &str| format!("pci[{index}].{field}");
            let sriov = match (&p.address, &p.pf) {
                (Some(_), Some(pf)) => {
                    self.error(
                        pf.span(),
                        &key("pf"),
                        "`address` and `pf` are two ways to name the device; write `address` for a \
                         device, or `pf` with `vf` for a virtual function",
                    );
                    continue;
                }
                (None, None) => {
                    self.error(
                        spanned.span(),
                        &key("address"),
                        "every [[pci]] needs `address`, e.g. \"0000:01:00.0\" (or `pf` with `vf` \
                         for an SR-IOV virtual function)",
                    );
                    continue;
                }
                (Some(_), None) => {
                    for (raw, name) in [(&p.vf, "vf"), (&p.vlan, "vlan")] {
                        if let Some(raw) = raw {
                            self.error(
                                raw.span(),
                                &key(name),
                                format!("`{name}` belongs to a virtual function; write `pf` instead of `address`"),
                            );
                        }
                    }
                    if let Some(mac) = &p.mac {
                        self.error(
                            mac.span(),
                            &key("mac"),
                            "`mac` belongs to a virtual function; write `pf` instead of `address`",
                        );
                    }
                    None
                }
                (None, Some(pf_text)) => match self.sriov_vf(p, pf_text, spanned.span(), &key) {
                    Some(vf) => Some((vf, pf_text)),
                    None => continue,
                },
            };
            let (address, address_text) = match (&sriov, &p.address) {
                (Some((vf, pf_text)), _) => (vf.pf, *pf_text),
                (None, Some(text)) => {
                    let Some(address) = self.parse::<PciAddress>(text, &key("address")) else {
                        continue;
                    };
                    (address, text)
                }
                (None, None) => continue,
            };
            let sriov = match sriov {
                Some((vf, pf_text)) => {
                    if let Some(first) = vf_seen.get(&(vf.pf, vf.index)) {
                        self.error(
                            p.vf.as_ref().map_or(pf_text.span(), |raw| raw.span()),
                            &key("vf"),
                            format!(
                                "pci[{first}] is VF {} of {} already; remove one",
                                vf.index, vf.pf
                            ),
                        );
                        continue;
                    }
                    vf_seen.insert((vf.pf, vf.index), index);
                    Some(vf)
                }
                None => None,
            };
            if let Some((first, written)) = seen.get(&address).filter(|_| sriov.is_none()) {
                self.error(
                    address_text.span(),
                    &key("address"),
                    format!(
                        "`{}` is the same device as pci[{first}] (`{written}`): both mean {address}; \
                         remove one",
                        address_text.get_ref()
                    ),
                );
                continue;
            }
            if sriov.is_none() {
                seen.insert(address, (index, address_text.get_ref().clone()));
            }
            let romfile = p.romfile.as_ref().map(|text| {
                let path = self.resolve_path(text.get_ref());
                if !path.is_file() {
                    self.missing_file(text.span(), &key("romfile"), &path, "ROM file");
                }
                path
            });
            let vga = p.vga.as_ref().is_some_and(|f| *f.get_ref());
            if let (true, Some(flag)) = (vga, &p.vga) {
                if let Some(first) = vga_seen {
                    self.error(
                        flag.span(),
                        &key("vga"),
                        format!("pci[{first}] is already the guest's primary VGA; only one can be"),
                    );
                }
                vga_seen = Some(index);
                if matches!(firmware, Firmware::SeaBios) && address.function != 0 {
                    self.error(
                        flag.span(),
                        &key("vga"),
                        "a VGA device is function 0 of its slot",
                    );
                }
            }
            let boot_order = p.boot_order.as_ref().and_then(|raw| {
                let order = self.int_in(raw, &key("boot_order"), 1..=99)? as u32;
                if let Some(other) = boot_orders.insert(order, format!("pci[{index}]")) {
                    self.error(
                        raw.span(),
                        &key("boot_order"),
                        format!("{other} has boot_order {order} too; use distinct numbers"),
                    );
                }
                Some(order)
            });
            devices.push(PciDevice {
                address,
                romfile,
                vga,
                rombar: p.rombar.as_ref().map(|f| *f.get_ref()),
                rescan: p.rescan.as_ref().is_some_and(|f| *f.get_ref()),
                boot_order,
                reset_method: p.reset_method.as_ref().and_then(|raw| {
                    reset_methods(raw.get_ref())
                        .map_err(|message| self.error(raw.span(), &key("reset_method"), message))
                        .ok()
                }),
                sriov,
            });
        }
        devices
    }
}

impl Validator {
    /// `pf`, `vf`, `mac` and `vlan` of a `[[pci]]` that names a virtual function.
    fn sriov_vf(
        &mut self,
        p: &RawPci,
        pf_text: &Text,
        table: std::ops::Range<usize>,
        key: &dyn Fn(&str) -> String,
    ) -> Option<SriovVf> {
        let pf = self.parse::<PciAddress>(pf_text, &key("pf"));
        let index = match &p.vf {
            Some(raw) => self.int_in(raw, &key("vf"), 0..=65534).map(|n| n as u16),
            None => {
                self.error(
                    table,
                    &key("vf"),
                    "`pf` needs `vf`, the virtual function's number counted from 0 \
                     (`vf = 0` is the PF's first VF)",
                );
                None
            }
        };
        let mac = p.mac.as_ref().and_then(|raw| {
            let mac = self.parse::<MacAddress>(raw, &key("mac"))?;
            if mac.0 == [0; 6] {
                self.error(
                    raw.span(),
                    &key("mac"),
                    "00:00:00:00:00:00 means no address; write a unicast one such as 52:54:00:xx:xx:xx, \
                     or leave `mac` out to keep the VF's",
                );
                return None;
            }
            Some(mac)
        });
        let vlan = p
            .vlan
            .as_ref()
            .and_then(|raw| self.int_in(raw, &key("vlan"), 1..=4094).map(|n| n as u16));
        if let Some(flag) = p.rescan.as_ref().filter(|flag| *flag.get_ref()) {
            // A removed VF is not found again by a bus rescan: only its PF makes it.
            self.error(
                flag.span(),
                &key("rescan"),
                "a virtual function cannot be removed and rescanned (its PF makes it); leave `rescan` out",
            );
            return None;
        }
        let bad_mac = p.mac.is_some() && mac.is_none();
        let bad_vlan = p.vlan.is_some() && vlan.is_none();
        if bad_mac || bad_vlan {
            return None;
        }
        Some(SriovVf {
            pf: pf?,
            index: index?,
            mac,
            vlan,
        })
    }
}
