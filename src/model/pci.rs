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
                reset_method: p.reset_method.as_ref().and_then(|raw| {
                    reset_methods(raw.get_ref())
                        .map_err(|message| self.error(raw.span(), &key("reset_method"), message))
                        .ok()
                }),
            });
        }
        devices
    }
}
