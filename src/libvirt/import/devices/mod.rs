//! `<devices>`: each kind of device in its own module; the ones vmrun builds itself
//! (controllers, the console, the panic device) and the one-line ones are read here.

mod disk;
mod graphics;
mod hostdev;
mod input;
mod interface;
mod shmem;
mod sound;
mod tpm;

use roxmltree::Node;

use super::read::{child, elements, text_of};
use super::{section, text, ImportError, Importer};

impl Importer {
    pub(super) fn devices(&mut self, node: Node) -> Result<(), ImportError> {
        let mut controllers_noted = false;
        let remote = |kind: &str| {
            elements(node)
                .any(|d| d.tag_name().name() == "graphics" && d.attribute("type") == Some(kind))
        };
        let remote_spice = remote("spice");
        let remote_display = remote_spice || remote("vnc");
        let mut videos = 0;
        let mut graphics_seen = false;
        let mut serial_seen = false;
        let mut guest_addresses_noted = false;
        for device in elements(node) {
            match device.tag_name().name() {
                "emulator" => {
                    let path = text_of(device);
                    if !path.ends_with("/qemu-system-x86_64") && path != "qemu-system-x86_64" {
                        section(&mut self.profile.qemu).binary = text(path);
                    }
                }
                "disk" => self.disk(device),
                "controller" => {
                    let model = device.attribute("model").unwrap_or("");
                    let infrastructure = matches!(model, "pci-root" | "pcie-root")
                        || device.attribute("type") == Some("usb")
                            && matches!(model, "none" | "qemu-xhci")
                        // The SPICE agent's port, which vmrun adds with SPICE.
                        || device.attribute("type") == Some("virtio-serial") && remote_spice;
                    if !infrastructure && !controllers_noted {
                        controllers_noted = true;
                        self.changed(
                            device,
                            "vmrun builds the controllers its devices need (a root port per \
                             passed slot, AHCI, virtio-scsi, xHCI) itself; <controller> elements are not copied",
                        );
                    }
                }
                "interface" => self.interface(device)?,
                "hostdev" => {
                    if child(device, "address").is_some() && !guest_addresses_noted {
                        guest_addresses_noted = true;
                        self.changed(
                            device,
                            "vmrun chooses guest addresses itself: each host slot gets its own \
                             root port and keeps its functions together (a GPU and its audio \
                             become functions 0 and 1 of one device)",
                        );
                    }
                    self.hostdev(device)?;
                }
                "input" => self.input(device, remote_display),
                "graphics" => {
                    graphics_seen = true;
                    self.graphics(device);
                }
                "channel" => {
                    let agent = device.attribute("type") == Some("spicevmc")
                        && child(device, "target").is_none_or(|t| {
                            t.attribute("name")
                                .is_none_or(|n| n == "com.redhat.spice.0")
                        });
                    if !agent || !remote_spice {
                        self.untranslated(
                            device,
                            "vmrun's one channel is the SPICE agent's, which comes with display.remote = \"spice\"",
                        );
                    }
                }
                "video" => {
                    videos += 1;
                    self.video(device, videos);
                }
                "serial" => {
                    if serial_seen {
                        self.untranslated(device, "vmrun has one serial port");
                        continue;
                    }
                    serial_seen = true;
                    if device.attribute("type") == Some("file") {
                        section(&mut self.profile.console).serial = text("log");
                        self.changed(
                            device,
                            "the serial port is written to console.log in vmrun's state directory",
                        );
                    } else {
                        self.untranslated(
                            device,
                            "vmrun's serial console is a log file (console.serial = \"log\")",
                        );
                    }
                }
                "console" => {
                    let mirrors_serial = child(device, "target")
                        .is_none_or(|t| t.attribute("type").is_none_or(|ty| ty == "serial"));
                    if !mirrors_serial {
                        self.untranslated(device, "vmrun has no virtio console");
                    }
                }
                // vmrun gives every VM an ISA pvpanic device; other models are not kept.
                "panic" => {
                    if device.attribute("model").is_some_and(|m| m != "isa") {
                        self.changed(device, "vmrun's panic device is the ISA pvpanic");
                    }
                }
                "memballoon" => {
                    if device.attribute("model") != Some("none") {
                        self.untranslated(device, "vmrun adds no memory balloon");
                    }
                }
                // Read with the <sound> that plays through it.
                "audio" => {}
                "shmem" => self.shmem(device)?,
                "sound" => self.sound(node, device),
                "tpm" => self.tpm(device),
                _ => self.untranslated(device, "vmrun has no device of this kind"),
            }
        }
        if videos == 0 {
            section(&mut self.profile.display).vga =
                text(if graphics_seen { "std" } else { "none" });
        }
        Ok(())
    }

    /// `<video>`: vmrun has one emulated adapter, the first.
    fn video(&mut self, device: Node, nth: usize) {
        let model = child(device, "model").and_then(|m| m.attribute("type"));
        let vga = match model {
            Some("vga") => "std",
            Some("virtio") => "virtio",
            Some("qxl") => "qxl",
            Some("none") => "none",
            other => {
                self.changed(
                    device,
                    format!(
                        "vmrun has no `{}` adapter; the profile uses the standard VGA",
                        other.unwrap_or("default")
                    ),
                );
                "std"
            }
        };
        if nth == 1 {
            section(&mut self.profile.display).vga = text(vga);
        } else {
            self.untranslated(device, "vmrun has one emulated display adapter");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{domain, import_ok, noted};

    #[test]
    fn infrastructure_devices_are_built_by_vmrun_and_others_noted() {
        let imported = import_ok(&domain(
            "<devices><emulator>/usr/local/bin/qemu-kvm</emulator>\
             <controller type='pci' model='pcie-root'/><controller type='sata' index='0'/>\
             <controller type='scsi' index='0'/>\
             <video><model type='qxl'/></video><video><model type='vga'/></video>\
             <serial type='file'><source path='/x.log'/></serial><serial type='pty'/>\
             <console type='pty'><target type='virtio'/></console>\
             <panic model='hyperv'/><memballoon model='virtio'/><watchdog/></devices>",
        ));
        let profile = &imported.profile;
        assert!(profile.contains("[display]\nvga = \"qxl\"\n"), "{profile}");
        assert!(
            profile.contains("[console]\nserial = \"log\"\n"),
            "{profile}"
        );
        assert!(
            profile.contains("[qemu]\nbinary = \"/usr/local/bin/qemu-kvm\"\n"),
            "{profile}"
        );
        assert_eq!(
            imported
                .notes
                .iter()
                .filter(|n| n.element.starts_with("<controller"))
                .count(),
            1
        );
        assert!(noted(&imported, "<video>", "one emulated display adapter"));
        assert!(noted(&imported, "<serial type='pty'>", "one serial port"));
        assert!(noted(&imported, "<console", "virtio console"));
        assert!(noted(&imported, "<panic", "ISA pvpanic"));
        assert!(noted(&imported, "<memballoon", "balloon"));
        assert!(noted(&imported, "<watchdog>", "no device of this kind"));
    }

    #[test]
    fn no_video_means_std_with_graphics_and_none_without() {
        let imported = import_ok(&domain("<devices><graphics type='sdl'/></devices>"));
        assert!(
            imported.profile.contains("vga = \"std\"\ngui = \"sdl\"\n"),
            "{}",
            imported.profile
        );
        let imported = import_ok(&domain("<devices/>"));
        assert!(imported.profile.contains("vga = \"none\"\n"));
    }
}
