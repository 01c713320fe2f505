//! Validated VM → libvirt domain XML. Devices keep the guest addresses QEMU gives them under
//! vmrun (every PCI device on pcie.0 in the order of vmrun's argv, which is how QEMU assigns
//! free slots), CPU flags, topology, pinning and firmware files stay the same. Host steps that
//! libvirt has no element for become comments naming the hook each needs, and the vmrun keys
//! libvirt cannot hold travel in `<metadata>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod devices;
mod machine;

use super::xml::Element;
use super::{QEMU_NAMESPACE, VMRUN_NAMESPACE};
use crate::host::steps::{HostStep, LibvirtContext, LibvirtNotes};
use crate::model::smbios::SMBIOS_FIELDS;
use crate::model::*;
use crate::plan::argv::escape;
use crate::plan::{BootFirmware, ResolvedVm, VmPaths};

/// What `export` needs besides the model: what `vmrun show` resolves.
pub struct ExportInput<'a> {
    /// The VM resolved against this host (`pinning.vcpus = "auto"` answered); what travels in
    /// `<metadata>` keeps the profile's own words from it.
    pub vm: &'a ResolvedVm,
    pub firmware: &'a BootFirmware,
    pub paths: &'a VmPaths,
    /// The host steps `run` takes, each translating itself.
    pub host_steps: &'a [HostStep],
    /// The QEMU binary as an absolute path (libvirt wants one), found on PATH by the caller.
    pub emulator: PathBuf,
}

/// The domain XML for the VM.
pub fn export(input: &ExportInput) -> String {
    let vm = LibvirtContext {
        written: input.vm.written(),
    };
    let mut exporter = Exporter {
        input,
        step_notes: input
            .host_steps
            .iter()
            .map(|step| step.libvirt(&vm))
            .collect(),
        config: input.vm.config(),
        next_slot: 1,
        commandline: Vec::new(),
        metadata: Element::new("vmrun:profile").attr("xmlns:vmrun", VMRUN_NAMESPACE),
    };
    exporter.domain().to_document()
}

struct Exporter<'a> {
    input: &'a ExportInput<'a>,
    config: &'a VmConfig,
    /// The next free slot on pcie.0, as QEMU hands them out in argv order.
    next_slot: u8,
    commandline: Vec<String>,
    metadata: Element,
    /// Each host step's own translation, asked once.
    step_notes: Vec<LibvirtNotes>,
}

pub(super) fn pci_address(bus: u8, slot: u8, function: u8) -> Element {
    Element::new("address")
        .attr("type", "pci")
        .attr("domain", "0x0000")
        .attr("bus", format!("0x{bus:02x}"))
        .attr("slot", format!("0x{slot:02x}"))
        .attr("function", format!("0x{function:x}"))
}

/// A disk's place on controller 0, bus 0 of its kind: SATA disks differ by unit (the port),
/// SCSI disks by target.
pub(super) fn drive_address(target: u8, unit: u8) -> Element {
    Element::new("address")
        .attr("type", "drive")
        .attr("controller", "0")
        .attr("bus", "0")
        .attr("target", target.to_string())
        .attr("unit", unit.to_string())
}

fn state_on(name: &str) -> Element {
    Element::new(name).attr("state", "on")
}

pub(super) fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// vmrun's arguments that libvirt has an element for, recognised so they become that element.
#[derive(Default)]
pub(super) struct KnownExtraArgs {
    uuid: Option<String>,
    localtime: bool,
    vmport_off: bool,
    boot_menu: bool,
    disable_s3: Option<bool>,
    disable_s4: Option<bool>,
    rest: Vec<String>,
}

