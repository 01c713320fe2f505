//! libvirt domain XML, both ways: `import` turns a domain into a vmrun profile (TOML text and
//! the list of what it could not translate), `export` turns a validated VM into a domain that
//! libvirt accepts. Both are pure: the CLI reads and writes the files.
//!
//! What libvirt has no element for travels in the domain's `<metadata>` under vmrun's own
//! namespace, which libvirt keeps as it is, so that a profile survives a round trip.

pub mod export;
pub mod import;
pub mod xml;

pub use export::{export, ExportInput};
pub use import::{import, ImportError, Imported};

/// libvirt's namespace for `<qemu:commandline>`.
pub const QEMU_NAMESPACE: &str = "http://libvirt.org/schemas/domain/qemu/1.0";
/// vmrun's namespace inside `<metadata>`.
pub const VMRUN_NAMESPACE: &str = "https://github.com/vmrun/vmrun/libvirt/1";

/// Something in the domain that the profile does not carry as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The XML element, written as it appears: `<sound model='ich9'>`.
    pub element: String,
    pub message: String,
    pub kind: NoteKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// vmrun has no equivalent: the element is left out.
    Untranslated,
    /// Translated, but to something that differs: the message says how.
    Changed,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = match self.kind {
            NoteKind::Untranslated => "not translated",
            NoteKind::Changed => "changed",
        };
        write!(f, "{label}: {}: {}", self.element, self.message)
    }
}
