//! `[network]`: user, bridge, tap or none; MAC address and NIC model.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawNetwork {
    pub mode: Option<Text>,
    pub bridge: Option<Text>,
    pub tap: Option<Text>,
    pub mac: Option<Text>,
    pub model: Option<Text>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    User,
    Bridge(String),
    Tap(String),
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicModel {
    Virtio,
    E1000e,
    Rtl8139,
}

impl NicModel {
    pub fn qemu_device(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub mode: NetworkMode,
    pub mac: MacAddress,
    pub model: NicModel,
}

impl Validator {
    pub(super) fn network(&mut self, raw: &RawProfile, name: &VmName) -> Network {
        let (n, section_span) = section(&raw.network);
        let section_span = section_span.unwrap_or(0..0);
        let mode_name = self.choose(
            &n.mode,
            "network.mode",
            &[
                ("user", "user"),
                ("bridge", "bridge"),
                ("tap", "tap"),
                ("none", "none"),
            ],
            "user",
        );
        let mut required = |value: &Option<Text>, key: &str, what: &str| -> String {
            match value {
                Some(text)
                    if !text.get_ref().is_empty() && !text.get_ref().contains([',', '/']) =>
                {
                    text.get_ref().clone()
                }
                Some(text) => {
                    self.error(
                        text.span(),
                        key,
                        format!("`{}` is not a {what} name", text.get_ref()),
                    );
                    String::new()
                }
                None => {
                    self.error(
                        section_span.clone(),
                        key,
                        format!(
                            "network.mode = \"{mode_name}\" needs `{}` (the host {what})",
                            &key[8..]
                        ),
                    );
                    String::new()
                }
            }
        };
        let mode = match mode_name {
            "bridge" => NetworkMode::Bridge(required(&n.bridge, "network.bridge", "bridge")),
            "tap" => NetworkMode::Tap(required(&n.tap, "network.tap", "tap device")),
            "none" => NetworkMode::None,
            _ => NetworkMode::User,
        };
        for (value, key, owner) in [
            (&n.bridge, "network.bridge", "bridge"),
            (&n.tap, "network.tap", "tap"),
        ] {
            if let Some(text) = value {
                if mode_name != owner {
                    self.warning(
                        text.span(),
                        key,
                        format!("is ignored with network.mode = \"{mode_name}\""),
                    );
                }
            }
        }
        let mac = n
            .mac
            .as_ref()
            .and_then(|t| self.parse::<MacAddress>(t, "network.mac"))
            .unwrap_or_else(|| MacAddress::derived_from_name(name.as_str()));
        let model = self.choose(
            &n.model,
            "network.model",
            &[
                ("virtio", NicModel::Virtio),
                ("e1000e", NicModel::E1000e),
                ("rtl8139", NicModel::Rtl8139),
            ],
            NicModel::Virtio,
        );
        Network { mode, mac, model }
    }
}
