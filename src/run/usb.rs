//! USB hot-plug on a running VM, over its second QMP monitor: a `usb-host` added onto the xHCI
//! controller every VM has (`xhci.0`), removed again, and what the guest has now.

use serde::Serialize;
use serde_json::{json, Value};

use super::control::{connect_ctl, ControlError};
use super::state;
use crate::plan::VmPaths;
use crate::qmp::Qmp;

/// The bus QEMU names the controller's ports by (`-device qemu-xhci,id=xhci`).
const XHCI_BUS: &str = "xhci.0";

/// What to plug: a host device by its port, by its ids, or both (the port then must hold a
/// device with those ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbHost {
    /// QEMU's device id, which `detach` and `list` show.
    pub id: String,
    pub port: Option<(u8, String)>,
    pub ids: Option<(u16, u16)>,
}

/// A `usb-host` the guest has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuestUsb {
    pub id: String,
    /// `1-4.2` when it was given by port.
    pub port: Option<String>,
    /// `046d:c52b` when it was given by ids.
    pub device: Option<String>,
    /// Whether QEMU has the host device open; `false` while it waits for it to be plugged in.
    pub attached: bool,
    /// Named by the profile (`usb0`, `usb1`...), so there again on the next start.
    pub from_profile: bool,
}

fn running_ctl(paths: &VmPaths, name: &str) -> Result<Qmp, ControlError> {
    if state::running(paths).is_none() {
        return Err(ControlError::NotRunning(name.to_string()));
    }
    Ok(connect_ctl(paths)?)
}

fn property(qmp: &mut Qmp, id: &str, name: &str) -> Value {
    qmp.execute(
        "qom-get",
        Some(json!({"path": format!("/machine/peripheral/{id}"), "property": name})),
    )
    .unwrap_or(Value::Null)
}

/// The VM's `usb-host` devices, as QEMU's device tree has them.
pub fn guest_devices(paths: &VmPaths, name: &str) -> Result<Vec<GuestUsb>, ControlError> {
    let mut qmp = running_ctl(paths, name)?;
    guest_devices_on(&mut qmp)
}

fn guest_devices_on(qmp: &mut Qmp) -> Result<Vec<GuestUsb>, ControlError> {
    let children = qmp.execute("qom-list", Some(json!({"path": "/machine/peripheral"})))?;
    let ids: Vec<String> = children
        .as_array()
        .into_iter()
        .flatten()
        .filter(|child| child["type"] == "child<usb-host>")
        .filter_map(|child| child["name"].as_str().map(str::to_string))
        .collect();
    let mut devices = Vec::new();
    for id in ids {
        let bus = property(qmp, &id, "hostbus").as_u64().unwrap_or(0);
        let port = property(qmp, &id, "hostport")
            .as_str()
            .unwrap_or_default()
            .to_string();
        let vendor = property(qmp, &id, "vendorid").as_u64().unwrap_or(0);
        let product = property(qmp, &id, "productid").as_u64().unwrap_or(0);
        let attached = property(qmp, &id, "attached").as_bool().unwrap_or(false);
        let from_profile = id
            .strip_prefix("usb")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        devices.push(GuestUsb {
            port: (!port.is_empty()).then(|| format!("{bus}-{port}")),
            device: (vendor != 0 || product != 0).then(|| format!("{vendor:04x}:{product:04x}")),
            id,
            attached,
            from_profile,
        });
    }
    Ok(devices)
}

/// Plugs `host` into the guest. QEMU accepts a device that is not plugged into the host (yet):
/// the guest sees it once it is.
pub fn attach(paths: &VmPaths, name: &str, host: &UsbHost) -> Result<(), ControlError> {
    let mut qmp = running_ctl(paths, name)?;
    let mut arguments = json!({"driver": "usb-host", "id": host.id, "bus": XHCI_BUS});
    if let Some((bus, port)) = &host.port {
        arguments["hostbus"] = json!(bus);
        arguments["hostport"] = json!(port);
    }
    if let Some((vendor, product)) = host.ids {
        arguments["vendorid"] = json!(vendor);
        arguments["productid"] = json!(product);
    }
    qmp.execute("device_add", Some(arguments))?;
    Ok(())
}

/// Unplugs the guest's device `id` (USB unplugs at once; no guest cooperation is needed).
pub fn detach(paths: &VmPaths, name: &str, id: &str) -> Result<(), ControlError> {
    let mut qmp = running_ctl(paths, name)?;
    qmp.execute("device_del", Some(json!({"id": id})))?;
    Ok(())
}
