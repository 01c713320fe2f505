//! `<os>` and `<sysinfo>` → `machine.type`, `[firmware]`, boot order and `[smbios]`.

use std::fmt::Write as _;

use roxmltree::Node;

use super::read::{describe, elements, is_on, text_of};
use super::{flag, int, section, text, Importer};
use crate::libvirt::NoteKind;
use crate::model::smbios::{smbios_problem, RawSmbios, SMBIOS_FIELDS};

/// What `<os>`, `<sysinfo>` and `<metadata>` say that is applied once every device is known.
#[derive(Default)]
pub(super) struct OsReading {
    /// `<vmrun:firmware selection='descriptors'>`: the profile named no firmware files.
    pub(super) firmware_from_descriptors: bool,
    /// `<smbios mode='sysinfo'/>`.
    smbios_enabled: bool,
    /// `<smbios mode='host'/>`: vmrun's `smbios.from_host`.
    smbios_host: bool,
    sysinfo: Option<Vec<SysinfoTable>>,
    /// `<boot dev=...>` in order.
    boot_devs: Vec<String>,
}

/// A `<sysinfo>` table: its SMBIOS type, the element as written, its entries (name, value).
struct SysinfoTable {
    kind: u8,
    element: String,
    entries: Vec<(String, String)>,
}

