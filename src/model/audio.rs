//! `[audio]`: a sound card for the guest and where its sound goes: the desktop user's
//! PulseAudio server (PipeWire's pipewire-pulse serves the same socket), the desktop user's
//! PipeWire through QEMU's native backend (QEMU 8.1 and later), or nowhere.
//! What the profile says (`Raw*`), what it means, and the rules between them. Whose server
//! (the user who ran `sudo` by default) is a host fact, resolved by `plan`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawAudio {
    pub backend: Option<Text>,
    pub device: Option<Text>,
    pub server: Option<Text>,
    pub cookie: Option<Text>,
    pub user: Option<Text>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioDevice {
    /// ich9-intel-hda with an hda-duplex codec: Windows and Linux have drivers built in.
    Ich9,
    /// usb-audio on the xHCI controller (output only).
    Usb,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioBackend {
    PulseAudio {
        /// The server's socket; by default the desktop user's `/run/user/UID/pulse/native`.
        server: Option<PathBuf>,
        /// The server's cookie; by default the desktop user's `~/.config/pulse/cookie`.
        cookie: Option<PathBuf>,
        /// The desktop user (name or uid); by default the user who ran `sudo`.
        user: Option<String>,
    },
    /// QEMU's native PipeWire backend (`-audiodev pipewire`, QEMU 8.1+). No cookie: PipeWire
    /// lets in whoever may open its socket, so QEMU runs as the desktop user by default.
    PipeWire {
        /// The server's socket; by default the desktop user's `/run/user/UID/pipewire-0`.
        server: Option<PathBuf>,
        /// The desktop user (name or uid); by default the user who ran `sudo`.
        user: Option<String>,
    },
    /// A sound card whose sound goes nowhere.
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audio {
    pub backend: AudioBackend,
    pub device: AudioDevice,
}

impl Validator {
    pub(super) fn audio(&mut self, raw: &RawProfile) -> Option<Audio> {
        let a = raw.audio.as_ref()?.get_ref();
        #[derive(Clone, Copy, PartialEq)]
        enum Kind {
            Pulse,
            PipeWire,
            None,
        }
        let kind = self.choose(
            &a.backend,
            "audio.backend",
            &[
                ("pulseaudio", Kind::Pulse),
                ("pipewire", Kind::PipeWire),
                ("none", Kind::None),
            ],
            Kind::Pulse,
        );
        let device = self.choose(
            &a.device,
            "audio.device",
            &[("ich9", AudioDevice::Ich9), ("usb", AudioDevice::Usb)],
            AudioDevice::Ich9,
        );
        let mut absolute = |text: &Option<Text>, key: &str| -> Option<PathBuf> {
            let text = text.as_ref()?;
            let path = PathBuf::from(text.get_ref());
            if path.is_absolute() {
                Some(path)
            } else {
                self.error(
                    text.span(),
                    key,
                    format!(
                        "`{}` is not an absolute path (e.g. \"/run/user/1000/pulse/native\")",
                        text.get_ref()
                    ),
                );
                None
            }
        };
        let server = absolute(&a.server, "audio.server");
        let cookie = absolute(&a.cookie, "audio.cookie");
        let user = a.user.as_ref().and_then(|text| {
            let value = text.get_ref();
            let valid = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if valid {
                Some(value.clone())
            } else {
                self.error(
                    text.span(),
                    "audio.user",
                    format!("`{value}` is not a user name or uid"),
                );
                None
            }
        });
        let ignored: &[(&Option<Text>, &str)] = match kind {
            Kind::Pulse => &[],
            Kind::PipeWire => &[(&a.cookie, "audio.cookie")],
            Kind::None => &[
                (&a.server, "audio.server"),
                (&a.cookie, "audio.cookie"),
                (&a.user, "audio.user"),
            ],
        };
        let backend_name = match kind {
            Kind::Pulse => "pulseaudio",
            Kind::PipeWire => "pipewire",
            Kind::None => "none",
        };
        for (value, key) in ignored {
            if let Some(text) = value {
                self.warning(
                    text.span(),
                    key,
                    format!("is ignored with audio.backend = \"{backend_name}\""),
                );
            }
        }
        let backend = match kind {
            Kind::Pulse => AudioBackend::PulseAudio {
                server,
                cookie,
                user,
            },
            Kind::PipeWire => AudioBackend::PipeWire { server, user },
            Kind::None => AudioBackend::None,
        };
        Some(Audio { backend, device })
    }
}
