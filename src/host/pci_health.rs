//! Whether a passed PCI function answers before it goes back to a host driver, and the one
//! remove + rescan vmrun tries when it does not. Binding a function that no longer answers to
//! `amdgpu` or `nvidia` is what hangs hosts; a function that fails here stays off its host
//! driver.
//!
//! What the kernel shows, and what vmrun makes of it:
//! - `config` is read live: a function that fell off the bus (or cannot leave D3cold) reads
//!   all ones, vendor and device `ffff`. Reading it through sysfs runtime-resumes a function in
//!   D3cold first, so a healthy idle function reads its ids.
//! - `power_state` is the kernel's idea of the function's state. An idle function on vfio-pci
//!   is often not in D0: vfio-pci puts unused functions in D3hot (through runtime PM on
//!   current kernels, directly on older ones unless `disable_idle_d3=1`), and `KeepPciPowered`
//!   has already handed runtime PM back (`power/control` `auto`) when this runs. So a function
//!   not in D0 is first woken: `power/control` `on` resumes it synchronously, it is read again,
//!   and the value found is written back. D3hot with a config space that answers is accepted
//!   (vfio-pci's own idle state on kernels that set it directly; the host driver's probe brings
//!   the function to D0); still D3cold after the wake, or config space all ones, is dead.
//!
//! The rescan cannot be kept from probing drivers: PCI attaches a driver to every function it
//! adds itself (`device_attach`), which ignores `/sys/bus/pci/drivers_autoprobe`, and a removed
//! function has no `driver_override` to set. What makes it safe is the kernel's own
//! enumeration: a function whose vendor ID does not answer is not added at all, so no driver
//! can probe a function that is still dead. One that comes back has answered that read; vmrun
//! sets its `driver_override` to vfio-pci right after the rescan (before a host module vmrun
//! loads again can claim it; a host driver already loaded for another card may have probed it
//! within the rescan, which is safe since it answered) and checks it again before the normal
//! restore.

use serde::Serialize;

use super::context::{HostContext, StepError};
use super::pci;
use crate::log::Log;

/// What a passed function's config space said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Config {
    Ids {
        vendor: u16,
        device: u16,
    },
    /// No `config` attribute (a test tree or a stripped-down sysfs): not judged.
    Missing,
    Unreadable(String),
    /// Fewer than the four bytes of the ids.
    Short(usize),
}

/// One reading of a function through the host root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub address: String,
    /// Its directory under /sys/bus/pci/devices exists.
    pub present: bool,
    pub config: Config,
    /// `power_state` (`D0`, `D3hot`, `D3cold`, ...); None where the kernel has no such file.
    pub power_state: Option<String>,
}

fn device_path(address: &str, attribute: &str) -> String {
    format!("/sys/bus/pci/devices/{address}/{attribute}")
}

