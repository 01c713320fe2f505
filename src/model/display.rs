//! `[display]` and `[console]`: emulated VGA, QEMU window, a remote display (SPICE or VNC on a
//! Unix socket or an address), serial console.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawDisplay {
    pub vga: Option<Text>,
    pub gui: Option<Text>,
    pub remote: Option<Text>,
    pub listen: Option<Text>,
    pub password_file: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawConsole {
    pub serial: Option<Text>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgaModel {
    None,
    Std,
    Virtio,
    Qxl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gui {
    None,
    Gtk,
    Sdl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteProtocol {
    Spice,
    Vnc,
}

impl RemoteProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteProtocol::Spice => "spice",
            RemoteProtocol::Vnc => "vnc",
        }
    }
}

/// Where a remote display listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A socket in the VM's runtime directory: only root reaches it, SSH forwards it.
    Unix,
    Tcp {
        addr: IpAddr,
        port: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub protocol: RemoteProtocol,
    pub listen: Listen,
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Display {
    pub vga: VgaModel,
    pub gui: Gui,
    pub remote: Option<Remote>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialConsole {
    None,
    /// The guest's first serial port is written to `console.log` in the VM's state directory.
    Log,
}

impl Validator {
    pub(super) fn display(&mut self, raw: &RawProfile, pci: &[PciDevice]) -> Display {
        let (d, _) = section(&raw.display);
        let remote = self.remote(&d);
        // A remote display must show something before a GPU driver exists (installing
        // Windows): it brings its adapter unless a passed GPU is the primary one. Looking
        // Glass shows the GPU's frames and uses SPICE for input only.
        let primary_gpu = pci.iter().any(|device| device.vga);
        let default_vga = match &remote {
            Some(remote) if !primary_gpu && raw.looking_glass.is_none() => match remote.protocol {
                RemoteProtocol::Spice => VgaModel::Qxl,
                RemoteProtocol::Vnc => VgaModel::Std,
            },
            _ if pci.is_empty() => VgaModel::Std,
            _ => VgaModel::None,
        };
        let vga = self.choose(
            &d.vga,
            "display.vga",
            &[
                ("none", VgaModel::None),
                ("std", VgaModel::Std),
                ("virtio", VgaModel::Virtio),
                ("qxl", VgaModel::Qxl),
            ],
            default_vga,
        );
        let gui = self.choose(
            &d.gui,
            "display.gui",
            &[("none", Gui::None), ("gtk", Gui::Gtk), ("sdl", Gui::Sdl)],
            Gui::None,
        );
        Display { vga, gui, remote }
    }

    fn remote(&mut self, d: &RawDisplay) -> Option<Remote> {
        let protocol = self.choose(
            &d.remote,
            "display.remote",
            &[
                ("none", None),
                ("spice", Some(RemoteProtocol::Spice)),
                ("vnc", Some(RemoteProtocol::Vnc)),
            ],
            None,
        );
        let Some(protocol) = protocol else {
            for (value, key) in [
                (&d.listen, "display.listen"),
                (&d.password_file, "display.password_file"),
            ] {
                if let Some(text) = value {
                    self.warning(
                        text.span(),
                        key,
                        "is ignored without display.remote = \"spice\" or \"vnc\"",
                    );
                }
            }
            return None;
        };
        let listen = match &d.listen {
            None => Listen::Unix,
            Some(text) if text.get_ref() == "unix" => Listen::Unix,
            Some(text) => match parse_listen(text.get_ref(), protocol) {
                Ok(listen) => listen,
                Err(message) => {
                    self.error(text.span(), "display.listen", message);
                    Listen::Unix
                }
            },
        };
        let password_file = d.password_file.as_ref().map(|text| {
            let path = self.resolve_path(text.get_ref());
            if !path.is_file() {
                self.missing_file(text.span(), "display.password_file", &path, "password file");
            }
            path
        });
        if let (Listen::Tcp { addr, .. }, None, Some(text)) = (&listen, &password_file, &d.listen) {
            if !addr.is_loopback() {
                self.error(
                    text.span(),
                    "display.listen",
                    format!(
                        "{addr} is reachable from other machines: set display.password_file \
                         (a file holding the password), or listen on \"unix\" or 127.0.0.1 \
                         and forward it over SSH"
                    ),
                );
            }
        }
        Some(Remote {
            protocol,
            listen,
            password_file,
        })
    }

    pub(super) fn console(&mut self, raw: &RawProfile) -> SerialConsole {
        let (c, _) = section(&raw.console);
        self.choose(
            &c.serial,
            "console.serial",
            &[("none", SerialConsole::None), ("log", SerialConsole::Log)],
            SerialConsole::None,
        )
    }
}

/// `HOST:PORT` or `[V6]:PORT`; VNC ports are 5900 + QEMU's display number.
fn parse_listen(text: &str, protocol: RemoteProtocol) -> Result<Listen, String> {
    let usage = || {
        format!(
            "`{text}` is not \"unix\" or ADDRESS:PORT (e.g. \"127.0.0.1:{}\", \"[::1]:{}\")",
            5900, 5900
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(usage)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr: IpAddr = if host == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().map_err(|_| usage())?
    };
    let port: u16 = port.parse().map_err(|_| usage())?;
    if port == 0 {
        return Err(usage());
    }
    if protocol == RemoteProtocol::Vnc && port < 5900 {
        return Err(format!(
            "VNC ports start at 5900 (QEMU takes a display number, port - 5900); `{text}` is below"
        ));
    }
    Ok(Listen::Tcp { addr, port })
}
