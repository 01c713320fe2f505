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
        let mut boot_orders: HashMap<u32, String> = disks
            .iter()
            .enumerate()
            .filter_map(|(index, disk)| Some((disk.boot_order?, format!("disk[{index}]"))))
            .collect();
        for (index, spanned) in raw.pci.iter().enumerate() {
            let p = spanned.get_ref();
            let key = |field: &str| format!("pci[{index}].{field}");
            let Some(address_text) = &p.address else {
                self.error(
                    spanned.span(),
                    &key("address"),
                    "every [[pci]] needs `address`, e.g. \"0000:01:00.0\"",
                );
                continue;
            };
            let Some(address) = self.parse::<PciAddress>(address_text, &key("address")) else {
                continue;
            };
            if let Some((first, written)) = seen.get(&address) {
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
            seen.insert(address, (index, address_text.get_ref().clone()));
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
            });
        }
        devices
    }
}
