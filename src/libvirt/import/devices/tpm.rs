//! `<tpm>` → `[tpm]`: a TPM 2.0 emulated by swtpm.

use roxmltree::Node;

use super::super::read::{child, describe};
use super::super::{section, text, Importer};
use crate::libvirt::NoteKind;

impl Importer {
    pub(super) fn tpm(&mut self, node: Node) {
        let backend = child(node, "backend");
        let emulator = backend.and_then(|b| b.attribute("type")) == Some("emulator");
        let version = backend
            .and_then(|b| b.attribute("version"))
            .unwrap_or("2.0");
        if !emulator || version != "2.0" {
            self.untranslated(
                node,
                "vmrun's TPM is a TPM 2.0 emulated by swtpm (a host TPM is not passed through)",
            );
            return;
        }
        if node.attribute("model").is_some_and(|m| m != "tpm-crb") {
            self.changed(node, "vmrun's TPM is tpm-crb (what Windows 11 expects)");
        }
        self.note(
            describe(node),
            NoteKind::Changed,
            "vmrun keeps the TPM state in the VM's state directory: to keep BitLocker's keys, copy \
             libvirt's /var/lib/libvirt/swtpm/<uuid>/tpm2 there (the `tpm` directory) before the first run",
        );
        section(&mut self.profile.tpm).version = text("2.0");
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{domain, import_ok, noted};

    #[test]
    fn an_emulated_tpm_2_is_kept_and_a_host_tpm_noted() {
        let imported = import_ok(&domain(
            "<devices><tpm model='tpm-tis'><backend type='emulator' version='2.0'/></tpm></devices>",
        ));
        assert!(imported.profile.contains("[tpm]\nversion = \"2.0\"\n"));
        assert!(noted(&imported, "<tpm model='tpm-tis'>", "tpm-crb"));
        assert!(noted(&imported, "<tpm model='tpm-tis'>", "BitLocker"));
        let imported = import_ok(&domain(
            "<devices><tpm model='tpm-crb'><backend type='passthrough'/></tpm></devices>",
        ));
        assert!(!imported.profile.contains("[tpm]"));
        assert!(noted(&imported, "<tpm", "not passed through"));
    }
}
