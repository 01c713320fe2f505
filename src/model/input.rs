//! `[input]`: evdev devices and the grab toggle.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawInput {
    pub evdev: Option<TextList>,
    pub grab_toggle: Option<Text>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Input {
    pub evdev: Vec<PathBuf>,
    pub grab_toggle: Option<String>,
}

impl Validator {
    pub(super) fn input(&mut self, raw: &RawProfile) -> Input {
        let (i, _) = section(&raw.input);
        let mut evdev = Vec::new();
        if let Some(list) = &i.evdev {
            for (index, text) in list.get_ref().iter().enumerate() {
                let path = PathBuf::from(text.get_ref());
                if !path.is_absolute() {
                    self.error(
                        text.span(),
                        &format!("input.evdev[{index}]"),
                        "use an absolute path, preferably /dev/input/by-id/... (event numbers change between boots)",
                    );
                    continue;
                }
                evdev.push(path);
            }
        }
        let toggles = [
            ("ctrl-ctrl", "ctrl-ctrl"),
            ("alt-alt", "alt-alt"),
            ("shift-shift", "shift-shift"),
            ("meta-meta", "meta-meta"),
            ("scrolllock", "scrolllock"),
            ("ctrl-scrolllock", "ctrl-scrolllock"),
        ];
        let grab_toggle = i
            .grab_toggle
            .as_ref()
            .and_then(|t| self.pick(t, "input.grab_toggle", &toggles))
            .map(str::to_string);
        Input { evdev, grab_toggle }
    }
}
