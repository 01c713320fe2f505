//! `[display]` and `[console]`: emulated VGA, QEMU window, serial console.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::Deserialize;

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawDisplay {
    pub vga: Option<Text>,
    pub gui: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
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
pub struct Display {
    pub vga: VgaModel,
    pub gui: Gui,
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
        let default_vga = if pci.is_empty() {
            VgaModel::Std
        } else {
            VgaModel::None
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
        Display { vga, gui }
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
