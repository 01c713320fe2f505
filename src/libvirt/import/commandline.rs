//! `<qemu:commandline>`: the arguments vmrun has keys for become those keys (a `-cpu`, evdev
//! input, Looking Glass' ivshmem, vmrun's NVMe disks and USB ports); the rest is passed to
//! QEMU unchanged as `qemu.extra_args`, with a note.

use roxmltree::Node;

use super::read::{elements, qemu_props, split_qemu_opts};
use super::{flag, int, section, spanned, text, ImportError, Importer, QemuProps};
use crate::libvirt::NoteKind;
use crate::model::disk::RawDisk;
use crate::model::usb::RawUsb;
use crate::model::ByteSize;

/// `-object` and `-drive` values, by id, for the `-device` that names them.
#[derive(Default)]
pub(super) struct CommandlineReading {
    objects: QemuProps,
    drives: QemuProps,
}

impl Importer {
    pub(super) fn qemu_commandline(&mut self, node: Node) -> Result<(), ImportError> {
        let mut args: Vec<String> = Vec::new();
        for item in elements(node) {
            match item.tag_name().name() {
                "arg" => args.push(item.attribute("value").unwrap_or("").to_string()),
                _ => self.untranslated(item, "vmrun passes no environment to QEMU"),
            }
        }
        let mut index = 0;
        let mut passed_on = Vec::new();
        while index < args.len() {
            let option = args[index].clone();
            let value = args
                .get(index + 1)
                .filter(|v| !v.starts_with('-') && option.starts_with('-'))
                .cloned();
            index += if value.is_some() { 2 } else { 1 };
            let parts = value.as_deref().map(split_qemu_opts).unwrap_or_default();
            let props = qemu_props(&parts);
            let head = parts.first().map(String::as_str).unwrap_or("");
            match (option.as_str(), head) {
                ("-cpu", _) => self.qemu_cpu(&parts),
                ("-object", "input-linux") => {
                    if let Some(path) = props.get("evdev") {
                        let input = section(&mut self.profile.input);
                        let list = input.evdev.get_or_insert_with(|| spanned(Vec::new()));
                        list.get_mut().push(spanned(path.clone()));
                        if let Some(toggle) = props.get("grab-toggle") {
                            input.grab_toggle = text(toggle.clone());
                        }
                    }
                }
                ("-object", "memory-backend-file") => {
                    if let Some(id) = props.get("id") {
                        self.commandline.objects.insert(id.clone(), props.clone());
                    }
                }
                ("-device", "ivshmem-plain") => {
                    let object = props
                        .get("memdev")
                        .and_then(|id| self.commandline.objects.get(id));
                    let size = object
                        .and_then(|o| o.get("size"))
                        .and_then(|s| ByteSize::parse_lenient(s));
                    let path = object.and_then(|o| o.get("mem-path")).cloned();
                    let free = self
                        .profile
                        .looking_glass
                        .as_ref()
                        .is_none_or(|lg| lg.get_ref().path.is_none());
                    match (path, size) {
                        (Some(path), Some(size)) if free => {
                            self.looking_glass(path, size.bytes(), "ivshmem-plain")?;
                        }
                        _ => self.note(
                            format!("<qemu:arg value='{}'>", value.unwrap_or_default()),
                            NoteKind::Untranslated,
                            "an ivshmem device vmrun cannot match to a shared-memory file (vmrun has one)",
                        ),
                    }
                }
                ("-drive", _) if props.get("if").map(String::as_str) == Some("none") => {
                    if let Some(id) = props.get("id") {
                        self.commandline.drives.insert(id.clone(), props.clone());
                    }
                }
                ("-device", "nvme") => {
                    let drive = props
                        .get("drive")
                        .and_then(|id| self.commandline.drives.get(id));
                    match drive.and_then(|d| d.get("file").map(|f| (d, f))) {
                        Some((drive, file)) => {
                            let disk = nvme_disk(drive, file, props.get("bootindex"));
                            // vmrun's export names the disk's place in the profile.
                            let position = props
                                .get("serial")
                                .and_then(|s| s.strip_prefix("vmrun"))
                                .and_then(|n| n.parse::<usize>().ok())
                                .unwrap_or(usize::MAX)
                                .min(self.profile.disk.len());
                            self.profile.disk.insert(position, spanned(disk));
                        }
                        None => passed_on.extend([option.clone()].into_iter().chain(value.clone())),
                    }
                }
                // vmrun's export of a `[[usb]] port`: libvirt names USB devices by
                // vendor:product or by bus and device number, never by port.
                ("-device", "usb-host")
                    if props.contains_key("hostbus") && props.contains_key("hostport") =>
                {
                    let port = format!("{}-{}", props["hostbus"], props["hostport"]);
                    let position = props
                        .get("id")
                        .and_then(|id| id.strip_prefix("ua-vmrun-usb"))
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(usize::MAX)
                        .min(self.profile.usb.len());
                    let usb = RawUsb {
                        port: text(port),
                        ..RawUsb::default()
                    };
                    self.profile.usb.insert(position, spanned(usb));
                }
                ("-set", _) => self.note(
                    format!(
                        "<qemu:arg value='-set'> <qemu:arg value='{}'>",
                        value.unwrap_or_default()
                    ),
                    NoteKind::Untranslated,
                    "it names a device by libvirt's id, which the vmrun VM does not have",
                ),
                _ => passed_on.extend([option.clone()].into_iter().chain(value.clone())),
            }
        }
        if !passed_on.is_empty() {
            self.note(
                "<qemu:commandline>",
                NoteKind::Changed,
                format!(
                    "passed to QEMU unchanged as qemu.extra_args: {}",
                    passed_on.join(" ")
                ),
            );
            self.extra_args(passed_on);
        }
        Ok(())
    }
}