/// `[smbios]` with these keys, filled through the parser's own type so that the key names
/// are the table's.
fn smbios_table(from_host: bool, fields: &[(&'static str, String)]) -> Option<RawSmbios> {
    let mut table = toml::Table::new();
    if from_host {
        table.insert("from_host".into(), true.into());
    }
    for (key, value) in fields {
        table.insert((*key).into(), value.clone().into());
    }
    toml::from_str(&table.to_string()).ok()
}

impl Importer {
    pub(super) fn os(&mut self, node: Node) {
        let mut loader: Option<(String, bool)> = None;
        let mut nvram: Option<(Option<String>, Option<String>)> = None;
        let firmware_attribute = node.attribute("firmware");
        let mut secure_boot_feature = None;
        for item in elements(node) {
            match item.tag_name().name() {
                "type" => {
                    if item.attribute("arch").is_some_and(|a| a != "x86_64") {
                        self.changed(item, "vmrun runs x86_64 guests; the profile is x86_64");
                    }
                    let machine = item.attribute("machine").unwrap_or("q35");
                    if machine.starts_with("pc-q35-") {
                        section(&mut self.profile.machine).machine_type = text(machine);
                    } else if machine != "q35" {
                        self.changed(
                            item,
                            format!(
                                "`{machine}` became q35: passthrough needs PCIe root ports, which \
                                 i440fx has not; Windows sees new hardware once and installs its drivers"
                            ),
                        );
                    }
                }
                "loader" => {
                    if item.attribute("type").is_some_and(|t| t != "pflash") {
                        self.untranslated(item, "only pflash firmware has a vmrun equivalent");
                        continue;
                    }
                    loader = Some((text_of(item), is_on(item, "secure")));
                }
                "nvram" => {
                    let path = Some(text_of(item)).filter(|p| !p.is_empty());
                    nvram = Some((path, item.attribute("template").map(str::to_string)));
                }
                "firmware" => {
                    for feature in elements(item) {
                        if feature.attribute("name") == Some("secure-boot") {
                            secure_boot_feature = Some(is_on(feature, "enabled"));
                        }
                    }
                }
                "boot" => {
                    if let Some(dev) = item.attribute("dev") {
                        self.os.boot_devs.push(dev.to_string());
                    }
                }
                "bootmenu" => {
                    if is_on(item, "enable") {
                        self.extra_args(["-boot", "menu=on"]);
                    }
                }
                "smbios" => match item.attribute("mode") {
                    Some("sysinfo") => self.os.smbios_enabled = true,
                    Some("host") => self.os.smbios_host = true,
                    _ => {}
                },
                _ => self.untranslated(item, "vmrun has no key for this boot setting"),
            }
        }
        let uefi = loader.is_some() || firmware_attribute == Some("efi");
        let secure_boot =
            loader.as_ref().is_some_and(|(_, secure)| *secure) || secure_boot_feature == Some(true);
        let firmware = section(&mut self.profile.firmware);
        firmware.firmware_type = text(if uefi { "ovmf" } else { "seabios" });
        if uefi && secure_boot {
            firmware.secure_boot = flag(true);
        }
        let Some((code, _)) = loader.filter(|(code, _)| !code.is_empty()) else {
            return;
        };
        if self.os.firmware_from_descriptors {
            return;
        }
        let (nvram_path, template) = nvram.unwrap_or((None, None));
        // The VM's own NVRAM is its boot entries and keys: it is copied once, by hand, as the
        // VM's VARS file. It is never the template, which every reset copies again.
        if let Some(path) = &nvram_path {
            let name = super::value_of(&self.profile.name)
                .unwrap_or_default()
                .to_string();
            self.note(
                format!("<nvram>{path}</nvram>"),
                NoteKind::Changed,
                format!(
                    "vmrun keeps its own VARS copy: to keep this VM's boot entries and keys, copy \
                     {path} to the file `vmrun show {name} --json` names as `vars` before the first run"
                ),
            );
        }
        let template = match template {
            Some(template) => template,
            None => {
                let file_name = code.rsplit('/').next().unwrap_or(&code);
                let guessed = file_name.replace("CODE", "VARS").replace("code", "vars");
                if guessed == file_name {
                    self.note(
                        format!("<loader>{code}</loader>"),
                        NoteKind::Changed,
                        "no VARS template is named and none can be guessed from the file name: \
                         the profile lets vmrun pick OVMF through QEMU's firmware descriptors",
                    );
                    return;
                }
                let guessed_path = format!("{}{guessed}", &code[..code.len() - file_name.len()]);
                self.note(
                    format!("<loader>{code}</loader>"),
                    NoteKind::Changed,
                    format!("no VARS template is named (libvirt takes it from qemu.conf): the profile guesses {guessed_path}"),
                );
                guessed_path
            }
        };
        let firmware = section(&mut self.profile.firmware);
        firmware.code = text(code);
        firmware.vars_template = text(template);
    }

    /// `<boot dev>` order given to the first disks of each kind, unless a device has its own.
    pub(super) fn apply_boot_devs(&mut self) {
        let disks = &self.profile.disk;
        let any_order = disks.iter().any(|d| d.get_ref().boot_order.is_some())
            || self
                .profile
                .pci
                .iter()
                .any(|p| p.get_ref().boot_order.is_some());
        let boot_devs = std::mem::take(&mut self.os.boot_devs);
        if any_order || boot_devs.is_empty() {
            return;
        }
        let mut order = 1;
        for dev in boot_devs {
            let wanted_cdrom = match dev.as_str() {
                "hd" => false,
                "cdrom" => true,
                other => {
                    self.note(
                        format!("<boot dev='{other}'>"),
                        NoteKind::Untranslated,
                        "vmrun boots from disks and passed-through devices only",
                    );
                    continue;
                }
            };
            if let Some(disk) = self.profile.disk.iter_mut().map(|d| d.get_mut()).find(|d| {
                (super::value_of(&d.media) == Some("cdrom")) == wanted_cdrom
                    && d.boot_order.is_none()
            }) {
                disk.boot_order = int(order);
                order += 1;
            }
        }
    }

    pub(super) fn sysinfo(&mut self, node: Node) {
        if node.attribute("type") != Some("smbios") {
            self.untranslated(node, "only SMBIOS sysinfo has a QEMU equivalent");
            return;
        }
        let mut tables = Vec::new();
        for table in elements(node) {
            let kind = match table.tag_name().name() {
                "bios" => 0,
                "system" => 1,
                "baseBoard" => 2,
                "chassis" => 3,
                "oemStrings" => 11,
                _ => {
                    self.untranslated(table, "no QEMU -smbios type for it");
                    continue;
                }
            };
            let entries = elements(table)
                .filter(|e| e.tag_name().name() == "entry")
                .map(|entry| {
                    (
                        entry.attribute("name").unwrap_or("value").to_string(),
                        text_of(entry),
                    )
                })
                .collect();
            tables.push(SysinfoTable {
                kind,
                element: describe(table),
                entries,
            });
        }
        self.os.sysinfo = Some(tables);
    }

    /// Tables whose every entry is a `[smbios]` key become those keys; a table with an entry
    /// vmrun has no key for (baseBoard's location, OEM strings) stays whole as `-smbios`.
    pub(super) fn apply_sysinfo(&mut self) {
        let from_host = self.os.smbios_host;
        let mut fields = Vec::new();
        let tables = self.os.sysinfo.take();
        if let Some(tables) = tables {
            if !self.os.smbios_enabled && !from_host {
                self.note(
                    "<sysinfo type='smbios'>",
                    NoteKind::Untranslated,
                    "not used by the domain either: its <os> has no <smbios mode='sysinfo'/>",
                );
            } else {
                fields = self.sysinfo_fields(tables);
            }
        }
        if from_host || !fields.is_empty() {
            self.profile.smbios = smbios_table(from_host, &fields).map(super::spanned);
        }
    }

    fn sysinfo_fields(&mut self, tables: Vec<SysinfoTable>) -> Vec<(&'static str, String)> {
        if self.os.smbios_host {
            self.note(
                "<sysinfo type='smbios'>",
                NoteKind::Changed,
                "libvirt ignores it under <smbios mode='host'/>; vmrun writes its fields over the host's \
                 (smbios.from_host with explicit fields)",
            );
        }
        let mut fields = Vec::new();
        let mut as_args = Vec::new();
        for table in tables {
            let keys: Option<Vec<(&'static str, String)>> = table
                .entries
                .iter()
                .map(|(name, value)| {
                    let field = SMBIOS_FIELDS
                        .iter()
                        .find(|f| f.table == table.kind && f.qemu == name)?;
                    smbios_problem(field.key, value)
                        .is_none()
                        .then(|| (field.key, value.clone()))
                })
                .collect();
            match keys {
                Some(keys) if table.kind <= 3 => fields.extend(keys),
                _ => {
                    let mut value = format!("type={}", table.kind);
                    for (key, text) in &table.entries {
                        let _ = write!(value, ",{key}={}", text.replace(',', ",,"));
                    }
                    as_args.push(table.element);
                    self.extra_args(["-smbios".to_string(), value]);
                }
            }
        }
        if !as_args.is_empty() {
            self.note(
                as_args.join(" "),
                NoteKind::Changed,
                "has entries [smbios] has no key for: written as QEMU -smbios arguments in qemu.extra_args",
            );
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{domain, import_ok, noted};

    #[test]
    fn i440fx_becomes_q35_with_a_note() {
        let imported = import_ok(&domain(
            "<os><type arch='x86_64' machine='pc-i440fx-8.2'>hvm</type></os>",
        ));
        assert!(!imported.profile.contains("\ntype = \"pc-i440fx"));
        assert!(noted(&imported, "pc-i440fx-8.2", "q35"));
        assert!(imported.profile.contains("type = \"seabios\""));
        let imported = import_ok(&domain(
            "<os><type arch='x86_64' machine='pc-q35-8.2'>hvm</type></os>",
        ));
        assert!(imported.profile.contains("type = \"pc-q35-8.2\""));
    }

    #[test]
    fn the_vms_own_nvram_is_noted_once_and_never_the_template() {
        let imported = import_ok(&domain(
            "<os><type machine='q35'>hvm</type>\
             <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\
             <nvram>/var/lib/libvirt/qemu/nvram/t_VARS.fd</nvram></os>",
        ));
        assert!(
            imported.profile.contains(
                "code = \"/usr/share/OVMF/OVMF_CODE_4M.fd\"\n\
                 vars_template = \"/usr/share/OVMF/OVMF_VARS_4M.fd\"\n"
            ),
            "{}",
            imported.profile
        );
        assert!(!imported
            .profile
            .contains("vars_template = \"/var/lib/libvirt"));
        assert!(noted(
            &imported,
            "<nvram>",
            "copy /var/lib/libvirt/qemu/nvram/t_VARS.fd"
        ));
        // With a template named, that is the template.
        let imported = import_ok(&domain(
            "<os><type machine='q35'>hvm</type>\
             <loader readonly='yes' secure='yes' type='pflash'>/o/CODE.fd</loader>\
             <nvram template='/o/VARS.ms.fd'>/var/lib/libvirt/qemu/nvram/t_VARS.fd</nvram></os>",
        ));
        assert!(imported.profile.contains(
            "[firmware]\ntype = \"ovmf\"\nsecure_boot = true\ncode = \"/o/CODE.fd\"\nvars_template = \"/o/VARS.ms.fd\"\n"
        ));
    }

    #[test]
    fn boot_devices_order_the_disks() {
        let imported = import_ok(&domain(
            "<os><type>hvm</type><boot dev='cdrom'/><boot dev='hd'/><boot dev='network'/></os>\
             <devices><disk type='file' device='disk'><source file='/d.img'/></disk>\
             <disk type='file' device='cdrom'><source file='/i.iso'/><target bus='sata'/></disk></devices>",
        ));
        let profile = &imported.profile;
        assert!(
            profile.contains("path = \"/d.img\"\nbus = \"virtio\"\nboot_order = 2"),
            "{profile}"
        );
        assert!(
            profile.contains("media = \"cdrom\"\nboot_order = 1"),
            "{profile}"
        );
        assert!(noted(&imported, "<boot dev='network'>", "disks"));
    }

    #[test]
    fn sysinfo_becomes_smbios_keys_or_qemu_arguments() {
        let imported = import_ok(&domain(
            "<os><type>hvm</type><smbios mode='sysinfo'/></os><sysinfo type='smbios'>\
             <system><entry name='manufacturer'>ACME</entry></system>\
             <oemStrings><entry>hello</entry></oemStrings></sysinfo>",
        ));
        assert!(imported
            .profile
            .contains("[smbios]\nmanufacturer = \"ACME\"\n"));
        assert!(imported
            .profile
            .contains("\"-smbios\", \"type=11,value=hello\""));
        assert!(noted(&imported, "<oemStrings>", "-smbios"));
        let imported = import_ok(&domain(
            "<sysinfo type='smbios'><system><entry name='product'>X</entry></system></sysinfo>",
        ));
        assert!(!imported.profile.contains("[smbios]"));
        assert!(noted(&imported, "<sysinfo", "not used"));
    }
}
