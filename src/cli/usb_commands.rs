//! `vmrun usb NAME attach|detach|list`.

use super::*;
use crate::model::UsbDevice;

#[derive(Debug, Subcommand)]
pub(super) enum UsbAction {
    /// Plug a host device into the running guest (exit 7 when the VM is not running).
    Attach {
        /// VENDOR:PRODUCT (046d:c52b) or host port (1-4.2).
        #[arg(value_parser = parse_device)]
        device: UsbDevice,
    },
    /// Unplug a device from the running guest, also one the profile gave it.
    Detach {
        /// VENDOR:PRODUCT (046d:c52b) or host port (1-4.2).
        #[arg(value_parser = parse_device)]
        device: UsbDevice,
    },
    /// The guest's USB devices and the host's (ports, ids, names).
    List {
        /// Print both lists as JSON (fields in docs/commands.md).
        #[arg(long)]
        json: bool,
    },
}

fn parse_device(text: &str) -> Result<UsbDevice, String> {
    text.parse()
}

pub(super) fn usb(
    app: &App,
    name: &str,
    action: UsbAction,
    global: &GlobalArgs,
) -> Result<ExitCode, CliError> {
    match action {
        UsbAction::Attach { device } => {
            let attached = app.usb_attach(name, &device)?;
            if !global.quiet {
                let what = match &attached.host {
                    Some(host) => format!("{} ({} {})", host.port, host.id, host.description()),
                    None => format!(
                        "{device} (not plugged into this host now; the guest gets it when it is)"
                    ),
                };
                eprintln!(
                    "vmrun: attached {} to {name} as `{}`",
                    what.trim_end(),
                    attached.id
                );
            }
            Ok(ExitCode::Ok)
        }
        UsbAction::Detach { device } => {
            let id = app.usb_detach(name, &device)?;
            if !global.quiet {
                eprintln!("vmrun: detached `{id}` ({device}) from {name}");
            }
            Ok(ExitCode::Ok)
        }
        UsbAction::List { json } => {
            let listing = app.usb_list(name)?;
            let code = if listing.running {
                ExitCode::Ok
            } else {
                ExitCode::NotRunning
            };
            if json {
                stdout_json(&listing)?;
                return Ok(code);
            }
            let mut out = std::io::stdout().lock();
            if listing.running {
                writeln!(out, "{} (running):", listing.name)?;
                if listing.guest.is_empty() {
                    writeln!(out, "  no USB devices")?;
                }
                for device in &listing.guest {
                    let source = match (&device.port, &device.device) {
                        (Some(port), Some(id)) => format!("port {port} {id}"),
                        (Some(port), None) => format!("port {port}"),
                        (None, Some(id)) => id.clone(),
                        (None, None) => "any".to_string(),
                    };
                    writeln!(
                        out,
                        "  {:<14} {:<24} {:<22}{}",
                        device.id,
                        source,
                        if device.attached {
                            "attached"
                        } else {
                            "waiting for the device"
                        },
                        if device.from_profile {
                            " (profile)"
                        } else {
                            ""
                        }
                    )?;
                }
            } else {
                writeln!(out, "{}: not running", listing.name)?;
            }
            writeln!(out, "host:")?;
            if listing.host.is_empty() {
                writeln!(out, "  no USB devices")?;
            }
            for device in &listing.host {
                writeln!(
                    out,
                    "  {:<10} {}  {}",
                    device.port,
                    device.id,
                    device.description()
                )?;
            }
            Ok(code)
        }
    }
}
