//! The host's USB devices, from sysfs (`/sys/bus/usb/devices`, through the host root): what
//! `vmrun usb NAME list` offers and how a `vendor:product` is found at its port.

use serde::Serialize;

use super::Sysroot;
use crate::model::{UsbDevice, UsbId, UsbPort};

/// One USB device plugged into this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostUsbDevice {
    /// Its port as sysfs names it: `1-4.2`.
    pub port: String,
    /// `vendor:product` as lsusb prints it.
    pub id: String,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    #[serde(skip)]
    pub usb_id: UsbId,
    #[serde(skip)]
    pub usb_port: UsbPort,
    /// Its node, `/dev/bus/usb/BBB/DDD` from sysfs' busnum and devnum: what QEMU opens.
    #[serde(skip)]
    pub node: Option<String>,
}

fn read_hex(text: Option<String>) -> Option<u16> {
    u16::from_str_radix(text?.trim(), 16).ok()
}

/// Every device on the host's USB buses, by port. Root hubs (`usb1`) and interfaces (`1-4:1.0`)
/// are not devices one can pass; entries sysfs does not describe fully are skipped.
pub fn devices(root: &Sysroot) -> Vec<HostUsbDevice> {
    let dir = root.path("/sys/bus/usb/devices");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut devices: Vec<HostUsbDevice> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            if name.contains(':') || name.starts_with("usb") {
                return None;
            }
            let device = dir.join(&name);
            let attribute = |file: &str| {
                std::fs::read_to_string(device.join(file))
                    .ok()
                    .map(|text| text.trim().to_string())
                    .filter(|text| !text.is_empty())
            };
            let vendor = read_hex(attribute("idVendor"))?;
            let product = read_hex(attribute("idProduct"))?;
            // busnum and devpath are what the port is made of; the entry's name says the same.
            let port = match (attribute("busnum"), attribute("devpath")) {
                (Some(bus), Some(path)) => format!("{bus}-{path}"),
                _ => name.clone(),
            };
            let usb_port: UsbPort = port.parse().ok()?;
            let usb_id = UsbId { vendor, product };
            let number = |file: &str| attribute(file)?.parse::<u32>().ok();
            let node = number("busnum")
                .zip(number("devnum"))
                .map(|(bus, dev)| format!("/dev/bus/usb/{bus:03}/{dev:03}"));
            Some(HostUsbDevice {
                node,
                port: usb_port.to_string(),
                id: usb_id.to_string(),
                manufacturer: attribute("manufacturer"),
                product: attribute("product"),
                usb_id,
                usb_port,
            })
        })
        .collect();
    devices.sort_by(|a, b| {
        (a.usb_port.bus, &a.usb_port.ports).cmp(&(b.usb_port.bus, &b.usb_port.ports))
    });
    devices
}

/// The host devices a `[[usb]]` entry means: the one at its port, or every one with its ids
/// (QEMU takes whichever it finds first).
pub fn matching<'a>(
    devices: &'a [HostUsbDevice],
    wanted: &'a UsbDevice,
) -> impl Iterator<Item = &'a HostUsbDevice> + 'a {
    devices.iter().filter(move |device| match wanted {
        UsbDevice::Id(id) => device.usb_id == *id,
        UsbDevice::Port(port) => device.usb_port == *port,
    })
}

impl HostUsbDevice {
    /// `Logitech USB Receiver`, as far as the device names itself.
    pub fn description(&self) -> String {
        match (&self.manufacturer, &self.product) {
            (Some(m), Some(p)) => format!("{m} {p}"),
            (Some(one), None) | (None, Some(one)) => one.clone(),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_read_by_port_without_hubs_and_interfaces() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("sys/bus/usb/devices");
        let device = |name: &str, files: &[(&str, &str)]| {
            let path = base.join(name);
            std::fs::create_dir_all(&path).unwrap();
            for (file, text) in files {
                std::fs::write(path.join(file), format!("{text}\n")).unwrap();
            }
        };
        device("usb1", &[("idVendor", "1d6b"), ("idProduct", "0002")]);
        device("1-4:1.0", &[("bInterfaceClass", "03")]);
        device(
            "1-4.2",
            &[
                ("idVendor", "046d"),
                ("idProduct", "c52b"),
                ("busnum", "1"),
                ("devpath", "4.2"),
                ("devnum", "5"),
                ("manufacturer", "Logitech"),
                ("product", "USB Receiver"),
            ],
        );
        device("3-1", &[("idVendor", "1532"), ("idProduct", "0084")]);
        let found = devices(&Sysroot::new(dir.path()));
        let summary: Vec<(String, String, String)> = found
            .iter()
            .map(|d| (d.port.clone(), d.id.clone(), d.description()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "1-4.2".into(),
                    "046d:c52b".into(),
                    "Logitech USB Receiver".into()
                ),
                ("3-1".into(), "1532:0084".into(), String::new()),
            ]
        );
        assert_eq!(found[0].node.as_deref(), Some("/dev/bus/usb/001/005"));
        assert_eq!(found[1].node, None, "no busnum/devnum, no node");
    }
}
