//! The guest's devices on QEMU's command line: display, sound, disks, network, passed PCI and
//! USB devices, input and the Looking Glass memory.

use super::*;

pub(super) fn display(argv: &mut Argv, config: &VmConfig, paths: &VmPaths) {
    argv.push(
        "-display",
        match config.display.gui {
            Gui::None => "none",
            Gui::Gtk => "gtk",
            Gui::Sdl => "sdl",
        },
    );
    match config.display.vga {
        VgaModel::None => argv.push("-vga", "none"),
        VgaModel::Std => argv.push("-device", "VGA,id=video0"),
        VgaModel::Virtio => argv.push("-device", "virtio-vga,id=video0"),
        VgaModel::Qxl => argv.push("-device", "qxl-vga,id=video0"),
    }
    let Some(remote) = &config.display.remote else {
        return;
    };
    let secret = remote.password_file.as_ref().map(|file| {
        argv.push(
            "-object",
            Opts::new("secret")
                .set("id", "remote-password")
                .set("file", escape_path(file))
                .set("format", "raw")
                .build(),
        );
        "remote-password"
    });
    match remote.protocol {
        RemoteProtocol::Spice => {
            let opts = match &remote.listen {
                Listen::Unix => Opts::new("unix=on").set("addr", escape_path(&paths.spice_socket)),
                Listen::Tcp { addr, port } => Opts::new(format!("port={port}"))
                    .set("addr", addr.to_string())
                    .set_if(addr.is_ipv6(), "ipv6", "on"),
            };
            let opts = match secret {
                Some(id) => opts.set("password-secret", id),
                None => opts.set("disable-ticketing", "on"),
            };
            argv.push("-spice", opts.build());
            // The agent channel: clipboard, and the guest follows the client's window size.
            argv.push("-device", "virtio-serial-pci,id=virtio-serial0");
            argv.push("-chardev", "spicevmc,id=vdagent,name=vdagent");
            argv.push(
                "-device",
                "virtserialport,bus=virtio-serial0.0,chardev=vdagent,name=com.redhat.spice.0",
            );
        }
        RemoteProtocol::Vnc => {
            let head = match &remote.listen {
                Listen::Unix => format!("unix:{}", escape_path(&paths.vnc_socket)),
                Listen::Tcp { addr, port } => {
                    let display = port - 5900;
                    match addr {
                        std::net::IpAddr::V6(v6) => format!("[{v6}]:{display}"),
                        std::net::IpAddr::V4(v4) => format!("{v4}:{display}"),
                    }
                }
            };
            let opts = match secret {
                Some(id) => Opts::new(head).set("password-secret", id),
                None => Opts::new(head),
            };
            argv.push("-vnc", opts.build());
        }
    }
}

/// A remote display with an emulated adapter gets an absolute pointer (Windows' installer
/// drives it without any driver). Looking Glass wants relative input: PS/2 stays.
pub(super) fn remote_input(argv: &mut Argv, config: &VmConfig) {
    if config.display.remote.is_some() && config.display.vga != VgaModel::None {
        argv.push("-device", "usb-tablet,id=tablet0,bus=xhci.0");
    }
}

pub(super) fn audio(argv: &mut Argv, config: &VmConfig, resolved: &Resolved) {
    let Some(audio) = &config.audio else {
        return;
    };
    let backend = match (&audio.backend, &resolved.audio) {
        (AudioBackend::PulseAudio { .. }, Some(server)) => {
            let opts = Opts::new("pa").set("id", "audio0");
            match &server.server {
                Some(path) => opts.set("server", format!("unix:{}", escape_path(path))),
                None => opts,
            }
        }
        // The server is found through the environment (`plan::audio_env`); the stream is
        // named after the VM in the desktop's mixer.
        (AudioBackend::PipeWire { .. }, Some(_)) => Opts::new("pipewire")
            .set("id", "audio0")
            .set("out.stream-name", config.name.to_string())
            .set("in.stream-name", config.name.to_string()),
        _ => Opts::new("none").set("id", "audio0"),
    };
    argv.push("-audiodev", backend.build());
    match audio.device {
        AudioDevice::Ich9 => {
            argv.push("-device", "ich9-intel-hda,id=sound0");
            argv.push(
                "-device",
                "hda-duplex,id=sound0-codec0,bus=sound0.0,cad=0,audiodev=audio0",
            );
        }
        AudioDevice::Usb => {
            argv.push("-device", "usb-audio,id=sound0,bus=xhci.0,audiodev=audio0");
        }
    }
}

pub(super) fn pflash(
    argv: &mut Argv,
    files: &mut PassedFiles,
    firmware: &ResolvedFirmware,
    paths: &VmPaths,
) {
    let nodes = [
        ("ovmf-code", &firmware.code.path, firmware.code.format, true),
        (
            "ovmf-vars",
            &paths.vars(firmware.vars_template.format),
            firmware.vars_template.format,
            false,
        ),
    ];
    for (node, path, format, read_only) in nodes {
        let filename = files.image(argv, path, read_only, node);
        argv.push(
            "-blockdev",
            Opts::new("driver=file")
                .set("node-name", format!("{node}-file"))
                .set("filename", filename)
                .set_if(read_only, "read-only", "on")
                .build(),
        );
        argv.push(
            "-blockdev",
            Opts::new(format!("driver={}", format.as_str()))
                .set("node-name", node)
                .set("file", format!("{node}-file"))
                .set_if(read_only, "read-only", "on")
                .build(),
        );
    }
}