impl Reading {
    /// Reads the function as it is now; changes nothing.
    pub fn read(host: &HostContext, address: &str) -> Reading {
        let present = host
            .root
            .path(&format!("/sys/bus/pci/devices/{address}"))
            .is_dir();
        if !present {
            return Reading {
                address: address.to_string(),
                present,
                config: Config::Missing,
                power_state: None,
            };
        }
        let config = match host.sysfs.read(&device_path(address, "config")) {
            Ok(bytes) if bytes.len() < 4 => Config::Short(bytes.len()),
            // An SR-IOV virtual function's vendor and device ID registers read ffff by
            // definition (PCIe SR-IOV: the ids are the PF's capability's): it answers when the
            // rest of its header does, and its ids are those the kernel took from the PF.
            Ok(bytes) if is_virtual_function(host, address) => {
                if bytes.len() >= 16 && bytes[4..16].iter().all(|byte| *byte == 0xff) {
                    Config::Ids {
                        vendor: 0xffff,
                        device: 0xffff,
                    }
                } else {
                    let id = |name: &str| {
                        host.read(&device_path(address, name))
                            .and_then(|text| {
                                u16::from_str_radix(text.trim_start_matches("0x"), 16).ok()
                            })
                            .unwrap_or(0xffff)
                    };
                    Config::Ids {
                        vendor: id("vendor"),
                        device: id("device"),
                    }
                }
            }
            Ok(bytes) => Config::Ids {
                vendor: u16::from_le_bytes([bytes[0], bytes[1]]),
                device: u16::from_le_bytes([bytes[2], bytes[3]]),
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Config::Missing,
            Err(error) => Config::Unreadable(error.to_string()),
        };
        Reading {
            address: address.to_string(),
            present,
            config,
            power_state: host.read(&device_path(address, "power_state")),
        }
    }

    /// Why the function does not answer; None when it does.
    pub fn dead(&self) -> Option<String> {
        if !self.present {
            return Some(format!(
                "it is not on the PCI bus (no /sys/bus/pci/devices/{})",
                self.address
            ));
        }
        match &self.config {
            Config::Ids { vendor, device } if *vendor == 0xffff || *device == 0xffff => {
                return Some(format!(
                    "its config space reads vendor {vendor:04x} device {device:04x} (all ones: it does not answer)"
                ))
            }
            Config::Unreadable(error) => {
                return Some(format!("its config space cannot be read: {error}"))
            }
            Config::Short(length) => {
                return Some(format!("its config space gave only {length} bytes"))
            }
            Config::Ids { .. } | Config::Missing => {}
        }
        match self.power_state.as_deref() {
            Some(state) if state.eq_ignore_ascii_case("D3cold") => Some(
                "it stays in D3cold (powered off) even with runtime PM turned on to wake it"
                    .to_string(),
            ),
            Some("error") => Some("the kernel shows power_state error".to_string()),
            _ => None,
        }
    }

    /// What was seen, for logs and messages: `vendor 10de device 2184, power_state D0`.
    pub fn describe(&self) -> String {
        if !self.present {
            return "not on the bus".to_string();
        }
        let config = match &self.config {
            Config::Ids { vendor, device } => format!("vendor {vendor:04x} device {device:04x}"),
            Config::Missing => "no config attribute".to_string(),
            Config::Unreadable(error) => format!("config unreadable ({error})"),
            Config::Short(length) => format!("config {length} bytes"),
        };
        match &self.power_state {
            Some(state) => format!("{config}, power_state {state}"),
            None => format!("{config}, no power_state"),
        }
    }
}

/// Reads a function before its host driver gets it back. A function not in D0 is woken first
/// (`power/control` `on` resumes it synchronously in the kernel) and read while awake; runtime
/// PM is then left as it was found.
pub fn check(host: &HostContext, address: &str, log: &Log) -> Reading {
    let first = Reading::read(host, address);
    let asleep = first
        .power_state
        .as_deref()
        .is_some_and(|state| state != "D0");
    if !first.present || !asleep {
        return first;
    }
    let control = device_path(address, "power/control");
    let Ok(bytes) = host.sysfs.read(&control) else {
        return first;
    };
    let found = String::from_utf8_lossy(&bytes).into_owned();
    if found.trim() == "on" {
        return first;
    }
    log.info(&format!(
        "{address} is in {}: waking it (power/control on) to read it",
        first.power_state.as_deref().unwrap_or("?")
    ));
    if let Err(error) = host.write(&control, "on") {
        log.warn(&format!("could not wake {address}: {error}"));
        return first;
    }
    let awake = Reading::read(host, address);
    if let Err(error) = host.write(&control, &found) {
        log.warn(&format!(
            "could not put {address} power/control back to {}: {error}",
            found.trim()
        ));
    }
    awake
}

/// A VF has a `physfn` link to its PF.
fn is_virtual_function(host: &HostContext, address: &str) -> bool {
    host.root.path(&device_path(address, "physfn")).exists()
}

/// Removes the function (when it is there) and rescans the PCI bus once; returns once it is
/// back or the bind timeout has passed. See the module's comment for why the rescan is safe.
pub fn remove_and_rescan(host: &HostContext, address: &str, log: &Log) -> Result<(), StepError> {
    // The kernel gives a VF no `remove`, and a rescan does not make VFs: they come and go
    // with their PF's sriov_numvfs.
    if is_virtual_function(host, address) {
        return Err(StepError::Other(format!(
            "{address} is an SR-IOV virtual function, which cannot be removed and rescanned on its own"
        )));
    }
    let present = || {
        host.root
            .path(&format!("/sys/bus/pci/devices/{address}"))
            .is_dir()
    };
    if present() {
        log.info(&format!("removing {address} from the PCI bus"));
        host.write(&device_path(address, "remove"), "1")?;
        if !host.wait_until(|| !present()) {
            return Err(StepError::Other(format!(
                "{address} was still there after writing its `remove` attribute"
            )));
        }
    }
    log.info(&format!("rescanning the PCI bus for {address}"));
    host.write("/sys/bus/pci/rescan", "1")?;
    if host.wait_until(present) {
        // Before anything else: a host module loaded again later must not claim it. (One
        // already loaded for another card may have probed it within the rescan: it answered,
        // so that is the hand-back a little early, not the hang this prevents.)
        host.write(&device_path(address, "driver_override"), "vfio-pci")?;
        log.info(&format!(
            "{address} is back after the rescan (driver {})",
            pci::driver_of(&host.root, address)
                .as_deref()
                .unwrap_or("none")
        ));
    } else {
        log.warn(&format!(
            "{address} did not come back after the rescan: the kernel does not add a function that does not answer"
        ));
    }
    Ok(())
}

/// A passed function as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PciFunctionStatus {
    pub address: String,
    pub driver: Option<String>,
    /// None where the kernel has no `power_state` file (or the function is gone).
    pub power_state: Option<String>,
}

