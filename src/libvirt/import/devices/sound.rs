//! `<sound>` and the `<audio>` backend it plays through → `[audio]`.

use roxmltree::Node;

use super::super::read::{child, elements};
use super::super::{section, text, Importer};

impl Importer {
    /// `<sound>` and the `<audio>` backend it names (or the first one).
    pub(super) fn sound<'a, 'input>(&mut self, devices: Node<'a, 'input>, node: Node<'a, 'input>) {
        if self
            .profile
            .audio
            .as_ref()
            .is_some_and(|a| a.get_ref().backend.is_some())
        {
            self.untranslated(node, "vmrun has one sound card");
            return;
        }
        let device = match node.attribute("model") {
            Some("ich9") => "ich9",
            Some("usb") => "usb",
            Some(model @ ("ich6" | "ich7" | "hda")) => {
                self.changed(
                    node,
                    format!("vmrun's HD Audio controller is ich9, not `{model}`: the same drivers"),
                );
                "ich9"
            }
            _ => {
                self.untranslated(
                    node,
                    "vmrun's sound cards are Intel HD Audio (ich9) and USB audio",
                );
                return;
            }
        };
        for item in elements(node) {
            match item.tag_name().name() {
                "audio" | "address" | "alias" => {}
                "codec" if item.attribute("type") == Some("duplex") => {}
                _ => self.untranslated(item, "vmrun's HD Audio has the one duplex codec"),
            }
        }
        let id = child(node, "audio").and_then(|a| a.attribute("id"));
        let backend_node = elements(devices)
            .find(|d| d.tag_name().name() == "audio" && (id.is_none() || d.attribute("id") == id));
        let (backend, server) = match backend_node.and_then(|b| b.attribute("type").map(|t| (b, t)))
        {
            Some((b, "pulseaudio")) => {
                let server = b
                    .attribute("serverName")
                    .map(|s| s.strip_prefix("unix:").unwrap_or(s).to_string());
                if let Some(name) = server.as_ref().filter(|s| !s.starts_with('/')) {
                    self.changed(
                        b,
                        format!("vmrun reaches PulseAudio on a Unix socket, not `{name}`: the desktop user's server"),
                    );
                    ("pulseaudio", None)
                } else {
                    ("pulseaudio", server)
                }
            }
            Some((_, "none")) | None => ("none", None),
            Some((b, other)) => {
                self.changed(
                    b,
                    format!("vmrun plays through PulseAudio (PipeWire too) or nowhere, not `{other}`: the profile says none"),
                );
                ("none", None)
            }
        };
        let audio = section(&mut self.profile.audio);
        audio.backend = text(backend);
        audio.device = text(device);
        audio.server = server.and_then(text);
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{domain, import_ok, noted};

    #[test]
    fn one_sound_card_playing_through_pulseaudio_or_nowhere() {
        let imported = import_ok(&domain(
            "<devices><sound model='ich6'><codec type='micro'/><audio id='2'/></sound>\
             <sound model='ich9'/><audio id='1' type='spice'/>\
             <audio id='2' type='pulseaudio' serverName='unix:/run/user/1000/pulse/native'/></devices>",
        ));
        assert!(imported.profile.contains(
            "[audio]\nbackend = \"pulseaudio\"\ndevice = \"ich9\"\nserver = \"/run/user/1000/pulse/native\"\n"
        ), "{}", imported.profile);
        assert!(noted(&imported, "<sound model='ich6'>", "ich9"));
        assert!(noted(&imported, "<codec", "duplex"));
        assert!(noted(&imported, "<sound model='ich9'>", "one sound card"));
        let imported = import_ok(&domain(
            "<devices><sound model='ich9'/><audio id='1' type='spice'/></devices>",
        ));
        assert!(imported
            .profile
            .contains("[audio]\nbackend = \"none\"\ndevice = \"ich9\"\n"));
        assert!(noted(&imported, "<audio id='1' type='spice'>", "nowhere"));
    }
}