pub(super) fn disks(argv: &mut Argv, files: &mut PassedFiles, config: &VmConfig) {
    let iothreads = config.machine.iothreads;
    let mut next_iothread = 0;
    let mut iothread_for = |wanted: bool| -> Option<String> {
        if !wanted || iothreads == 0 {
            return None;
        }
        let id = format!("iothread{}", next_iothread % iothreads);
        next_iothread += 1;
        Some(id)
    };
    if config.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
        let opts = Opts::new("virtio-scsi-pci").set("id", "scsi0");
        let opts = match iothread_for(true) {
            Some(id) => opts.set("iothread", id),
            None => opts,
        };
        argv.push("-device", opts.build());
    }
    let mut sata_port = 0;
    for (index, disk) in config.disks.iter().enumerate() {
        let node = format!("disk{index}");
        let direct = disk.cache == CacheMode::None;
        let no_flush = disk.cache == CacheMode::Unsafe;
        let common = |opts: Opts| {
            opts.set_if(disk.readonly, "read-only", "on")
                .set_if(direct, "cache.direct", "on")
                .set_if(no_flush, "cache.no-flush", "on")
                .set_if(disk.discard, "discard", "unmap")
        };
        let filename = files.image(argv, &disk.path, disk.readonly, &node);
        argv.push(
            "-blockdev",
            common(
                Opts::new("driver=file")
                    .set("node-name", format!("{node}-file"))
                    .set("filename", filename),
            )
            .build(),
        );
        argv.push(
            "-blockdev",
            common(
                Opts::new(format!("driver={}", disk.format.as_str()))
                    .set("node-name", &node)
                    .set("file", format!("{node}-file")),
            )
            .build(),
        );
        let device = match (disk.bus, disk.media) {
            (DiskBus::Virtio, _) => {
                let opts = Opts::new("virtio-blk-pci")
                    .set("drive", &node)
                    .set("id", format!("{node}-dev"));
                match iothread_for(true) {
                    Some(id) => opts.set("iothread", id),
                    None => opts,
                }
            }
            (DiskBus::Sata, media) => {
                let driver = if media == Media::Cdrom {
                    "ide-cd"
                } else {
                    "ide-hd"
                };
                let opts = Opts::new(driver)
                    .set("drive", &node)
                    .set("id", format!("{node}-dev"))
                    .set("bus", format!("ide.{sata_port}"));
                sata_port += 1;
                opts
            }
            (DiskBus::Nvme, _) => Opts::new("nvme")
                .set("drive", &node)
                .set("id", format!("{node}-dev"))
                .set("serial", format!("vmrun{index}")),
            (DiskBus::Scsi, media) => {
                let driver = if media == Media::Cdrom {
                    "scsi-cd"
                } else {
                    "scsi-hd"
                };
                Opts::new(driver)
                    .set("drive", &node)
                    .set("id", format!("{node}-dev"))
                    .set("bus", "scsi0.0")
            }
        };
        let device = match disk.boot_order {
            Some(order) => device.set("bootindex", order.to_string()),
            None => device,
        };
        argv.push("-device", device.build());
    }
}

pub(super) fn network(argv: &mut Argv, config: &VmConfig, vhost_net: bool) {
    // The kernel moves virtio-net's packets for tap devices: less latency, less QEMU CPU.
    let vhost = vhost_net && config.network.model == NicModel::Virtio;
    let netdev = match &config.network.mode {
        NetworkMode::None => return,
        NetworkMode::User => Opts::new("user").set("id", "net0"),
        // vmrun makes the tap and puts it on the bridge (a host step): QEMU's bridge helper
        // would be a program QEMU spawns, which its sandbox forbids.
        NetworkMode::Bridge(_) => Opts::new("tap")
            .set("id", "net0")
            .set("ifname", tap_name(&config.name))
            .set("script", "no")
            .set("downscript", "no")
            .set_if(vhost, "vhost", "on"),
        NetworkMode::Tap(tap) => Opts::new("tap")
            .set("id", "net0")
            .set("ifname", escape(tap))
            .set("script", "no")
            .set("downscript", "no")
            .set_if(vhost, "vhost", "on"),
    };
    argv.push("-netdev", netdev.build());
    argv.push(
        "-device",
        Opts::new(config.network.model.qemu_device())
            .set("netdev", "net0")
            .set("id", "net0-dev")
            .set("mac", config.network.mac.to_string())
            .build(),
    );
}

