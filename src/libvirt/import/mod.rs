//! libvirt domain XML → vmrun profile. Every element of the domain is looked at: it becomes a
//! profile key, or a note that says what was changed or left out. Nothing is dropped silently.
//!
//! Each family of elements is read in its own module (the domain's own elements, `<cpu>` and
//! `<features>`, `<cputune>`, `<os>` and `<sysinfo>`, `<clock>`, vmrun's `<metadata>`,
//! `<qemu:commandline>`, and one module per kind of device). They all fill the profile's own
//! raw types ([`RawProfile`] and its sections, the types the profile parser reads), so the
//! profile's schema is declared once; the TOML serializer writes it, under a comment header
//! listing the notes.

mod clock;
mod commandline;
mod cpu;
mod cputune;
mod devices;
mod domain;
mod limits;
mod metadata;
mod os;
mod read;

use std::collections::{BTreeMap, BTreeSet};

use roxmltree::Node;
use toml::Spanned;

use super::{Note, NoteKind, QEMU_NAMESPACE};
use crate::model::RawProfile;
use read::{child, describe, elements, text_of};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the XML cannot be read: {0}")]
    Xml(#[from] roxmltree::Error),
    #[error("this is not a libvirt domain: the document's root is <{0}>, not <domain>")]
    NotADomain(String),
    #[error("the domain has no <{0}>; libvirt itself requires it")]
    Missing(&'static str),
    #[error("<{element}>: {message}")]
    Invalid {
        element: &'static str,
        message: String,
    },
    #[error("the profile cannot be written as TOML: {0}")]
    Render(#[from] toml::ser::Error),
}

/// The profile text and what it does not carry as the domain had it.
#[derive(Clone, Debug)]
pub struct Imported {
    pub name: String,
    pub profile: String,
    pub notes: Vec<Note>,
}

/// Translates a libvirt domain (the text `virsh dumpxml` prints) into a profile.
pub fn import(xml_text: &str) -> Result<Imported, ImportError> {
    let document = roxmltree::Document::parse(xml_text)?;
    let domain = document.root_element();
    if domain.tag_name().name() != "domain" {
        return Err(ImportError::NotADomain(
            domain.tag_name().name().to_string(),
        ));
    }
    let mut importer = Importer::default();
    importer.domain(domain)?;
    let name = importer
        .profile
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_default();
    let profile = render(&name, &importer.profile, &importer.notes)?;
    Ok(Imported {
        name,
        profile,
        notes: importer.notes,
    })
}

/// The profile being built, and what the reading of one element leaves for another: the
/// state here is how the domain is read, never a profile key (those live in `profile`).
#[derive(Default)]
struct Importer {
    profile: RawProfile,
    notes: Vec<Note>,
    cpu: cpu::CpuReading,
    pinning: cputune::PinningReading,
    os: os::OsReading,
    commandline: commandline::CommandlineReading,
    /// Host addresses of `[[pci]]` entries with `rescan = true`, from `<metadata>`.
    rescan: BTreeSet<String>,
    /// Host address → `reset_method` of `[[pci]]` entries, from `<metadata>`.
    reset_method: std::collections::BTreeMap<String, String>,
    /// Host addresses of `[[pci]]` entries that are SR-IOV VFs, from `<metadata>`: their
    /// `pf`, `vf`, `mac` and `vlan`.
    virtual_functions: std::collections::BTreeMap<String, crate::model::pci::RawPci>,
}

/// A value written by the importer: it has no place in a file yet.
fn spanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn text(value: impl Into<String>) -> Option<Spanned<String>> {
    Some(spanned(value.into()))
}

fn flag(value: bool) -> Option<Spanned<bool>> {
    Some(spanned(value))
}

fn int(value: impl Into<i64>) -> Option<Spanned<i64>> {
    Some(spanned(value.into()))
}

fn text_list<S: Into<String>>(
    items: impl IntoIterator<Item = S>,
) -> Option<Spanned<Vec<Spanned<String>>>> {
    Some(spanned(
        items.into_iter().map(|i| spanned(i.into())).collect(),
    ))
}

/// A profile section, created empty the first time a key is written into it.
fn section<T: Default>(slot: &mut Option<Spanned<T>>) -> &mut T {
    slot.get_or_insert_with(|| spanned(T::default())).get_mut()
}

/// A string key as written so far.
fn value_of(slot: &Option<Spanned<String>>) -> Option<&str> {
    slot.as_ref().map(|s| s.get_ref().as_str())
}

impl Importer {
    fn note(&mut self, element: impl Into<String>, kind: NoteKind, message: impl Into<String>) {
        self.notes.push(Note {
            element: element.into(),
            message: message.into(),
            kind,
        });
    }

    fn untranslated(&mut self, node: Node, message: impl Into<String>) {
        self.note(describe(node), NoteKind::Untranslated, message);
    }

    fn changed(&mut self, node: Node, message: impl Into<String>) {
        self.note(describe(node), NoteKind::Changed, message);
    }

    /// Arguments for QEMU that no key carries, in `qemu.extra_args`.
    fn extra_args<S: Into<String>>(&mut self, args: impl IntoIterator<Item = S>) {
        let qemu = section(&mut self.profile.qemu);
        let list = qemu.extra_args.get_or_insert_with(|| spanned(Vec::new()));
        list.get_mut()
            .extend(args.into_iter().map(|a| spanned(a.into())));
    }

    fn domain(&mut self, domain: Node) -> Result<(), ImportError> {
        self.cpu.tcg = domain.attribute("type") == Some("qemu");
        if let Some(kind) = domain
            .attribute("type")
            .filter(|t| !matches!(*t, "kvm" | "qemu"))
        {
            return Err(ImportError::Invalid {
                element: "domain",
                message: format!("type `{kind}` is not a QEMU domain (only kvm and qemu are)"),
            });
        }
        self.cpu.vcpus = 1;
        // Metadata first: it says how to read the rest.
        if let Some(metadata) = child(domain, "metadata") {
            self.metadata(metadata);
        }
        for node in elements(domain) {
            let namespace = node.tag_name().namespace();
            match (namespace, node.tag_name().name()) {
                (Some(QEMU_NAMESPACE), "commandline") => self.qemu_commandline(node)?,
                (Some(QEMU_NAMESPACE), _) => {
                    self.untranslated(node, "a QEMU driver setting vmrun has no key for")
                }
                (_, "name") => self.name(node)?,
                (_, "uuid") => {
                    // Windows ties its activation to the SMBIOS UUID, which is this.
                    self.extra_args(["-uuid".to_string(), text_of(node)]);
                }
                (_, "title" | "description" | "metadata") => {}
                (_, "memory") => self.memory(node)?,
                (_, "currentMemory") => self.current_memory(domain, node),
                (_, "memoryBacking") => self.memory_backing(node),
                (_, "vcpu") => self.vcpu(node)?,
                (_, "vcpus") => self.vcpus(node),
                (_, "iothreads") => self.iothreads(node)?,
                (_, "cputune") => self.cputune(node)?,
                (_, "sysinfo") => self.sysinfo(node),
                (_, "os") => self.os(node),
                (_, "features") => self.features(node),
                (_, "cpu") => self.cpu(node),
                (_, "clock") => self.clock(node),
                (_, "on_poweroff" | "on_reboot" | "on_crash") => self.lifecycle(node),
                (_, "pm") => self.pm(node),
                (_, "devices") => self.devices(node)?,
                (_, _) => self.untranslated(node, "vmrun has no key for this"),
            }
        }
        if self.profile.name.is_none() {
            return Err(ImportError::Missing("name"));
        }
        if self
            .profile
            .machine
            .as_ref()
            .is_none_or(|m| m.get_ref().memory.is_none())
        {
            return Err(ImportError::Missing("memory"));
        }
        if self.cpu.tcg {
            section(&mut self.profile.machine).accel = text("tcg");
        }
        self.apply_sysinfo();
        self.apply_boot_devs();
        self.finish_cpu();
        self.finish_pinning();
        self.finish_sections();
        self.check_limits()
    }

    /// Keys that only mean something next to others, and the sections every profile has.
    fn finish_sections(&mut self) {
        let firmware = section(&mut self.profile.firmware);
        if firmware.firmware_type.is_none() {
            // No <os> at all (libvirt requires one): what vmrun writes by default.
            firmware.firmware_type = text("ovmf");
        }
        if self.profile.network.is_none() {
            section(&mut self.profile.network).mode = text("none");
        }
        let display = section(&mut self.profile.display);
        if display.vga.is_none() {
            display.vga = text("none");
        }
        if display.remote.is_none() {
            display.password_file = None;
        }
        if self
            .profile
            .looking_glass
            .as_ref()
            .is_some_and(|lg| lg.get_ref().path.is_none())
        {
            self.profile.looking_glass = None;
        }
        match self.profile.audio.as_mut().map(|a| a.get_mut()) {
            Some(audio) if audio.backend.is_none() => self.profile.audio = None,
            Some(audio) if value_of(&audio.backend) != Some("pulseaudio") => {
                audio.server = None;
                audio.cookie = None;
                audio.user = None;
            }
            _ => {}
        }
        for pci in &mut self.profile.pci {
            let pci = pci.get_mut();
            if value_of(&pci.address).is_some_and(|a| self.rescan.contains(a)) {
                pci.rescan = flag(true);
            }
            if let Some(methods) = value_of(&pci.address).and_then(|a| self.reset_method.get(a)) {
                pci.reset_method = text(methods.clone());
            }
            // The VF's address is this host's answer; the profile names it by PF and number.
            if let Some(vf) = value_of(&pci.address).and_then(|a| self.virtual_functions.get(a)) {
                pci.address = None;
                pci.pf = vf.pf.clone();
                pci.vf = vf.vf.clone();
                pci.mac = vf.mac.clone();
                pci.vlan = vf.vlan.clone();
            }
        }
    }
}

/// The profile text: the notes as a comment header, then the profile as the TOML serializer
/// writes it (tables in the profile's order).
fn render(name: &str, profile: &RawProfile, notes: &[Note]) -> Result<String, ImportError> {
    let mut out = format!(
        "# Imported from the libvirt domain `{}` by `vmrun import libvirt`.\n",
        comment_text(name)
    );
    for kind in [NoteKind::Untranslated, NoteKind::Changed] {
        let of_kind: Vec<&Note> = notes.iter().filter(|n| n.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        out.push_str(match kind {
            NoteKind::Untranslated => "#\n# Not translated (vmrun has no equivalent):\n",
            NoteKind::Changed => "#\n# Changed in translation:\n",
        });
        for note in of_kind {
            let text = comment_text(&format!("{}: {}", note.element, note.message));
            for (index, line) in text.lines().enumerate() {
                out.push_str(&format!(
                    "#   {}{line}\n",
                    if index == 0 { "" } else { "  " }
                ));
            }
        }
    }
    out.push('\n');
    out.push_str(&toml::to_string(profile)?);
    Ok(out)
}

/// Text from the XML made safe for a TOML comment, which may hold no control character but
/// tab: each other one is written as its escape (`\u{d}`), newlines excepted.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `-object` and `-drive` values of `<qemu:commandline>`, by id.
type QemuProps = BTreeMap<String, BTreeMap<String, String>>;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn import_ok(xml: &str) -> Imported {
        import(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"))
    }

    /// A domain with `body` inside, and the name and memory every domain needs.
    pub(super) fn domain(body: &str) -> String {
        format!("<domain type='kvm'><name>t</name><memory unit='MiB'>1024</memory>{body}</domain>")
    }

    pub(super) fn noted(imported: &Imported, element: &str, words: &str) -> bool {
        imported
            .notes
            .iter()
            .any(|n| n.element.contains(element) && n.message.contains(words))
    }

    #[test]
    fn a_domain_without_memory_or_not_a_domain_is_refused() {
        for body in ["", "<iothreads>1</iothreads>"] {
            let error =
                import(&format!("<domain type='kvm'><name>x</name>{body}</domain>")).unwrap_err();
            assert!(matches!(error, ImportError::Missing("memory")), "{error}");
        }
        let error = import("<network><name>x</name></network>").unwrap_err();
        assert!(error.to_string().contains("<network>"), "{error}");
        let error = import("<domain type='xen'><name>x</name></domain>").unwrap_err();
        assert!(error.to_string().contains("xen"), "{error}");
    }

    #[test]
    fn the_profile_is_the_serialized_raw_profile_under_the_notes() {
        let imported = import_ok(&domain("<devices><watchdog model='i6300esb'/></devices>"));
        let (header, body) = imported.profile.split_once("\n\n").unwrap();
        assert!(header.starts_with("# Imported from the libvirt domain `t`"));
        assert!(header.contains(
            "# Not translated (vmrun has no equivalent):\n#   <watchdog model='i6300esb'>: "
        ));
        assert!(
            body.starts_with("name = \"t\"\n\n[machine]\nmemory = \"1G\"\n"),
            "{body}"
        );
        // Tables in the profile's order, every one the parser reads back.
        let order: Vec<&str> = body.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(
            order,
            ["[machine]", "[cpu]", "[firmware]", "[network]", "[display]"],
            "{body}"
        );
        let source = crate::profile::ProfileSource {
            path: "t.toml".into(),
            text: imported.profile.clone(),
        };
        let raw = crate::model::parse(&source).unwrap();
        assert!(crate::model::validate(&source, &raw).is_ok());
    }

    #[test]
    fn control_characters_of_notes_are_escaped_in_the_header() {
        assert_eq!(
            comment_text("a\rb\u{1b}[2J\tc\nd"),
            "a\\u{d}b\\u{1b}[2J\tc\nd"
        );
        let imported = import_ok(&domain("<devices><watchdog model='x&#13;y'/></devices>"));
        assert!(
            imported.profile.contains("x\\u{d}y"),
            "{}",
            imported.profile
        );
        assert!(toml::from_str::<toml::Table>(&imported.profile).is_ok());
    }
}
