//! `<hostdev>` → `[[pci]]` (vfio-pci) and `[[usb]]` (vendor:product).

use roxmltree::Node;

use super::super::read::{child, elements, hex_field};
use super::super::{flag, int, spanned, text, value_of, ImportError, Importer};
use crate::model::pci::RawPci;
use crate::model::usb::RawUsb;
use crate::model::PciAddress;

/// A field of a PCI or USB address: hexadecimal, at most `max`. A field that is missing or
/// out of range is an address no host has: the import is refused.
fn address_field(
    node: Node,
    name: &str,
    max: u32,
    element: &'static str,
) -> Result<u32, ImportError> {
    match hex_field(node, name) {
        Some(value) if value <= max => Ok(value),
        _ => Err(ImportError::Invalid {
            element,
            message: format!(
                "{name}='{}' is not a hexadecimal number up to {max:#x}",
                node.attribute(name).unwrap_or("")
            ),
        }),
    }
}

impl Importer {
    pub(super) fn hostdev(&mut self, node: Node) -> Result<(), ImportError> {
        if node.attribute("mode").unwrap_or("subsystem") != "subsystem" {
            self.untranslated(node, "vmrun passes PCI and USB devices only");
            return Ok(());
        }
        match node.attribute("type") {
            Some("pci") => self.pci_hostdev(node)?,
            Some("usb") => {
                let source = child(node, "source");
                let id = |name: &str| source.and_then(|s| child(s, name));
                match (id("vendor"), id("product")) {
                    (Some(vendor), Some(product)) => {
                        let vendor = address_field(vendor, "id", 0xffff, "hostdev")?;
                        let product = address_field(product, "id", 0xffff, "hostdev")?;
                        let usb = RawUsb {
                            device: text(format!("{vendor:04x}:{product:04x}")),
                            ..RawUsb::default()
                        };
                        self.profile.usb.push(spanned(usb));
                    }
                    _ => self.untranslated(
                        node,
                        "a USB device given by bus and port: vmrun needs its vendor:product",
                    ),
                }
            }
            // Its parent and type travel in vmrun's <metadata>; the element only names it.
            Some("mdev") => {
                match child(node, "source")
                    .and_then(|s| child(s, "address"))
                    .and_then(|a| a.attribute("uuid"))
                {
                    Some(uuid) => self.mdev_hostdevs.push(uuid.to_lowercase()),
                    None => self.untranslated(node, "a mediated device without a UUID"),
                }
            }
            _ => self.untranslated(node, "vmrun passes PCI, USB and mediated devices only"),
        }
        Ok(())
    }

    fn pci_hostdev(&mut self, node: Node) -> Result<(), ImportError> {
        let Some(address) = child(node, "source").and_then(|s| child(s, "address")) else {
            self.untranslated(node, "no source address");
            return Ok(());
        };
        let field = |name: &str, max: u32| address_field(address, name, max, "hostdev");
        let pci_address = PciAddress {
            domain: match address.attribute("domain") {
                Some(_) => field("domain", 0xffff)? as u16,
                None => 0,
            },
            bus: field("bus", 0xff)? as u8,
            slot: field("slot", 0x1f)? as u8,
            function: field("function", 7)? as u8,
        };
        if node.attribute("managed") == Some("no") {
            self.changed(
                node,
                "libvirt expected it already on vfio-pci (managed='no'); vmrun moves it there itself \
                 and leaves a device already on vfio-pci alone",
            );
        }
        let mut device = RawPci {
            address: text(pci_address.to_string()),
            ..RawPci::default()
        };
        for item in elements(node) {
            match item.tag_name().name() {
                "source" | "address" | "alias" => {}
                "driver" => {
                    if item.attribute("name").is_some_and(|n| n != "vfio") {
                        self.changed(item, "vmrun passes devices with vfio-pci");
                    }
                    if item.attribute("model").is_some() {
                        self.untranslated(item, "vmrun uses the plain vfio-pci driver");
                    }
                }
                "rom" => {
                    device.romfile = item.attribute("file").and_then(text);
                    match item.attribute("bar") {
                        Some("on") => device.rombar = flag(true),
                        Some("off") => device.rombar = flag(false),
                        _ => {}
                    }
                    if item.attribute("enabled") == Some("no") {
                        self.untranslated(item, "vmrun cannot switch a device's ROM off entirely; rombar = false hides it");
                    }
                }
                "boot" => {
                    device.boot_order = item
                        .attribute("order")
                        .and_then(|o| o.parse::<u32>().ok())
                        .and_then(int)
                }
                _ => self.untranslated(item, "vmrun has no key for this hostdev setting"),
            }
        }
        let address = value_of(&device.address);
        if self
            .profile
            .pci
            .iter()
            .any(|d| value_of(&d.get_ref().address) == address)
        {
            self.untranslated(node, "the same host device twice");
            return Ok(());
        }
        self.profile.pci.push(spanned(device));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{domain, import_ok, noted};
    use super::super::super::*;

    fn pci(address: &str, inner: &str) -> String {
        format!(
            "<hostdev mode='subsystem' type='pci' managed='yes'><source><address {address}/></source>{inner}</hostdev>"
        )
    }

    #[test]
    fn pci_and_usb_devices_with_roms_and_boot_order() {
        let gpu = pci(
            "domain='0x0000' bus='0x0a' slot='0x00' function='0x0'",
            "<rom bar='off' file='/r.rom'/><boot order='1'/>",
        );
        let twice = pci("bus='0x0a' slot='0x00' function='0x0'", "");
        let imported = import_ok(&domain(&format!(
            "<devices>{gpu}{twice}<hostdev mode='subsystem' type='usb'><source>\
             <vendor id='0x046d'/><product id='0xc52b'/></source></hostdev>\
             <hostdev mode='capabilities' type='storage'/></devices>"
        )));
        let profile = &imported.profile;
        assert!(profile.contains(
            "[[pci]]\naddress = \"0000:0a:00.0\"\nromfile = \"/r.rom\"\nrombar = false\nboot_order = 1\n"
        ), "{profile}");
        assert_eq!(profile.matches("[[pci]]").count(), 1);
        assert!(
            profile.contains("[[usb]]\ndevice = \"046d:c52b\"\n"),
            "{profile}"
        );
        assert!(noted(&imported, "<hostdev", "same host device twice"));
        assert!(noted(
            &imported,
            "<hostdev mode='capabilities'",
            "PCI and USB devices only"
        ));
    }

    #[test]
    fn a_bad_pci_or_usb_address_is_refused() {
        for address in [
            "bus='0x100' slot='0x00' function='0x0'",
            "bus='0x01' slot='0x20' function='0x0'",
            "bus='0x01' slot='0x00' function='0x8'",
            "domain='0x10000' bus='0x01' slot='0x00' function='0x0'",
            "bus='zz' slot='0x00' function='0x0'",
            "slot='0x00' function='0x0'",
        ] {
            let error =
                import(&domain(&format!("<devices>{}</devices>", pci(address, "")))).unwrap_err();
            assert!(
                matches!(
                    error,
                    ImportError::Invalid {
                        element: "hostdev",
                        ..
                    }
                ),
                "{address}: {error}"
            );
        }
        let error = import(&domain(
            "<devices><hostdev mode='subsystem' type='usb'><source><vendor id='0x1046d'/>\
             <product id='0xc52b'/></source></hostdev></devices>",
        ))
        .unwrap_err();
        assert!(error.to_string().contains("0xffff"), "{error}");
    }
}
