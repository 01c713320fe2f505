//! `[[usb]]`: passed-through USB devices.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::Deserialize;

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawUsb {
    pub device: Option<Text>,
}

impl Validator {
    pub(super) fn usb(&mut self, raw: &RawProfile) -> Vec<UsbId> {
        let mut ids: Vec<UsbId> = Vec::new();
        for (index, spanned) in raw.usb.iter().enumerate() {
            let key = format!("usb[{index}].device");
            let Some(text) = &spanned.get_ref().device else {
                self.error(
                    spanned.span(),
                    &key,
                    "every [[usb]] needs `device = \"vendor:product\"`",
                );
                continue;
            };
            if let Some(id) = self.parse::<UsbId>(text, &key) {
                if let Some(first) = ids.iter().position(|other| *other == id) {
                    self.error(text.span(), &key, format!("{id} is already usb[{first}]"));
                    continue;
                }
                ids.push(id);
            }
        }
        ids
    }
}
