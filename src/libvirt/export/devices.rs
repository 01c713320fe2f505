//! `<devices>`: disks, network, passed devices, USB, input, display, sound and the Looking
//! Glass memory, each on the PCI slot QEMU gives it under vmrun.

use super::*;

impl Exporter<'_> {
    pub(super) fn devices(&mut self) -> Element {
        let config = self.config;
        let mut devices = Element::new("devices");
        devices.push(Element::new("emulator").text(path_text(&self.input.emulator)));
        // Argv order from here on: it decides which pcie.0 slot each device gets.
        let video = match config.display.vga {
            VgaModel::None => {
                Element::new("video").child(Element::new("model").attr("type", "none"))
            }
            vga => {
                let model = match vga {
                    VgaModel::Virtio => "virtio",
                    VgaModel::Qxl => "qxl",
                    _ => "vga",
                };
                let slot = self.take_slot();
                Element::new("video")
                    .child(
                        Element::new("model")
                            .attr("type", model)
                            .attr("primary", "yes"),
                    )
                    .child(pci_address(0, slot, 0))
            }
        };
        match config.display.gui {
            Gui::Sdl => devices.push(Element::new("graphics").attr("type", "sdl")),
            Gui::Gtk | Gui::None => {}
        }
        self.remote_display(&mut devices);
        devices.push(video);
        if config
            .display
            .remote
            .as_ref()
            .is_some_and(|r| r.protocol == RemoteProtocol::Spice)
        {
            // The SPICE agent's port: vmrun's virtio-serial-pci comes right after the video.
            let slot = self.take_slot();
            devices.push(
                Element::new("controller")
                    .attr("type", "virtio-serial")
                    .attr("index", "0")
                    .child(pci_address(0, slot, 0)),
            );
            devices.push(
                Element::new("channel")
                    .attr("type", "spicevmc")
                    .child(
                        Element::new("target")
                            .attr("type", "virtio")
                            .attr("name", "com.redhat.spice.0"),
                    )
                    .child(
                        Element::new("address")
                            .attr("type", "virtio-serial")
                            .attr("controller", "0")
                            .attr("bus", "0")
                            .attr("port", "1"),
                    ),
            );
        }
        // The host steps' devices (none is on pcie.0, so the slots stay QEMU's).
        for notes in &self.step_notes {
            devices.children.extend(notes.devices.iter().cloned());
        }
        self.disks(&mut devices);
        self.network(&mut devices);
        self.passthrough(&mut devices);
        self.usb(&mut devices);
        if config.display.remote.is_some() && config.display.vga != VgaModel::None {
            // vmrun's absolute pointer for a remote display, on the xHCI controller.
            devices.push(
                Element::new("input")
                    .attr("type", "tablet")
                    .attr("bus", "usb"),
            );
        }
        self.sound(&mut devices);
        self.input(&mut devices);
        self.looking_glass(&mut devices);
        if config.serial == SerialConsole::Log {
            devices.push(
                Element::new("serial")
                    .attr("type", "file")
                    .child(
                        Element::new("source")
                            .attr("path", path_text(&self.input.paths.console_log)),
                    )
                    .child(
                        Element::new("target")
                            .attr("type", "isa-serial")
                            .attr("port", "0")
                            .child(Element::new("model").attr("name", "isa-serial")),
                    ),
            );
        }
        devices.push(Element::new("memballoon").attr("model", "none"));
        // vmrun gives every VM a pvpanic device, so that a guest panic ends the run.
        devices.push(Element::new("panic").attr("model", "isa"));
        devices
    }

    /// `[display] remote`: libvirt's `<graphics>`. vmrun's own socket path stays vmrun's: a
    /// socket `<listen>` without a path makes libvirt put one in its own directory.
    pub(super) fn remote_display(&mut self, devices: &mut Element) {
        let display = &self.config.display;
        let mut metadata = Element::new("vmrun:display");
        if display.gui == Gui::Gtk {
            metadata = metadata.attr("gui", "gtk");
        }
        if let Some(remote) = &display.remote {
            let mut graphics = Element::new("graphics").attr("type", remote.protocol.as_str());
            match &remote.listen {
                Listen::Unix => {
                    let socket = match remote.protocol {
                        RemoteProtocol::Spice => &self.input.paths.spice_socket,
                        RemoteProtocol::Vnc => &self.input.paths.vnc_socket,
                    };
                    devices.comment(format!(
                        "vmrun's {} socket is {}; libvirt makes its own (`virsh domdisplay` names it)",
                        remote.protocol.as_str(),
                        socket.display()
                    ));
                    graphics.push(Element::new("listen").attr("type", "socket"));
                }
                Listen::Tcp { addr, port } => {
                    graphics = graphics
                        .attr("port", port.to_string())
                        .attr("autoport", "no");
                    graphics.push(
                        Element::new("listen")
                            .attr("type", "address")
                            .attr("address", addr.to_string()),
                    );
                }
            }
            if let Some(file) = &remote.password_file {
                // libvirt takes the password itself (passwd=), never a file: it is not copied
                // into a document that is shown and shared.
                devices.comment(format!(
                    "vmrun reads the {} password from {}; libvirt needs it as passwd='...' on <graphics>",
                    remote.protocol.as_str(),
                    file.display()
                ));
                metadata = metadata.attr("password-file", path_text(file));
            }
            devices.push(graphics);
        }
        if !metadata.attributes.is_empty() {
            self.metadata.push(metadata);
        }
    }

    /// `[audio]`: `<sound>` with the `<audio>` backend it plays through.
    pub(super) fn sound(&mut self, devices: &mut Element) {
        let Some(audio) = &self.config.audio else {
            return;
        };
        let mut sound = Element::new("sound")
            .attr(
                "model",
                match audio.device {
                    AudioDevice::Ich9 => "ich9",
                    AudioDevice::Usb => "usb",
                },
            )
            .child(Element::new("audio").attr("id", "1"));
        // ich9-intel-hda is a PCI device, after vmrun's xHCI; usb-audio sits on the xHCI.
        if audio.device == AudioDevice::Ich9 {
            let slot = self.take_slot();
            sound.push(pci_address(0, slot, 0));
        }
        devices.push(sound);
        let backend = match &audio.backend {
            AudioBackend::PulseAudio {
                server,
                cookie,
                user,
            } => {
                let mut metadata = Element::new("vmrun:audio");
                if let Some(user) = user {
                    metadata = metadata.attr("user", user.clone());
                }
                if let Some(cookie) = cookie {
                    metadata = metadata.attr("cookie", path_text(cookie));
                }
                if !metadata.attributes.is_empty() {
                    self.metadata.push(metadata);
                }
                devices.comment(format!(
                    "vmrun plays through the PulseAudio server of {} with that user's cookie ({}); \
                     libvirt's QEMU runs as its own user and has no cookie setting: it needs serverName \
                     and qemu.conf's user set to the desktop user",
                    user.as_deref().unwrap_or("the user who ran sudo"),
                    cookie
                        .as_ref()
                        .map(|c| c.display().to_string())
                        .unwrap_or_else(|| "~/.config/pulse/cookie".to_string())
                ));
                let mut element = Element::new("audio")
                    .attr("id", "1")
                    .attr("type", "pulseaudio");
                if let Some(server) = server {
                    element = element.attr("serverName", format!("unix:{}", server.display()));
                }
                element
            }
            AudioBackend::PipeWire { server, user } => {
                if let Some(user) = user {
                    self.metadata
                        .push(Element::new("vmrun:audio").attr("user", user.clone()));
                }
                devices.comment(format!(
                    "vmrun plays through the PipeWire server of {}; <audio type='pipewire'> needs \
                     libvirt 9.10 or later, QEMU 8.1 or later, and qemu.conf's user set to the desktop user",
                    user.as_deref().unwrap_or("the user who ran sudo"),
                ));
                let mut element = Element::new("audio")
                    .attr("id", "1")
                    .attr("type", "pipewire");
                if let Some(server) = server {
                    element =
                        element.attr("runtimeDir", path_text(server.parent().unwrap_or(server)));
                }
                element
            }
            AudioBackend::None => Element::new("audio").attr("id", "1").attr("type", "none"),
        };
        devices.push(backend);
    }

    pub(super) fn disks(&mut self, devices: &mut Element) {
        let config = self.config;
        let iothreads = config.machine.iothreads;
        let mut next_iothread = 0;
        let mut iothread_for = || -> Option<u32> {
            if iothreads == 0 {
                return None;
            }
            let id = next_iothread % iothreads + 1;
            next_iothread += 1;
            Some(id)
        };
        if config.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
            let slot = self.take_slot();
            let mut controller = Element::new("controller")
                .attr("type", "scsi")
                .attr("index", "0")
                .attr("model", "virtio-scsi");
            if let Some(id) = iothread_for() {
                controller.push(Element::new("driver").attr("iothread", id.to_string()));
            }
            controller.push(pci_address(0, slot, 0));
            devices.push(controller);
        }
        let (mut vd, mut sd, mut sata_port, mut scsi_target) = (0u8, 0u8, 0u8, 0u8);
        for (index, disk) in config.disks.iter().enumerate() {
            if disk.bus == DiskBus::Nvme {
                self.nvme(index, disk);
                continue;
            }
            let block = disk.path.starts_with("/dev/");
            let mut element = Element::new("disk")
                .attr("type", if block { "block" } else { "file" })
                .attr(
                    "device",
                    if disk.media == Media::Cdrom {
                        "cdrom"
                    } else {
                        "disk"
                    },
                );
            let mut driver = Element::new("driver")
                .attr("name", "qemu")
                .attr("type", disk.format.as_str());
            driver = match disk.cache {
                CacheMode::Writeback => driver,
                CacheMode::None => driver.attr("cache", "none"),
                CacheMode::Unsafe => driver.attr("cache", "unsafe"),
            };
            driver = driver.attr_if(disk.discard, "discard", "unmap");
            if disk.bus == DiskBus::Virtio {
                if let Some(id) = iothread_for() {
                    driver = driver.attr("iothread", id.to_string());
                }
            }
            element.push(driver);
            element.push(
                Element::new("source")
                    .attr(if block { "dev" } else { "file" }, path_text(&disk.path)),
            );
            let (dev, bus, address) = match disk.bus {
                DiskBus::Virtio => {
                    let dev = format!("vd{}", (b'a' + vd) as char);
                    vd += 1;
                    let slot = self.take_slot();
                    (dev, "virtio", pci_address(0, slot, 0))
                }
                DiskBus::Sata => {
                    let dev = format!("sd{}", (b'a' + sd) as char);
                    sd += 1;
                    let address = drive_address(0, sata_port);
                    sata_port += 1;
                    (dev, "sata", address)
                }
                DiskBus::Scsi | DiskBus::Nvme => {
                    let dev = format!("sd{}", (b'a' + sd) as char);
                    sd += 1;
                    let address = drive_address(scsi_target, 0);
                    scsi_target += 1;
                    (dev, "scsi", address)
                }
            };
            element.push(Element::new("target").attr("dev", dev).attr("bus", bus));
            if disk.readonly {
                element.push(Element::new("readonly"));
            }
            if let Some(order) = disk.boot_order {
                element.push(Element::new("boot").attr("order", order.to_string()));
            }
            element.push(address);
            devices.push(element);
        }
    }

    /// libvirt 9 has no NVMe disk: the same QEMU devices go on its command line.
    pub(super) fn nvme(&mut self, index: usize, disk: &Disk) {
        let id = format!("vmrun-nvme{index}");
        let mut drive = format!(
            "file={},format={},if=none,id={id}",
            escape(&path_text(&disk.path)),
            disk.format.as_str()
        );
        if disk.readonly {
            drive.push_str(",readonly=on");
        }
        match disk.cache {
            CacheMode::None => drive.push_str(",cache.direct=on"),
            CacheMode::Unsafe => drive.push_str(",cache.no-flush=on"),
            CacheMode::Writeback => {}
        }
        if disk.discard {
            drive.push_str(",discard=unmap");
        }
        let slot = self.take_slot();
        let mut device = format!("nvme,drive={id},serial=vmrun{index},bus=pcie.0,addr=0x{slot:x}");
        if let Some(order) = disk.boot_order {
            device.push_str(&format!(",bootindex={order}"));
        }
        self.commandline
            .extend(["-drive".to_string(), drive, "-device".to_string(), device]);
    }

    pub(super) fn network(&mut self, devices: &mut Element) {
        let network = &self.config.network;
        let mut interface = match &network.mode {
            NetworkMode::None => return,
            NetworkMode::User => Element::new("interface").attr("type", "user"),
            NetworkMode::Bridge(bridge) => Element::new("interface")
                .attr("type", "bridge")
                .child(Element::new("source").attr("bridge", bridge.clone())),
            NetworkMode::Tap(tap) => Element::new("interface").attr("type", "ethernet").child(
                Element::new("target")
                    .attr("dev", tap.clone())
                    .attr("managed", "no"),
            ),
        };
        interface.push(Element::new("mac").attr("address", network.mac.to_string()));
        interface.push(Element::new("model").attr(
            "type",
            match network.model {
                NicModel::Virtio => "virtio",
                NicModel::E1000e => "e1000e",
                NicModel::Rtl8139 => "rtl8139",
            },
        ));
        let slot = self.take_slot();
        interface.push(pci_address(0, slot, 0));
        devices.push(interface);
    }

    pub(super) fn passthrough(&mut self, devices: &mut Element) {
        let seabios = matches!(self.input.firmware, BootFirmware::SeaBios);
        let mut slots: BTreeMap<(u16, u8, u8), Vec<&PciDevice>> = BTreeMap::new();
        for device in &self.config.pci {
            slots
                .entry(device.address.slot_key())
                .or_default()
                .push(device);
        }
        for (port, functions) in slots.values_mut().enumerate() {
            functions.sort_by_key(|device| device.address.function);
            let index = port + 1;
            let slot = self.take_slot();
            devices.push(
                Element::new("controller")
                    .attr("type", "pci")
                    .attr("index", index.to_string())
                    .attr("model", "pcie-root-port")
                    .child(Element::new("model").attr("name", "pcie-root-port"))
                    .child(Element::new("target").attr("chassis", index.to_string()))
                    .child(pci_address(0, slot, 0)),
            );
            let multifunction = functions.len() > 1;
            for (guest_function, device) in functions.iter().enumerate() {
                let host = device.address;
                let mut hostdev = Element::new("hostdev")
                    .attr("mode", "subsystem")
                    .attr("type", "pci")
                    .attr("managed", "yes")
                    .child(Element::new("driver").attr("name", "vfio"))
                    .child(
                        Element::new("source").child(
                            Element::new("address")
                                .attr("domain", format!("0x{:04x}", host.domain))
                                .attr("bus", format!("0x{:02x}", host.bus))
                                .attr("slot", format!("0x{:02x}", host.slot))
                                .attr("function", format!("0x{:x}", host.function)),
                        ),
                    );
                if device.romfile.is_some() || device.rombar.is_some() {
                    let mut rom = Element::new("rom");
                    if let Some(bar) = device.rombar {
                        rom = rom.attr("bar", if bar { "on" } else { "off" });
                    }
                    if let Some(file) = &device.romfile {
                        rom = rom.attr("file", path_text(file));
                    }
                    hostdev.push(rom);
                }
                if let Some(order) = device.boot_order {
                    hostdev.push(Element::new("boot").attr("order", order.to_string()));
                }
                if device.vga {
                    hostdev.push(Element::new("alias").attr("name", "ua-vmrun-vga"));
                    if seabios {
                        self.commandline.extend([
                            "-set".to_string(),
                            "device.ua-vmrun-vga.x-vga=on".to_string(),
                        ]);
                    }
                }
                hostdev.push(pci_address(index as u8, 0, guest_function as u8).attr_if(
                    multifunction && guest_function == 0,
                    "multifunction",
                    "on",
                ));
                devices.push(hostdev);
            }
        }
    }

    pub(super) fn usb(&mut self, devices: &mut Element) {
        // vmrun gives every VM its xHCI controller (for hot-plug), so it takes a slot always.
        let slot = self.take_slot();
        devices.push(
            Element::new("controller")
                .attr("type", "usb")
                .attr("index", "0")
                .attr("model", "qemu-xhci")
                .child(pci_address(0, slot, 0)),
        );
        for (index, device) in self.config.usb.iter().enumerate() {
            match device {
                UsbDevice::Id(id) => devices.push(
                    Element::new("hostdev")
                        .attr("mode", "subsystem")
                        .attr("type", "usb")
                        .attr("managed", "yes")
                        .child(
                            Element::new("source")
                                .child(
                                    Element::new("vendor")
                                        .attr("id", format!("0x{:04x}", id.vendor)),
                                )
                                .child(
                                    Element::new("product")
                                        .attr("id", format!("0x{:04x}", id.product)),
                                ),
                        ),
                ),
                // libvirt's <hostdev> names a device by bus and device number, which change
                // at every plug; the port is QEMU's own usb-host property.
                UsbDevice::Port(port) => self.commandline.extend([
                    "-device".to_string(),
                    format!(
                        "usb-host,id=ua-vmrun-usb{index},bus=usb.0,hostbus={},hostport={}",
                        port.bus,
                        port.path()
                    ),
                ]),
            }
        }
    }

    pub(super) fn input(&mut self, devices: &mut Element) {
        for path in &self.config.input.evdev {
            let keyboard = path.to_string_lossy().ends_with("event-kbd");
            let mut source = Element::new("source").attr("dev", path_text(path));
            if keyboard {
                source = source.attr("grab", "all").attr("repeat", "on");
                if let Some(toggle) = &self.config.input.grab_toggle {
                    source = source.attr("grabToggle", toggle.clone());
                }
            }
            devices.push(Element::new("input").attr("type", "evdev").child(source));
        }
    }

    pub(super) fn looking_glass(&mut self, devices: &mut Element) {
        let Some(lg) = &self.config.looking_glass else {
            return;
        };
        let slot = self.take_slot();
        let shm_name = lg
            .path
            .strip_prefix("/dev/shm")
            .ok()
            .and_then(|rest| rest.to_str())
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .map(str::to_string);
        let size_mib = lg.size.bytes() / ByteSize::MIB;
        match shm_name {
            Some(name) => devices.push(
                Element::new("shmem")
                    .attr("name", name)
                    .child(Element::new("model").attr("type", "ivshmem-plain"))
                    .child(Element::new("size").attr("unit", "M").text(size_mib.to_string()))
                    .child(pci_address(0, slot, 0)),
            ),
            // A kvmfr device (or a file elsewhere) is not a libvirt <shmem>.
            None => self.commandline.extend([
                "-object".to_string(),
                format!(
                    "memory-backend-file,id=vmrun-looking-glass,share=on,mem-path={},size={}",
                    escape(&path_text(&lg.path)),
                    lg.size.qemu_spelling()
                ),
                "-device".to_string(),
                format!("ivshmem-plain,id=vmrun-looking-glass-dev,memdev=vmrun-looking-glass,bus=pcie.0,addr=0x{slot:x}"),
            ]),
        }
        if lg.owner.is_some() || lg.group.is_some() || lg.mode != 0o660 {
            self.metadata.push(
                Element::new("vmrun:looking-glass")
                    .attr_if(
                        lg.owner.is_some(),
                        "owner",
                        lg.owner.clone().unwrap_or_default(),
                    )
                    .attr_if(
                        lg.group.is_some(),
                        "group",
                        lg.group.clone().unwrap_or_default(),
                    )
                    .attr("mode", format!("{:04o}", lg.mode)),
            );
        }
    }
}