fn known_extra_args(args: &[String]) -> KnownExtraArgs {
    let mut known = KnownExtraArgs::default();
    let mut index = 0;
    while index < args.len() {
        let pair = (
            args[index].as_str(),
            args.get(index + 1).map(String::as_str),
        );
        let recognised = match pair {
            ("-uuid", Some(uuid)) => {
                known.uuid = Some(uuid.to_string());
                true
            }
            ("-rtc", Some("base=localtime")) => {
                known.localtime = true;
                true
            }
            ("-machine", Some("vmport=off")) => {
                known.vmport_off = true;
                true
            }
            ("-boot", Some("menu=on")) => {
                known.boot_menu = true;
                true
            }
            ("-global", Some(global)) => match global.strip_prefix("ICH9-LPC.") {
                Some("disable_s3=1") => {
                    known.disable_s3 = Some(true);
                    true
                }
                Some("disable_s3=0") => {
                    known.disable_s3 = Some(false);
                    true
                }
                Some("disable_s4=1") => {
                    known.disable_s4 = Some(true);
                    true
                }
                Some("disable_s4=0") => {
                    known.disable_s4 = Some(false);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if recognised {
            index += 2;
        } else {
            known.rest.push(args[index].clone());
            index += 1;
        }
    }
    known
}

impl Exporter<'_> {
    pub(super) fn take_slot(&mut self) -> u8 {
        let slot = self.next_slot;
        self.next_slot += 1;
        slot
    }

    fn domain(&mut self) -> Element {
        let config = self.config;
        let extra = known_extra_args(&config.qemu.extra_args);
        let mut domain = Element::new("domain")
            .attr(
                "type",
                match config.machine.accel {
                    Accel::Kvm => "kvm",
                    Accel::Tcg => "qemu",
                },
            )
            .attr("xmlns:qemu", QEMU_NAMESPACE);
        domain.comment(format!(
            "Exported by `vmrun export libvirt` from {}.",
            config.profile_path.display()
        ));
        domain.push(Element::new("name").text(config.name.as_str()));
        if let Some(uuid) = &extra.uuid {
            domain.push(Element::new("uuid").text(uuid.clone()));
        }
        let kib = config.machine.memory.bytes() / 1024;
        domain.push(
            Element::new("memory")
                .attr("unit", "KiB")
                .text(kib.to_string()),
        );
        domain.push(
            Element::new("currentMemory")
                .attr("unit", "KiB")
                .text(kib.to_string()),
        );
        if let Some(pages) = config.machine.hugepages {
            domain.push(
                Element::new("memoryBacking")
                    .child(
                        Element::new("hugepages").child(
                            Element::new("page")
                                .attr("size", (pages.bytes() / 1024).to_string())
                                .attr("unit", "KiB"),
                        ),
                    )
                    // vmrun's backend: memfd with hugetlb pages, no hugetlbfs mount needed.
                    .child(Element::new("source").attr("type", "memfd")),
            );
        }
        domain.push(
            Element::new("vcpu")
                .attr("placement", "static")
                .text(config.vcpu_count().to_string()),
        );
        if config.machine.iothreads > 0 {
            domain.push(Element::new("iothreads").text(config.machine.iothreads.to_string()));
        }
        if let Some(cputune) = self.cputune(&mut domain) {
            domain.push(cputune);
        }
        if let Some(sysinfo) = self.sysinfo() {
            domain.push(sysinfo);
        }
        domain.push(self.os(&extra));
        domain.push(self.features(&extra));
        domain.push(self.cpu());
        domain.push(self.clock(&extra));
        domain.push(Element::new("on_poweroff").text("destroy"));
        domain.push(Element::new("on_reboot").text("restart"));
        domain.push(Element::new("on_crash").text("destroy"));
        // machine.suspend = false is vmrun's disable_s3/disable_s4; extra_args come later on
        // vmrun's command line, so theirs win.
        let suspend_off = (!config.machine.suspend).then_some(true);
        let disable_s3 = extra.disable_s3.or(suspend_off);
        let disable_s4 = extra.disable_s4.or(suspend_off);
        if disable_s3.is_some() || disable_s4.is_some() {
            let mut pm = Element::new("pm");
            let enabled = |disabled: bool| if disabled { "no" } else { "yes" };
            if let Some(disabled) = disable_s3 {
                pm.push(Element::new("suspend-to-mem").attr("enabled", enabled(disabled)));
            }
            if let Some(disabled) = disable_s4 {
                pm.push(Element::new("suspend-to-disk").attr("enabled", enabled(disabled)));
            }
            domain.push(pm);
        }
        let devices = self.devices();
        self.host_steps(&mut domain);
        domain.push(devices);
        self.commandline.extend(extra.rest.iter().cloned());
        if !self.commandline.is_empty() {
            let mut commandline = Element::new("qemu:commandline");
            for arg in &self.commandline {
                commandline.push(Element::new("qemu:arg").attr("value", arg.clone()));
            }
            domain.push(commandline);
        }
        if self.metadata.has_children() {
            let metadata = std::mem::replace(&mut self.metadata, Element::new("vmrun:profile"));
            // libvirt keeps <metadata> where it likes it: right after the name.
            let position = domain
                .children
                .iter()
                .position(|n| matches!(n, super::xml::Node::Element(e) if e.name == "name"))
                .map(|p| p + 1)
                .unwrap_or(0);
            domain.children.insert(
                position,
                super::xml::Node::Element(Element::new("metadata").child(metadata)),
            );
        }
        domain
    }

    /// What `vmrun run` does to the host that libvirt does not, as comments: each host step's
    /// own translation, then what is not a step (the stop ladder, the GTK window, the sandbox).
    fn host_steps(&mut self, domain: &mut Element) {
        let config = self.config;
        let name = config.name.as_str();
        for notes in std::mem::take(&mut self.step_notes) {
            for comment in notes.comments {
                domain.comment(comment);
            }
            for element in notes.metadata {
                self.metadata.push(element);
            }
        }
        let timeout = config.shutdown.timeout.as_secs();
        domain.comment(format!(
            "vmrun gives the guest {timeout} s to power off after ACPI power-off, then stops it: with libvirt, \
             `virsh shutdown {name}` then `virsh destroy {name}` (libvirt-guests: SHUTDOWN_TIMEOUT={timeout})"
        ));
        self.metadata
            .push(Element::new("vmrun:shutdown").attr("timeout", timeout.to_string()));
        if config.display.gui == Gui::Gtk {
            domain.comment("vmrun opens a GTK window; libvirt has no GTK display (virt-viewer with <graphics type='spice'/> is the nearest)");
        }
        if !config.qemu.sandbox {
            // libvirt has this once for all domains, in qemu.conf, not per domain.
            domain.comment(
                "vmrun runs this VM's QEMU without its seccomp sandbox: libvirt sets that for every domain in \
                 /etc/libvirt/qemu.conf (seccomp_sandbox = 0)"
                    .to_string(),
            );
            self.metadata
                .push(Element::new("vmrun:qemu").attr("sandbox", "no"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::steps::testing;
    use crate::plan::{BaseDirs, HostFacts};

    fn export_of(text: &str) -> String {
        let written = testing::config(text);
        let facts = HostFacts {
            online_cpus: Some(crate::model::CpuSet::from_cpus(0..4)),
            ..Default::default()
        };
        let vm = crate::plan::resolve(written, &facts).unwrap();
        let paths = VmPaths::new(&BaseDirs::resolve(None, None), &vm.name).unwrap();
        let host_steps = crate::host::steps::plan(&vm, &paths);
        export(&ExportInput {
            vm: &vm,
            firmware: &BootFirmware::SeaBios,
            paths: &paths,
            host_steps: &host_steps,
            emulator: PathBuf::from("/usr/bin/qemu-system-x86_64"),
        })
    }

    #[test]
    fn each_host_step_translates_itself_into_the_domain() {
        let xml = export_of(
            "[machine]\nmemory = \"1G\"\nhugepages = \"2M\"\n[cpu]\ncores = 2\n\
             [pinning]\nvcpus = [2, 3]\n[isolation]\nhost_cpus = \"auto\"\n\
             [firmware]\ntype = \"seabios\"\n[[pci]]\naddress = \"01:00.0\"\nrescan = true\n\
             [hooks]\npre_start = [\"/bin/true\"]\n[tpm]\n",
        );
        for expected in [
            "managed='yes' makes libvirt do the same",
            "allocates 512 huge pages of 2048 KiB",
            "on CPUs 0-1 and sets",
            "<vmrun:isolation host-cpus='auto' governor='performance'/>",
            "<vmrun:pci address='0000:01:00.0' rescan='yes'/>",
            "<vmrun:hook phase='pre_start'>",
            "<tpm model='tpm-crb'>",
            "vmrun's TPM state is in",
            "<vmrun:shutdown timeout=",
        ] {
            assert!(xml.contains(expected), "{expected} missing:\n{xml}");
        }
        // The step's device sits inside <devices>.
        let devices = &xml[xml.find("<devices>").unwrap()..xml.find("</devices>").unwrap()];
        assert!(devices.contains("<tpm model='tpm-crb'>"));
    }

    #[test]
    fn a_vm_without_host_steps_gets_no_step_comments() {
        let xml = export_of("[firmware]\ntype = \"seabios\"\n");
        assert!(!xml.contains("libvirt hook"), "{xml}");
        assert!(!xml.contains("vfio-pci"));
        assert!(!xml.contains("<tpm"));
    }
}