/// `[[disk]] bus = "nvme"` from the `-drive` vmrun's export writes for it.
fn nvme_disk(
    drive: &std::collections::BTreeMap<String, String>,
    file: &str,
    bootindex: Option<&String>,
) -> RawDisk {
    let on = |key: &str| drive.get(key).map(String::as_str) == Some("on");
    let cache = if on("cache.direct") {
        Some("none")
    } else if on("cache.no-flush") {
        Some("unsafe")
    } else {
        None
    };
    RawDisk {
        path: text(file),
        format: text(match drive.get("format").map(String::as_str) {
            Some("qcow2") => "qcow2",
            _ => "raw",
        }),
        bus: text("nvme"),
        readonly: on("readonly").then_some(true).and_then(flag),
        cache: cache.and_then(text),
        discard: (drive.get("discard").map(String::as_str) == Some("unmap"))
            .then_some(true)
            .and_then(flag),
        boot_order: bootindex.and_then(|b| b.parse::<u32>().ok()).and_then(int),
        ..RawDisk::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{domain, import_ok, noted};

    fn commandline(args: &[&str]) -> String {
        let args: String = args
            .iter()
            .map(|a| format!("<qemu:arg value='{a}'/>"))
            .collect();
        domain(&format!(
            "<qemu:commandline xmlns:qemu='{}'>{args}</qemu:commandline>",
            crate::libvirt::QEMU_NAMESPACE
        ))
    }

    #[test]
    fn arguments_with_keys_become_keys_and_the_rest_extra_args() {
        let imported = import_ok(&commandline(&[
            "-object",
            "input-linux,id=kbd,evdev=/dev/input/by-id/k-event-kbd,grab_all=on,grab-toggle=ctrl-scrolllock",
            "-drive",
            "file=/n.img,,x,if=none,id=d0,format=raw,cache.direct=on",
            "-device",
            "nvme,drive=d0,serial=vmrun0,bootindex=1",
            "-device",
            "usb-host,hostbus=1,hostport=2.1,id=ua-vmrun-usb0",
            "-set",
            "device.hostdev0.x-igd-opregion=on",
            "-fw_cfg",
            "opt/x,string=1",
        ]));
        let profile = &imported.profile;
        assert!(profile.contains("[[disk]]\npath = \"/n.img,x\"\nformat = \"raw\"\nbus = \"nvme\"\ncache = \"none\"\nboot_order = 1\n"), "{profile}");
        assert!(profile.contains("[[usb]]\nport = \"1-2.1\"\n"), "{profile}");
        assert!(profile.contains("[input]\nevdev = [\"/dev/input/by-id/k-event-kbd\"]\ngrab_toggle = \"ctrl-scrolllock\"\n"), "{profile}");
        assert!(
            profile.contains("extra_args = [\"-fw_cfg\", \"opt/x,string=1\"]"),
            "{profile}"
        );
        assert!(noted(&imported, "-set", "libvirt's id"));
        assert!(noted(&imported, "<qemu:commandline>", "-fw_cfg"));
    }

    #[test]
    fn looking_glass_ivshmem_from_arguments() {
        let imported = import_ok(&commandline(&[
            "-object",
            "memory-backend-file,id=lg,mem-path=/dev/shm/looking-glass,size=32M,share=on",
            "-device",
            "ivshmem-plain,memdev=lg",
        ]));
        assert!(imported
            .profile
            .contains("[looking_glass]\nsize = \"32M\"\npath = \"/dev/shm/looking-glass\"\n"));
        let imported = import_ok(&commandline(&["-device", "ivshmem-plain,memdev=nothing"]));
        assert!(noted(&imported, "ivshmem-plain", "cannot match"));
    }
}
