//! `<disk>` → `[[disk]]`.

use roxmltree::Node;

use super::super::read::{child, elements};
use super::super::{flag, int, spanned, text, value_of, Importer};
use crate::model::disk::RawDisk;

impl Importer {
    pub(super) fn disk(&mut self, node: Node) {
        let kind = node.attribute("type").unwrap_or("file");
        let device = node.attribute("device").unwrap_or("disk");
        if !matches!(device, "disk" | "cdrom") {
            self.untranslated(node, format!("vmrun has no `{device}` drives"));
            return;
        }
        let source = child(node, "source");
        let path = match kind {
            "file" => source.and_then(|s| s.attribute("file")),
            "block" => source.and_then(|s| s.attribute("dev")),
            _ => {
                self.untranslated(
                    node,
                    format!("vmrun opens files and block devices, not `{kind}` disks"),
                );
                return;
            }
        };
        let Some(path) = path.filter(|p| !p.is_empty()) else {
            self.untranslated(node, "an empty drive: vmrun needs a file to put in it");
            return;
        };
        let cdrom = device == "cdrom";
        let mut readonly = cdrom;
        let mut disk = RawDisk {
            path: text(path),
            media: cdrom.then_some("cdrom").and_then(text),
            ..RawDisk::default()
        };
        let bus = child(node, "target")
            .and_then(|t| t.attribute("bus"))
            .unwrap_or("virtio");
        let mut bus = match (bus, cdrom) {
            ("virtio", false) => "virtio",
            ("sata", _) => "sata",
            ("scsi", _) => "scsi",
            ("nvme", false) => "nvme",
            ("ide", _) => {
                self.changed(node, "IDE became SATA: q35 has AHCI, not IDE");
                "sata"
            }
            (other, _) => {
                self.changed(node, format!("bus `{other}` became SATA"));
                "sata"
            }
        };
        for item in elements(node) {
            match item.tag_name().name() {
                "source" | "target" | "address" | "alias" => {}
                "readonly" => readonly = true,
                "boot" => {
                    disk.boot_order = item
                        .attribute("order")
                        .and_then(|o| o.parse::<u32>().ok())
                        .and_then(int)
                }
                "driver" => {
                    disk.format = match item.attribute("type") {
                        Some("qcow2") => text("qcow2"),
                        Some("raw") | None => text("raw"),
                        Some(other) => {
                            self.untranslated(
                                node,
                                format!("vmrun opens qcow2 and raw images, not `{other}`"),
                            );
                            return;
                        }
                    };
                    disk.cache = match item.attribute("cache") {
                        None | Some("writeback") => None,
                        Some(mode @ ("none" | "unsafe")) => text(mode),
                        Some(other) => {
                            self.changed(
                                item,
                                format!("vmrun has no cache mode `{other}`; it uses writeback"),
                            );
                            None
                        }
                    };
                    if item.attribute("discard") == Some("unmap") {
                        disk.discard = flag(true);
                    }
                    let others: Vec<String> = item
                        .attributes()
                        .filter(|a| {
                            !matches!(a.name(), "name" | "type" | "cache" | "discard" | "iothread")
                        })
                        .map(|a| format!("{}='{}'", a.name(), a.value()))
                        .collect();
                    if !others.is_empty() {
                        self.untranslated(
                            item,
                            format!("vmrun keeps QEMU's defaults for {}", others.join(" ")),
                        );
                    }
                }
                _ => self.untranslated(item, "vmrun has no key for this disk setting"),
            }
        }
        if bus == "sata" && readonly && !cdrom {
            self.changed(
                node,
                "QEMU's SATA disks cannot be read-only: it is on virtio instead",
            );
            bus = "virtio";
        }
        if bus == "virtio" && cdrom {
            bus = "sata";
        }
        disk.bus = text(bus);
        // A CD-ROM is read-only by its media.
        if readonly && value_of(&disk.media).is_none() {
            disk.readonly = flag(true);
        }
        self.profile.disk.push(spanned(disk));
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{domain, import_ok, noted};

    #[test]
    fn disks_keep_format_bus_cache_and_boot_order() {
        let imported = import_ok(&domain(
            "<devices><disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' \
             io='native' discard='unmap'/><source dev='/dev/sda'/><target dev='sda' bus='sata'/>\
             <boot order='2'/></disk>\
             <disk type='file' device='disk'><driver type='qcow2'/><source file='/r.qcow2'/>\
             <target bus='sata'/><readonly/></disk>\
             <disk type='file' device='cdrom'><source file='/w.iso'/><target bus='ide'/></disk>\
             <disk type='network' device='disk'/><disk type='file' device='floppy'/>\
             <disk type='file' device='cdrom'><target bus='sata'/></disk></devices>",
        ));
        let profile = &imported.profile;
        assert!(profile.contains(
            "[[disk]]\npath = \"/dev/sda\"\nformat = \"raw\"\nbus = \"sata\"\ncache = \"none\"\ndiscard = true\nboot_order = 2\n"
        ), "{profile}");
        assert!(profile.contains(
            "[[disk]]\npath = \"/r.qcow2\"\nformat = \"qcow2\"\nbus = \"virtio\"\nreadonly = true\n"
        ), "{profile}");
        assert!(
            profile.contains("[[disk]]\npath = \"/w.iso\"\nbus = \"sata\"\nmedia = \"cdrom\"\n"),
            "{profile}"
        );
        assert!(noted(&imported, "<driver", "io='native'"));
        assert!(noted(
            &imported,
            "<disk type='network'",
            "not `network` disks"
        ));
        assert!(noted(
            &imported,
            "<disk type='file' device='floppy'>",
            "no `floppy` drives"
        ));
        assert!(noted(
            &imported,
            "<disk type='file' device='cdrom'>",
            "empty drive"
        ));
        assert!(noted(
            &imported,
            "<disk type='file' device='cdrom'>",
            "IDE became SATA"
        ));
    }
}
