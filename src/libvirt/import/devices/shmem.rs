//! `<shmem>` (and Looking Glass' ivshmem from `<qemu:commandline>`) → `[looking_glass]`.

use roxmltree::Node;

use super::super::read::{child, size_in_bytes, text_of};
use super::super::{section, text, ImportError, Importer};
use crate::model::ByteSize;

impl Importer {
    pub(in super::super) fn shmem(&mut self, node: Node) -> Result<(), ImportError> {
        let model = child(node, "model").and_then(|m| m.attribute("type"));
        if model != Some("ivshmem-plain") {
            self.untranslated(
                node,
                "vmrun's shared memory is Looking Glass' plain ivshmem",
            );
            return Ok(());
        }
        if self
            .profile
            .looking_glass
            .as_ref()
            .is_some_and(|lg| lg.get_ref().path.is_some())
        {
            self.untranslated(node, "vmrun has one shared-memory device (Looking Glass)");
            return Ok(());
        }
        let name = node.attribute("name").unwrap_or("looking-glass");
        // libvirt makes /dev/shm/NAME of it: one file name, nothing that climbs out.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(ImportError::Invalid {
                element: "shmem",
                message: format!(
                    "name='{name}' is not a file name in /dev/shm; give a name without `/`"
                ),
            });
        }
        let size = child(node, "size")
            .and_then(|s| size_in_bytes(&text_of(s), Some(s.attribute("unit").unwrap_or("b"))))
            // libvirt's default size.
            .unwrap_or(4 * ByteSize::MIB);
        if node.attribute("role").is_some() {
            self.untranslated(node, "vmrun has no migration roles");
        }
        self.looking_glass(format!("/dev/shm/{name}"), size, "shmem")
    }

    /// `[looking_glass]` with its file and size; a path that climbs (`..`) is refused.
    pub(in super::super) fn looking_glass(
        &mut self,
        path: String,
        size: u64,
        element: &'static str,
    ) -> Result<(), ImportError> {
        if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
            return Err(ImportError::Invalid {
                element,
                message: format!(
                    "the shared-memory file `{path}` is not an absolute path without `..`"
                ),
            });
        }
        let lg = section(&mut self.profile.looking_glass);
        lg.size = text(ByteSize(size).qemu_spelling());
        lg.path = text(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{domain, import_ok, noted};
    use super::super::super::*;

    #[test]
    fn looking_glass_shared_memory_with_its_size() {
        let imported = import_ok(&domain(
            "<devices><shmem name='looking-glass'><model type='ivshmem-plain'/>\
             <size unit='M'>64</size></shmem><shmem name='other'><model type='ivshmem-plain'/></shmem>\
             <shmem name='d'><model type='ivshmem-doorbell'/></shmem></devices>",
        ));
        assert!(imported
            .profile
            .contains("[looking_glass]\nsize = \"64M\"\npath = \"/dev/shm/looking-glass\"\n"));
        assert!(noted(
            &imported,
            "<shmem name='other'>",
            "one shared-memory device"
        ));
        assert!(noted(&imported, "<shmem name='d'>", "plain ivshmem"));
    }

    #[test]
    fn a_shmem_name_that_climbs_out_of_dev_shm_is_refused() {
        for name in ["../../etc/shadow", "..", "a/b", ""] {
            let error = import(&domain(&format!(
                "<devices><shmem name='{name}'><model type='ivshmem-plain'/></shmem></devices>"
            )))
            .unwrap_err();
            assert!(
                matches!(
                    error,
                    ImportError::Invalid {
                        element: "shmem",
                        ..
                    }
                ),
                "{name}: {error}"
            );
        }
        let mut importer = Importer::default();
        assert!(importer
            .looking_glass(
                "/dev/shm/../../etc/shadow".into(),
                1 << 25,
                "qemu:commandline"
            )
            .is_err());
        assert!(importer.profile.looking_glass.is_none());
    }
}