pub(super) fn passthrough(argv: &mut Argv, config: &VmConfig, firmware: &BootFirmware) {
    // Each host slot gets its own root port; its functions keep their order in one guest slot.
    let mut slots: BTreeMap<(u16, u8, u8), Vec<&PciDevice>> = BTreeMap::new();
    for device in &config.pci {
        slots
            .entry(device.address.slot_key())
            .or_default()
            .push(device);
    }
    let seabios = matches!(firmware, BootFirmware::SeaBios);
    for (port, functions) in slots.values_mut().enumerate() {
        functions.sort_by_key(|device| device.address.function);
        let port_id = format!("vfio-rp{port}");
        argv.push(
            "-device",
            Opts::new("pcie-root-port")
                .set("id", &port_id)
                .set("bus", "pcie.0")
                .set("chassis", (port + 1).to_string())
                .build(),
        );
        let multifunction = functions.len() > 1;
        for (guest_function, device) in functions.iter().enumerate() {
            let mut opts = Opts::new("vfio-pci")
                .set("host", device.address.to_string())
                .set(
                    "id",
                    format!(
                        "hostdev-{}",
                        device.address.to_string().replace([':', '.'], "-")
                    ),
                )
                .set("bus", &port_id)
                .set("addr", format!("0x0.{guest_function}"))
                .set_if(multifunction && guest_function == 0, "multifunction", "on");
            if let Some(romfile) = &device.romfile {
                opts = opts.set("romfile", escape_path(romfile));
            }
            if let Some(rombar) = device.rombar {
                opts = opts.set("rombar", if rombar { "1" } else { "0" });
            }
            // x-vga routes legacy VGA ranges to the card: only a legacy BIOS needs that.
            opts = opts.set_if(device.vga && seabios, "x-vga", "on");
            if let Some(order) = device.boot_order {
                opts = opts.set("bootindex", order.to_string());
            }
            argv.push("-device", opts.build());
        }
    }
}

/// The `[[mdev]]` devices, by their sysfs path. QEMU places each on the root complex itself.
pub(super) fn mediated(argv: &mut Argv, config: &VmConfig) {
    for (index, device) in config.mdev.iter().enumerate() {
        let sysfsdev = format!("/sys/bus/mdev/devices/{}", device.uuid);
        let opts = if device.display {
            // ramfb (the firmware's output until the guest's driver runs) is a fw_cfg file,
            // which cannot come and go at run time: only the variant without hot-plug has it.
            let gvt = device.mdev_type.starts_with("i915-GVTg");
            Opts::new("vfio-pci-nohotplug")
                .set("sysfsdev", sysfsdev)
                .set("id", format!("mdev{index}"))
                .set("display", "on")
                .set("ramfb", "on")
                // The iGPU's OpRegion (its VBT): the guest's i915/Windows driver needs it to
                // drive a display.
                .set_if(gvt, "x-igd-opregion", "on")
        } else {
            Opts::new("vfio-pci")
                .set("sysfsdev", sysfsdev)
                .set("id", format!("mdev{index}"))
        };
        argv.push("-device", opts.build());
    }
}

/// One xHCI controller for passed USB devices, the remote display's tablet and USB audio.
pub(super) fn usb(argv: &mut Argv, config: &VmConfig) {
    // Every VM gets the controller, so that `vmrun usb NAME attach` can hot-plug onto it.
    argv.push("-device", "qemu-xhci,id=xhci");
    for (index, device) in config.usb.iter().enumerate() {
        let opts = Opts::new("usb-host")
            .set("id", format!("usb{index}"))
            .set("bus", "xhci.0");
        let opts = match device {
            UsbDevice::Id(id) => opts
                .set("vendorid", format!("0x{:04x}", id.vendor))
                .set("productid", format!("0x{:04x}", id.product)),
            UsbDevice::Port(port) => opts
                .set("hostbus", port.bus.to_string())
                .set("hostport", port.path()),
        };
        argv.push("-device", opts.build());
    }
}

pub(super) fn input(argv: &mut Argv, config: &VmConfig) {
    for (index, path) in config.input.evdev.iter().enumerate() {
        // A keyboard grabs all other evdev devices with it and needs key repeat.
        let keyboard = path.to_string_lossy().ends_with("event-kbd");
        let mut opts = Opts::new("input-linux")
            .set("id", format!("evdev{index}"))
            .set("evdev", escape_path(path))
            .set_if(keyboard, "grab_all", "on")
            .set_if(keyboard, "repeat", "on");
        if let (true, Some(toggle)) = (keyboard, &config.input.grab_toggle) {
            opts = opts.set("grab-toggle", toggle);
        }
        argv.push("-object", opts.build());
    }
}

pub(super) fn looking_glass(argv: &mut Argv, config: &VmConfig) {
    let Some(lg) = &config.looking_glass else {
        return;
    };
    argv.push(
        "-object",
        Opts::new("memory-backend-file")
            .set("id", "looking-glass")
            .set("share", "on")
            .set("mem-path", escape_path(&lg.path))
            .set("size", lg.size.qemu_spelling())
            .build(),
    );
    argv.push(
        "-device",
        "ivshmem-plain,id=looking-glass-dev,memdev=looking-glass",
    );
}
