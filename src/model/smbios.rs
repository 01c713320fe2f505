//! `[smbios]`: what the guest's firmware tables say about the machine (types 0 BIOS, 1 system,
//! 2 baseboard, 3 chassis), given explicitly or copied from the host's `/sys/class/dmi/id`
//! (`from_host`), explicit fields winning. The copy happens in `plan`, from host facts.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawSmbios {
    pub from_host: Option<Flag>,
    pub bios_vendor: Option<Text>,
    pub bios_version: Option<Text>,
    pub bios_date: Option<Text>,
    pub bios_release: Option<Text>,
    pub manufacturer: Option<Text>,
    pub product: Option<Text>,
    pub version: Option<Text>,
    pub serial: Option<Text>,
    pub uuid: Option<Text>,
    pub sku: Option<Text>,
    pub family: Option<Text>,
    pub board_manufacturer: Option<Text>,
    pub board_product: Option<Text>,
    pub board_version: Option<Text>,
    pub board_serial: Option<Text>,
    pub board_asset: Option<Text>,
    pub chassis_manufacturer: Option<Text>,
    pub chassis_version: Option<Text>,
    pub chassis_serial: Option<Text>,
    pub chassis_asset: Option<Text>,
}

/// One SMBIOS field: its profile key, its table type, QEMU's name for it in `-smbios
/// type=N,...`, and the file under `/sys/class/dmi/id` holding the host's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmbiosField {
    pub key: &'static str,
    pub table: u8,
    pub qemu: &'static str,
    pub dmi: &'static str,
}

const fn field(key: &'static str, table: u8, qemu: &'static str, dmi: &'static str) -> SmbiosField {
    SmbiosField {
        key,
        table,
        qemu,
        dmi,
    }
}

/// Every field vmrun sets, in the order QEMU gets them.
pub const SMBIOS_FIELDS: [SmbiosField; 20] = [
    field("bios_vendor", 0, "vendor", "bios_vendor"),
    field("bios_version", 0, "version", "bios_version"),
    field("bios_date", 0, "date", "bios_date"),
    field("bios_release", 0, "release", "bios_release"),
    field("manufacturer", 1, "manufacturer", "sys_vendor"),
    field("product", 1, "product", "product_name"),
    field("version", 1, "version", "product_version"),
    field("serial", 1, "serial", "product_serial"),
    field("uuid", 1, "uuid", "product_uuid"),
    field("sku", 1, "sku", "product_sku"),
    field("family", 1, "family", "product_family"),
    field("board_manufacturer", 2, "manufacturer", "board_vendor"),
    field("board_product", 2, "product", "board_name"),
    field("board_version", 2, "version", "board_version"),
    field("board_serial", 2, "serial", "board_serial"),
    field("board_asset", 2, "asset", "board_asset_tag"),
    field("chassis_manufacturer", 3, "manufacturer", "chassis_vendor"),
    field("chassis_version", 3, "version", "chassis_version"),
    field("chassis_serial", 3, "serial", "chassis_serial"),
    field("chassis_asset", 3, "asset", "chassis_asset_tag"),
];

impl RawSmbios {
    fn value(&self, key: &str) -> Option<&Text> {
        match key {
            "bios_vendor" => self.bios_vendor.as_ref(),
            "bios_version" => self.bios_version.as_ref(),
            "bios_date" => self.bios_date.as_ref(),
            "bios_release" => self.bios_release.as_ref(),
            "manufacturer" => self.manufacturer.as_ref(),
            "product" => self.product.as_ref(),
            "version" => self.version.as_ref(),
            "serial" => self.serial.as_ref(),
            "uuid" => self.uuid.as_ref(),
            "sku" => self.sku.as_ref(),
            "family" => self.family.as_ref(),
            "board_manufacturer" => self.board_manufacturer.as_ref(),
            "board_product" => self.board_product.as_ref(),
            "board_version" => self.board_version.as_ref(),
            "board_serial" => self.board_serial.as_ref(),
            "board_asset" => self.board_asset.as_ref(),
            "chassis_manufacturer" => self.chassis_manufacturer.as_ref(),
            "chassis_version" => self.chassis_version.as_ref(),
            "chassis_serial" => self.chassis_serial.as_ref(),
            "chassis_asset" => self.chassis_asset.as_ref(),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Smbios {
    /// Explicit values by profile key.
    pub fields: BTreeMap<&'static str, String>,
    /// Fill the fields not given from the host's DMI data.
    pub from_host: bool,
}

/// Why a value cannot go into a field, or `None` when it can. Shared by the profile's values
/// and the host's (a host value that fails is left out rather than breaking the start).
pub fn smbios_problem(key: &str, value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("is empty; leave the key out instead".into());
    }
    if value.chars().any(char::is_control) {
        return Some("contains control characters".into());
    }
    if value.len() > 64 {
        return Some(format!(
            "is {} bytes; SMBIOS strings should stay within 64",
            value.len()
        ));
    }
    match key {
        "uuid" if !is_uuid(value) => Some(format!(
            "`{value}` is not a UUID (8-4-4-4-12 hexadecimal digits)"
        )),
        "bios_release" if !is_release(value) => Some(format!(
            "`{value}` is not MAJOR.MINOR with both in 0..255, e.g. \"5.11\""
        )),
        _ => None,
    }
}

fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_release(value: &str) -> bool {
    let mut parts = value.split('.');
    let ok = |part: Option<&str>| part.is_some_and(|p| p.parse::<u8>().is_ok());
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

impl Validator {
    pub(super) fn smbios(&mut self, raw: &RawProfile) -> Option<Smbios> {
        let s = raw.smbios.as_ref()?.get_ref();
        let mut fields = BTreeMap::new();
        for field in SMBIOS_FIELDS {
            let Some(text) = s.value(field.key) else {
                continue;
            };
            let key = format!("smbios.{}", field.key);
            match smbios_problem(field.key, text.get_ref()) {
                Some(problem) => self.error(text.span(), &key, problem),
                None => {
                    fields.insert(field.key, text.get_ref().clone());
                }
            }
        }
        Some(Smbios {
            fields,
            from_host: s.from_host.as_ref().is_some_and(|f| *f.get_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_and_releases_are_checked() {
        assert!(smbios_problem("uuid", "4c4c4544-0034-3910-8051-b3c04f4b5a32").is_none());
        assert!(smbios_problem("uuid", "4c4c4544-0034-3910-8051").is_some());
        assert!(smbios_problem("bios_release", "5.11").is_none());
        assert!(smbios_problem("bios_release", "5.256").is_some());
        assert!(smbios_problem("product", "All, Series").is_none());
        assert!(smbios_problem("product", "bad\nline").is_some());
    }
}
