//! `<interface>` → `[network]`: vmrun has one NIC.

use roxmltree::Node;

use super::super::read::{child, elements};
use super::super::{spanned, text, ImportError, Importer};
use crate::model::network::RawNetwork;
use crate::model::MacAddress;

/// libvirt's NAT bridge: it exists only while libvirt's `default` network runs.
const LIBVIRT_NAT_BRIDGE: &str = "virbr0";

impl Importer {
    pub(super) fn interface(&mut self, node: Node) -> Result<(), ImportError> {
        if self.profile.network.is_some() {
            self.untranslated(node, "vmrun has one network interface");
            return Ok(());
        }
        let source = child(node, "source");
        let kind = node.attribute("type").unwrap_or("");
        let (mode, bridge, tap) = match kind {
            "bridge" => ("bridge", source.and_then(|s| s.attribute("bridge")), None),
            "ethernet" => {
                let target = child(node, "target").and_then(|t| t.attribute("dev"));
                match target {
                    Some(dev) => ("tap", None, Some(dev)),
                    None => {
                        self.changed(node, "a tap device libvirt would create: vmrun needs an existing one; the profile uses user networking");
                        ("user", None, None)
                    }
                }
            }
            "user" => ("user", None, None),
            "network" => {
                let network = source
                    .and_then(|s| s.attribute("network"))
                    .unwrap_or("default");
                self.changed(
                    node,
                    format!(
                        "libvirt's network `{network}` became QEMU's user networking (NAT); for the \
                         same network use mode = \"bridge\" with its bridge (virbr0 for `default`)"
                    ),
                );
                ("user", None, None)
            }
            other => {
                self.changed(
                    node,
                    format!("vmrun has no `{other}` interfaces; the profile uses user networking"),
                );
                ("user", None, None)
            }
        };
        if bridge == Some(LIBVIRT_NAT_BRIDGE) {
            self.changed(
                node,
                "virbr0 is libvirt's NAT bridge: it exists only while libvirt's `default` network \
                 runs; without libvirt use mode = \"user\" or a bridge of your own",
            );
        }
        // Kept as written (the parser reads it back the same), once it is known to be one.
        let mac = child(node, "mac").and_then(|m| m.attribute("address"));
        if let Some(Err(message)) = mac.map(str::parse::<MacAddress>) {
            return Err(ImportError::Invalid {
                element: "mac",
                message,
            });
        }
        let model = match child(node, "model").and_then(|m| m.attribute("type")) {
            None
            | Some("virtio" | "virtio-net" | "virtio-transitional" | "virtio-non-transitional") => {
                None
            }
            Some(model @ ("e1000e" | "rtl8139")) => Some(model),
            Some(other) => {
                self.changed(node, format!("vmrun has no `{other}` NIC; the profile uses e1000e, which the same guests drive"));
                Some("e1000e")
            }
        };
        for item in elements(node) {
            match item.tag_name().name() {
                "mac" | "source" | "model" | "address" | "target" | "alias" => {}
                _ => self.untranslated(item, "vmrun has no key for this interface setting"),
            }
        }
        self.profile.network = Some(spanned(RawNetwork {
            mode: text(mode),
            bridge: bridge.and_then(text),
            tap: tap.and_then(text),
            mac: mac.and_then(text),
            model: model.and_then(text),
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{domain, import_ok, noted};
    use super::super::super::*;

    #[test]
    fn one_interface_with_its_bridge_mac_and_model() {
        let imported = import_ok(&domain(
            "<devices><interface type='bridge'><mac address='52:54:00:aa:bb:cc'/>\
             <source bridge='br0'/><model type='e1000'/><driver queues='4'/></interface>\
             <interface type='direct'/></devices>",
        ));
        assert!(imported.profile.contains(
            "[network]\nmode = \"bridge\"\nbridge = \"br0\"\nmac = \"52:54:00:aa:bb:cc\"\nmodel = \"e1000e\"\n"
        ), "{}", imported.profile);
        assert!(noted(&imported, "<driver", "interface setting"));
        assert!(noted(
            &imported,
            "<interface type='direct'>",
            "one network interface"
        ));
        let imported = import_ok(&domain("<devices><interface type='network'/></devices>"));
        assert!(imported.profile.contains("[network]\nmode = \"user\"\n"));
    }

    #[test]
    fn libvirts_nat_bridge_is_noted() {
        let imported = import_ok(&domain(
            "<devices><interface type='bridge'><source bridge='virbr0'/></interface></devices>",
        ));
        assert!(imported.profile.contains("bridge = \"virbr0\""));
        assert!(noted(
            &imported,
            "<interface type='bridge'>",
            "libvirt's NAT bridge"
        ));
    }

    #[test]
    fn a_bad_mac_address_is_refused() {
        for mac in ["52:54:00:aa:bb", "zz:54:00:aa:bb:cc", "01:00:5e:00:00:01"] {
            let error = import(&domain(&format!(
                "<devices><interface type='user'><mac address='{mac}'/></interface></devices>"
            )))
            .unwrap_err();
            assert!(
                matches!(error, ImportError::Invalid { element: "mac", .. }),
                "{mac}: {error}"
            );
        }
    }
}
