//! `<graphics>` → `display.gui` (SDL) or `display.remote` and `display.listen` (SPICE, VNC).

use roxmltree::Node;

use super::super::read::{child, elements};
use super::super::{section, text, Importer};

impl Importer {
    pub(super) fn graphics(&mut self, device: Node) {
        let remote_taken = self
            .profile
            .display
            .as_ref()
            .is_some_and(|d| d.get_ref().remote.is_some());
        match device.attribute("type") {
            Some("sdl") => section(&mut self.profile.display).gui = text("sdl"),
            Some(protocol @ ("spice" | "vnc")) if !remote_taken => self.remote(device, protocol),
            _ => self.untranslated(
                device,
                "vmrun has a local window (display.gui) and one remote display (SPICE or VNC)",
            ),
        }
    }

    /// `<graphics type='spice'|'vnc'>`: a socket listen is vmrun's `listen = "unix"` (in
    /// vmrun's runtime directory), an address with a fixed port is `ADDRESS:PORT`.
    fn remote(&mut self, node: Node, protocol: &str) {
        let listen_node = child(node, "listen");
        let kind = listen_node.and_then(|l| l.attribute("type"));
        let address = listen_node
            .and_then(|l| l.attribute("address"))
            .or_else(|| node.attribute("listen"));
        let port = node
            .attribute("port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0 && node.attribute("autoport") != Some("yes"));
        let listen = match (kind, address, port) {
            (Some("socket"), _, _) => {
                if listen_node.and_then(|l| l.attribute("socket")).is_some() {
                    self.changed(
                        node,
                        "vmrun puts the socket in the VM's runtime directory; `vmrun status` names it",
                    );
                }
                "unix".to_string()
            }
            (_, Some(address), Some(port)) => {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.to_string()
                };
                format!("{host}:{port}")
            }
            _ => {
                self.changed(
                    node,
                    "no fixed address and port (autoport, or listening on a network): vmrun listens on a \
                     Unix socket in the VM's runtime directory; set display.listen = \"ADDRESS:PORT\" for TCP",
                );
                "unix".to_string()
            }
        };
        if node.attribute("passwd").is_some() {
            self.untranslated(
                node,
                "vmrun reads the password from a file (display.password_file); it is not copied into the profile",
            );
        }
        for item in elements(node) {
            match item.tag_name().name() {
                "listen" => {}
                _ => {
                    self.untranslated(item, "vmrun keeps QEMU's defaults for this display setting")
                }
            }
        }
        let display = section(&mut self.profile.display);
        display.remote = text(protocol);
        display.listen = text(listen);
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{domain, import_ok, noted};

    #[test]
    fn spice_and_vnc_listen_on_a_socket_or_a_fixed_port() {
        let imported = import_ok(&domain(
            "<devices><graphics type='vnc' port='5901' autoport='no' listen='::1' passwd='x'/>\
             <graphics type='spice' autoport='yes'><image compression='off'/></graphics></devices>",
        ));
        let profile = &imported.profile;
        assert!(
            profile.contains("remote = \"vnc\"\nlisten = \"[::1]:5901\"\n"),
            "{profile}"
        );
        assert!(noted(&imported, "<graphics type='vnc'", "password_file"));
        assert!(noted(
            &imported,
            "<graphics type='spice'",
            "one remote display"
        ));
        let imported = import_ok(&domain(
            "<devices><graphics type='spice' autoport='yes'><listen type='address'/>\
             <image compression='off'/></graphics></devices>",
        ));
        assert!(imported
            .profile
            .contains("remote = \"spice\"\nlisten = \"unix\"\n"));
        assert!(noted(&imported, "<graphics type='spice'", "Unix socket"));
        assert!(noted(&imported, "<image", "QEMU's defaults"));
    }
}
