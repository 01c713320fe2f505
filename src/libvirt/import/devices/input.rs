//! `<input>` → `[input] evdev` (evdev passthrough); PS/2 and the remote display's tablet are
//! what vmrun gives every VM anyway.

use roxmltree::Node;

use super::super::read::child;
use super::super::{section, spanned, text, Importer};

impl Importer {
    pub(super) fn input(&mut self, device: Node, remote_display: bool) {
        match (device.attribute("type"), device.attribute("bus")) {
            (Some("evdev"), _) => self.evdev(device),
            (Some("mouse" | "keyboard"), Some("ps2") | None) => {}
            // vmrun gives a remote display with an emulated adapter a USB tablet.
            (Some("tablet"), Some("usb")) if remote_display => {}
            _ => self.untranslated(
                device,
                "vmrun has PS/2 keyboard and mouse, evdev devices and USB passthrough",
            ),
        }
    }

    fn evdev(&mut self, node: Node) {
        let Some(path) = child(node, "source").and_then(|s| s.attribute("dev")) else {
            self.untranslated(node, "no source device");
            return;
        };
        let source = child(node, "source");
        let keyboard = path.ends_with("event-kbd");
        if source.and_then(|s| s.attribute("grab")) == Some("all") && !keyboard {
            self.changed(
                node,
                "vmrun grabs all devices with the one whose path ends in event-kbd; this one does not",
            );
        }
        let input = section(&mut self.profile.input);
        if let Some(toggle) = source.and_then(|s| s.attribute("grabToggle")) {
            input.grab_toggle = text(toggle);
        }
        let list = input.evdev.get_or_insert_with(|| spanned(Vec::new()));
        list.get_mut().push(spanned(path.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{domain, import_ok, noted};

    #[test]
    fn evdev_devices_and_their_grab_toggle() {
        let imported = import_ok(&domain(
            "<devices><input type='evdev'><source dev='/dev/input/m-event-mouse' grab='all'/></input>\
             <input type='evdev'><source dev='/dev/input/k-event-kbd' grab='all' grabToggle='ctrl-ctrl'/></input>\
             <input type='mouse' bus='ps2'/><input type='tablet' bus='usb'/><input type='evdev'/></devices>",
        ));
        assert!(imported.profile.contains(
            "[input]\nevdev = [\"/dev/input/m-event-mouse\", \"/dev/input/k-event-kbd\"]\ngrab_toggle = \"ctrl-ctrl\"\n"
        ), "{}", imported.profile);
        assert!(noted(
            &imported,
            "<input type='evdev'>",
            "this one does not"
        ));
        assert!(noted(&imported, "<input type='tablet'", "PS/2"));
        assert!(noted(&imported, "<input type='evdev'>", "no source device"));
    }
}
