//! `[[disk]]`: images and block devices, their bus, cache and boot order.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawDisk {
    pub path: Option<Text>,
    pub format: Option<Text>,
    pub bus: Option<Text>,
    pub media: Option<Text>,
    pub readonly: Option<Flag>,
    pub cache: Option<Text>,
    pub discard: Option<Flag>,
    pub boot_order: Option<Int>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Sata,
    Nvme,
    Scsi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Disk,
    Cdrom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// QEMU's default: host page cache, guest flushes honoured.
    Writeback,
    /// O_DIRECT: bypasses the host page cache.
    None,
    /// Ignores guest flushes: fast, loses data on a host crash.
    Unsafe,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub bus: DiskBus,
    pub media: Media,
    pub readonly: bool,
    pub cache: CacheMode,
    pub discard: bool,
    pub boot_order: Option<u32>,
}

impl Validator {
    pub(super) fn disks(&mut self, raw: &RawProfile) -> Vec<Disk> {
        let mut disks = Vec::new();
        let mut boot_orders: BTreeMap<i64, usize> = BTreeMap::new();
        let mut sata_ports = 0;
        for (index, spanned) in raw.disk.iter().enumerate() {
            let d = spanned.get_ref();
            let key = |field: &str| format!("disk[{index}].{field}");
            let Some(path_text) = &d.path else {
                self.error(spanned.span(), &key("path"), "every [[disk]] needs `path`");
                continue;
            };
            let path = self.resolve_path(path_text.get_ref());
            if !path.exists() {
                self.missing_file(path_text.span(), &key("path"), &path, "disk image");
            }
            let media = self.choose(
                &d.media,
                &key("media"),
                &[("disk", Media::Disk), ("cdrom", Media::Cdrom)],
                Media::Disk,
            );
            let format = match &d.format {
                Some(text) => self
                    .pick(
                        text,
                        &key("format"),
                        &[("qcow2", DiskFormat::Qcow2), ("raw", DiskFormat::Raw)],
                    )
                    .unwrap_or(DiskFormat::Raw),
                None if path.extension().is_some_and(|e| e == "qcow2") => DiskFormat::Qcow2,
                None => DiskFormat::Raw,
            };
            let bus_options = [
                ("virtio", DiskBus::Virtio),
                ("sata", DiskBus::Sata),
                ("nvme", DiskBus::Nvme),
                ("scsi", DiskBus::Scsi),
            ];
            let bus = match &d.bus {
                Some(text) => self
                    .pick(text, &key("bus"), &bus_options)
                    .unwrap_or(DiskBus::Virtio),
                None if media == Media::Cdrom => DiskBus::Sata,
                None => DiskBus::Virtio,
            };
            if media == Media::Cdrom && matches!(bus, DiskBus::Virtio | DiskBus::Nvme) {
                let span = d.bus.as_ref().map(|b| b.span()).unwrap_or(spanned.span());
                self.error(
                    span,
                    &key("bus"),
                    "a cdrom needs bus \"sata\" or \"scsi\" (virtio-blk and NVMe have no CD-ROM)",
                );
            }
            if media == Media::Disk && bus == DiskBus::Sata {
                if let Some(flag) = d.readonly.as_ref().filter(|f| *f.get_ref()) {
                    // Measured with QEMU 7.2: ide-hd refuses a read-only block node.
                    self.error(
                        flag.span(),
                        &key("readonly"),
                        "QEMU's SATA disks cannot be read-only; use bus \"virtio\", \"scsi\" or \"nvme\"",
                    );
                }
            }
            if bus == DiskBus::Sata {
                sata_ports += 1;
                if sata_ports > 6 {
                    let span = d.bus.as_ref().map(|b| b.span()).unwrap_or(spanned.span());
                    self.error(span, &key("bus"), "q35's AHCI controller has 6 SATA ports, all taken; use \"virtio\", \"scsi\" or \"nvme\"");
                }
            }
            let cache = self.choose(
                &d.cache,
                &key("cache"),
                &[
                    ("writeback", CacheMode::Writeback),
                    ("none", CacheMode::None),
                    ("unsafe", CacheMode::Unsafe),
                ],
                CacheMode::Writeback,
            );
            let boot_order = d.boot_order.as_ref().and_then(|raw| {
                let order = self.int_in(raw, &key("boot_order"), 1..=99)?;
                if let Some(other) = boot_orders.insert(order, index) {
                    self.error(
                        raw.span(),
                        &key("boot_order"),
                        format!("disk[{other}] has boot_order {order} too; use distinct numbers"),
                    );
                }
                Some(order as u32)
            });
            disks.push(Disk {
                path,
                format,
                bus,
                media,
                readonly: media == Media::Cdrom
                    || d.readonly.as_ref().is_some_and(|f| *f.get_ref()),
                cache,
                discard: d.discard.as_ref().is_some_and(|f| *f.get_ref()),
                boot_order,
            });
        }
        disks
    }
}