pub fn function_status(host: &HostContext, address: &str) -> PciFunctionStatus {
    PciFunctionStatus {
        address: address.to_string(),
        driver: pci::driver_of(&host.root, address),
        power_state: host.read(&device_path(address, "power_state")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::steps::testing::{log, FakeHost};

    const A: &str = "0000:01:00.0";

    fn config(fake: &FakeHost, vendor: u16, device: u16) {
        let mut space = vec![0u8; 256];
        space[..2].copy_from_slice(&vendor.to_le_bytes());
        space[2..4].copy_from_slice(&device.to_le_bytes());
        fake.write(&device_path(A, "vendor"), "");
        std::fs::write(
            fake.root()
                .join("sys/bus/pci/devices")
                .join(A)
                .join("config"),
            space,
        )
        .unwrap();
    }

    #[test]
    fn a_healthy_function_answers_with_its_ids() {
        let fake = FakeHost::new();
        config(&fake, 0x10de, 0x2184);
        fake.write(&device_path(A, "power_state"), "D0\n");
        let reading = check(&fake.host(), A, &log());
        assert_eq!(reading.dead(), None);
        assert_eq!(
            reading.describe(),
            "vendor 10de device 2184, power_state D0"
        );
    }

    #[test]
    fn all_ones_is_dead_and_a_missing_function_is_not_on_the_bus() {
        let fake = FakeHost::new();
        config(&fake, 0xffff, 0xffff);
        fake.write(&device_path(A, "power_state"), "D0\n");
        let reading = check(&fake.host(), A, &log());
        let dead = reading.dead().unwrap();
        assert!(dead.contains("vendor ffff device ffff"), "{dead}");
        let gone = Reading::read(&fake.host(), "0000:02:00.0");
        assert!(gone.dead().unwrap().contains("not on the PCI bus"));
        assert_eq!(gone.describe(), "not on the bus");
    }

    #[test]
    fn a_sleeping_function_is_woken_read_and_its_runtime_pm_put_back() {
        let fake = FakeHost::new();
        config(&fake, 0x10de, 0x2184);
        fake.write(&device_path(A, "power_state"), "D3hot\n");
        fake.write(&device_path(A, "power/control"), "auto\n");
        let reading = check(&fake.host(), A, &log());
        // A plain file does not wake: D3hot with ids that answer is vfio-pci's idle state.
        assert_eq!(reading.dead(), None, "{reading:?}");
        assert_eq!(fake.read(&device_path(A, "power/control")), "auto");

        fake.write(&device_path(A, "power_state"), "D3cold\n");
        let reading = check(&fake.host(), A, &log());
        assert!(reading.dead().unwrap().contains("D3cold"), "{reading:?}");
        assert_eq!(fake.read(&device_path(A, "power/control")), "auto");
    }

    #[test]
    fn a_virtual_function_is_judged_by_its_header_and_named_by_the_kernels_ids() {
        let fake = FakeHost::new();
        fake.write(&device_path(A, "vendor"), "0x8086\n");
        fake.write(&device_path(A, "device"), "0x10ca\n");
        fake.write(&device_path(A, "power_state"), "D0\n");
        // A VF's id registers read all ones by definition; the rest of its header answers.
        let mut space = vec![0u8; 256];
        space[..4].copy_from_slice(&[0xff; 4]);
        space[4] = 0x06;
        std::fs::write(
            fake.root()
                .join("sys/bus/pci/devices")
                .join(A)
                .join("config"),
            &space,
        )
        .unwrap();
        fake.write(
            "/sys/bus/pci/devices/0000:01:00.0/physfn/vendor",
            "0x8086\n",
        );
        let reading = check(&fake.host(), A, &log());
        assert_eq!(reading.dead(), None, "{reading:?}");
        assert_eq!(
            reading.describe(),
            "vendor 8086 device 10ca, power_state D0"
        );
        // A VF whose whole header reads all ones is gone, and is not removed and rescanned.
        std::fs::write(
            fake.root()
                .join("sys/bus/pci/devices")
                .join(A)
                .join("config"),
            vec![0xffu8; 256],
        )
        .unwrap();
        assert!(check(&fake.host(), A, &log()).dead().is_some());
        let error = remove_and_rescan(&fake.host(), A, &log()).unwrap_err();
        assert!(
            error.to_string().contains("SR-IOV virtual function"),
            "{error}"
        );
    }

    #[test]
    fn no_config_attribute_is_not_judged_and_a_short_one_is_dead() {
        let fake = FakeHost::new();
        fake.write(&device_path(A, "power_state"), "D0\n");
        let reading = check(&fake.host(), A, &log());
        assert_eq!(reading.config, Config::Missing);
        assert_eq!(reading.dead(), None);
        fake.write(&device_path(A, "config"), "ab");
        assert!(Reading::read(&fake.host(), A)
            .dead()
            .unwrap()
            .contains("only 2 bytes"));
    }

    #[test]
    fn status_shows_driver_and_power_state_or_none() {
        let fake = FakeHost::new();
        fake.write(&device_path(A, "power_state"), "D3hot\n");
        let status = function_status(&fake.host(), A);
        assert_eq!(status.power_state.as_deref(), Some("D3hot"));
        assert_eq!(status.driver, None);
        let json = serde_json::to_value(function_status(&fake.host(), "0000:02:00.0")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"address": "0000:02:00.0", "driver": null, "power_state": null})
        );
    }
}
