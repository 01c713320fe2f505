//! `rom` and `iommu`: what the host's devices are.

use super::*;

#[derive(Serialize)]
pub(super) struct RomOutput<'a> {
    file: &'a std::path::Path,
    #[serde(flatten)]
    report: &'a crate::rom::RomReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<RomDeviceMatch>,
}

#[derive(Serialize)]
pub(super) struct RomDeviceMatch {
    address: String,
    vendor_id: String,
    device_id: String,
    matches: bool,
}

pub(super) fn rom(app: &App, args: RomArgs) -> Result<ExitCode, CliError> {
    if let Some(RomAction::Dump { address, out }) = args.action {
        let address = parse_address(&address)?;
        let data = app.dump_rom(address)?;
        std::fs::write(&out, &data).map_err(|source| crate::rom::RomError::Write {
            path: out.clone(),
            source,
        })?;
        let report = crate::rom::parse(&data);
        eprintln!(
            "vmrun: wrote {} ({} bytes) from {address}: {} image(s), EFI image: {}",
            out.display(),
            data.len(),
            report.images.len(),
            if report.has_efi { "yes" } else { "no" }
        );
        return Ok(ExitCode::Ok);
    }
    let Some(file) = args.file else {
        return Err(CliError::Usage(
            "give a ROM file, or `vmrun rom dump ADDR OUT`".into(),
        ));
    };
    let report = crate::rom::inspect(&file)?;
    if let Some(out) = &args.strip {
        let stripped = crate::rom::strip(&file, out)?;
        eprintln!(
            "vmrun: wrote {} without the {}-byte header: {} image(s)",
            out.display(),
            report.header_bytes,
            stripped.images.len()
        );
    }
    let device = match &args.device {
        Some(text) => {
            let address = parse_address(text)?;
            let (vendor, device) = app.device_ids(address)?;
            let matches = report.is_for(vendor, device);
            Some(RomDeviceMatch {
                address: address.to_string(),
                vendor_id: format!("{vendor:04x}"),
                device_id: format!("{device:04x}"),
                matches,
            })
        }
        None => None,
    };
    let ok = !report.images.is_empty()
        && report.problems.is_empty()
        && device.as_ref().is_none_or(|d| d.matches);
    if args.json {
        stdout_json(&RomOutput {
            file: &file,
            report: &report,
            device,
        })?;
    } else {
        print_rom(&file, &report, device.as_ref())?;
    }
    Ok(if ok {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}

pub(super) fn print_rom(
    file: &std::path::Path,
    report: &crate::rom::RomReport,
    device: Option<&RomDeviceMatch>,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} bytes, {} image(s){}",
        file.display(),
        report.size,
        report.images.len(),
        if report.header_bytes > 0 {
            format!(
                ", {}-byte header before the first image",
                report.header_bytes
            )
        } else {
            String::new()
        }
    )?;
    for (index, image) in report.images.iter().enumerate() {
        write!(
            out,
            "  #{index} at 0x{:06x}  {:<6} {}:{}  class {}  {:>7} bytes  checksum {}{}{}{}",
            image.offset,
            image.code_type.to_string(),
            image.vendor_id,
            image.device_id,
            image.class,
            image.length,
            image.checksum,
            if image.last { "  last" } else { "" },
            match image.kind {
                crate::rom::ImageKind::Pci => "",
                crate::rom::ImageKind::NvidiaExtended => "  NVIDIA extended (56 4E)",
                crate::rom::ImageKind::NvidiaReserved => "  NVIDIA slot (77 BB)",
            },
            if image.data_structure != "PCIR" {
                format!("  ({})", image.data_structure)
            } else {
                String::new()
            },
        )?;
        if let Some(npde) = &image.npde {
            write!(
                out,
                "  NPDE: {} bytes{}",
                npde.length,
                if npde.last { " last" } else { "" }
            )?;
        }
        if let Some(efi) = &image.efi {
            write!(
                out,
                "  EFI {} {}{}",
                efi.machine_type,
                efi.subsystem_name,
                if efi.compressed { ", compressed" } else { "" }
            )?;
        }
        writeln!(out)?;
    }
    if report.has_efi {
        writeln!(out, "EFI (GOP) image: yes, OVMF can use this ROM")?;
    } else if !report.images.is_empty() {
        writeln!(out, "EFI (GOP) image: no, only a legacy BIOS (SeaBIOS) can use this ROM; OVMF shows nothing until the guest driver loads")?;
    }
    if let Some(device) = device {
        writeln!(
            out,
            "device {}: {}:{}, {}",
            device.address,
            device.vendor_id,
            device.device_id,
            if device.matches {
                "the ROM matches"
            } else {
                "the ROM is NOT for this device"
            }
        )?;
    }
    for problem in &report.problems {
        writeln!(out, "problem: {problem}")?;
    }
    for info in &report.info {
        writeln!(out, "info: {info}")?;
    }
    if report.header_bytes > 0 {
        writeln!(
            out,
            "fix: vmrun rom {} --strip {}",
            shlex::try_quote(&file.to_string_lossy()).unwrap_or_default(),
            shlex::try_quote(&file.with_extension("stripped.rom").to_string_lossy())
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
pub(super) struct IommuGroupOutput {
    group: u32,
    devices: Vec<IommuDevice>,
}

/// A device with its names from the PCI ID database (null without the database).
#[derive(Serialize)]
pub(super) struct IommuDevice {
    #[serde(flatten)]
    info: crate::host::pci::PciDeviceInfo,
    class_name: Option<String>,
    name: Option<String>,
    #[serde(flatten)]
    sriov: crate::host::sriov::SriovLinks,
}

pub(super) fn iommu(app: &App, json: bool) -> Result<ExitCode, CliError> {
    let groups = app.iommu_groups();
    let names = app.pci_names();
    let named = |info: crate::host::pci::PciDeviceInfo| {
        let ids = crate::host::pci_ids::parse_ids(&info.vendor_device);
        IommuDevice {
            sriov: app.sriov_links(&info.address),
            class_name: names.class(info.class_code).map(str::to_string),
            name: ids.and_then(|(vendor, device)| names.device(vendor, device)),
            info,
        }
    };
    if json {
        let list: Vec<IommuGroupOutput> = groups
            .into_iter()
            .map(|(group, devices)| IommuGroupOutput {
                group,
                devices: devices.into_iter().map(named).collect(),
            })
            .collect();
        stdout_json(&list)?;
        return Ok(if list.is_empty() {
            ExitCode::Failure
        } else {
            ExitCode::Ok
        });
    }
    if groups.is_empty() {
        eprintln!("vmrun: {}", crate::host::pci::ENABLE_IOMMU_HINT);
        return Ok(ExitCode::Failure);
    }
    let mut out = std::io::stdout().lock();
    for (group, devices) in groups {
        writeln!(out, "IOMMU group {group}")?;
        for device in devices.into_iter().map(named) {
            let info = &device.info;
            // As lspci: the class's name, then the vendor's and device's; the class code
            // when the database does not know the class.
            let class = device
                .class_name
                .clone()
                .unwrap_or_else(|| format!("class {}", info.class));
            let name = device.name.as_deref().map(|n| format!(": {n}"));
            writeln!(
                out,
                "  {}  {}  {:<14} reset: {:<3}{}  {class}{}",
                info.address,
                info.vendor_device,
                info.driver.as_deref().unwrap_or("(no driver)"),
                if info.resettable { "yes" } else { "no" },
                if info.boot_vga { "  boot VGA" } else { "" },
                name.unwrap_or_default(),
            )?;
            let sriov = &device.sriov;
            if let Some(pf) = &sriov.physfn {
                writeln!(out, "      SR-IOV virtual function of {pf}")?;
            }
            if let Some(total) = sriov.total_vfs {
                // A PF's VFs sit in groups of their own: listed here too, under their PF.
                let vfs: Vec<String> = sriov
                    .virtfns
                    .iter()
                    .enumerate()
                    .map(|(index, vf)| format!("VF {index} {vf}"))
                    .collect();
                writeln!(
                    out,
                    "      SR-IOV: {} of {total} VFs{}{}",
                    sriov.virtfns.len(),
                    if vfs.is_empty() { "" } else { ": " },
                    vfs.join(", ")
                )?;
            }
        }
    }
    if names.is_empty() {
        writeln!(
            out,
            "(no PCI ID database at {}: install the `pci.ids` or `hwdata` package for device names)",
            crate::host::pci_ids::DATABASE_PATHS.join(" or ")
        )?;
    }
    Ok(ExitCode::Ok)
}
