//! `[[usb]]`: passed-through USB devices.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawUsb {
    pub device: Option<Text>,
    pub port: Option<Text>,
}

impl Validator {
    pub(super) fn usb(&mut self, raw: &RawProfile) -> Vec<UsbDevice> {
        let mut devices: Vec<UsbDevice> = Vec::new();
        for (index, spanned) in raw.usb.iter().enumerate() {
            let entry = spanned.get_ref();
            let parsed = match (&entry.device, &entry.port) {
                (Some(text), None) => self
                    .parse::<UsbId>(text, &format!("usb[{index}].device"))
                    .map(|id| (text, UsbDevice::Id(id))),
                (None, Some(text)) => self
                    .parse::<UsbPort>(text, &format!("usb[{index}].port"))
                    .map(|port| (text, UsbDevice::Port(port))),
                (Some(_), Some(text)) => {
                    self.error(
                        text.span(),
                        &format!("usb[{index}].port"),
                        "give `device` or `port`, not both: `port` already names one device",
                    );
                    None
                }
                (None, None) => {
                    self.error(
                        spanned.span(),
                        &format!("usb[{index}]"),
                        "every [[usb]] needs `device = \"vendor:product\"` or `port = \"1-4.2\"` (the host port, as sysfs names it)",
                    );
                    None
                }
            };
            if let Some((text, device)) = parsed {
                let key = match device {
                    UsbDevice::Id(_) => format!("usb[{index}].device"),
                    UsbDevice::Port(_) => format!("usb[{index}].port"),
                };
                if let Some(first) = devices.iter().position(|other| *other == device) {
                    self.error(
                        text.span(),
                        &key,
                        format!("{device} is already usb[{first}]"),
                    );
                    continue;
                }
                devices.push(device);
            }
        }
        devices
    }
}
