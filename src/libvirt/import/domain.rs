//! The domain's own elements: `<name>`, `<memory>`, `<currentMemory>`, `<memoryBacking>`,
//! `<vcpu>`/`<vcpus>`, `<iothreads>`, the lifecycle actions and `<pm>` → `name`, `[machine]`
//! and the vCPU count `[cpu]` is sized from.

use std::collections::BTreeMap;

use roxmltree::Node;

use super::read::{child, elements, size_in_bytes, text_of};
use super::{flag, int, section, text, ImportError, Importer};
use crate::model::{ByteSize, VmName};

/// What a profile takes (`cpu.*` and `machine.iothreads` in `src/model`).
const MAX_VCPUS: u32 = 255;
const MAX_IOTHREADS: u32 = 16;

impl Importer {
    pub(super) fn name(&mut self, node: Node) -> Result<(), ImportError> {
        let written = text_of(node);
        if let Some(bad) = written.chars().find(|c| c.is_control()) {
            return Err(ImportError::Invalid {
                element: "name",
                message: format!(
                    "the domain's name {:?} holds the control character {}; give it a name of \
                     letters, digits, `-`, `_` and `.`",
                    written,
                    bad.escape_unicode()
                ),
            });
        }
        let mut name: String = written
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        while name.starts_with(['.', '-']) {
            name.remove(0);
        }
        name.truncate(64);
        if name.is_empty() {
            name = "imported".to_string();
        }
        if name != written {
            self.changed(
                node,
                format!("`{written}` is not a valid vmrun name; the profile uses `{name}`"),
            );
        }
        debug_assert!(name.parse::<VmName>().is_ok());
        self.profile.name = text(name);
        Ok(())
    }

    pub(super) fn memory(&mut self, node: Node) -> Result<(), ImportError> {
        let invalid = || ImportError::Invalid {
            element: "memory",
            message: format!(
                "`{}` with unit `{}` is not a size vmrun can give a guest",
                text_of(node),
                node.attribute("unit").unwrap_or("KiB")
            ),
        };
        let bytes = size_in_bytes(&text_of(node), node.attribute("unit")).ok_or_else(invalid)?;
        // libvirt rounds guest RAM up to whole MiB on x86, so the guest gets the same.
        let rounded = bytes
            .div_ceil(ByteSize::MIB)
            .max(64)
            .checked_mul(ByteSize::MIB)
            .ok_or_else(invalid)?;
        if rounded != bytes {
            self.changed(
                node,
                format!(
                    "{bytes} bytes rounded up to {} (libvirt rounds to whole MiB too; vmrun needs at least 64M)",
                    ByteSize(rounded)
                ),
            );
        }
        section(&mut self.profile.machine).memory = text(ByteSize(rounded).qemu_spelling());
        Ok(())
    }

    pub(super) fn current_memory(&mut self, domain: Node, node: Node) {
        let current = size_in_bytes(&text_of(node), node.attribute("unit"));
        let maximum =
            child(domain, "memory").and_then(|m| size_in_bytes(&text_of(m), m.attribute("unit")));
        if current.is_some() && maximum.is_some() && current < maximum {
            self.untranslated(
                node,
                "the guest starts with all of <memory>; vmrun has no balloon",
            );
        }
    }

    pub(super) fn memory_backing(&mut self, node: Node) {
        for item in elements(node) {
            match item.tag_name().name() {
                "hugepages" => {
                    let page = child(item, "page").and_then(|page| {
                        size_in_bytes(page.attribute("size")?, page.attribute("unit"))
                    });
                    let pages = match page {
                        Some(bytes) if bytes == ByteSize::GIB => "1G",
                        Some(bytes) if bytes == 2 * ByteSize::MIB => "2M",
                        Some(bytes) => {
                            self.changed(
                                item,
                                format!("{bytes}-byte pages are not 2M or 1G; the profile uses 2M"),
                            );
                            "2M"
                        }
                        None => {
                            self.changed(
                                item,
                                "no page size given (the host's default): the profile uses 2M, \
                                 the x86 default; write \"1G\" if the host's default is 1G",
                            );
                            "2M"
                        }
                    };
                    section(&mut self.profile.machine).hugepages = text(pages);
                }
                "source" if item.attribute("type") == Some("memfd") => {}
                "nosharepages" => self.untranslated(
                    item,
                    "vmrun leaves KSM alone (passed-through guests have their memory pinned anyway)",
                ),
                "locked" => self.untranslated(
                    item,
                    "vmrun does not mlock guest RAM (VFIO pins it when a device is passed)",
                ),
                _ => self.untranslated(item, "vmrun has no key for this memory backing"),
            }
        }
    }

    /// `<vcpu current='N'>M</vcpu>`: vmrun has no vCPU hot-plug, so the profile starts the vCPUs
    /// that were online at start (which ones: `<vcpus>`, or the first N), never the offline
    /// ones, which would have no place of their own to be pinned to.
    pub(super) fn vcpu(&mut self, node: Node) -> Result<(), ImportError> {
        let count: u32 = text_of(node).parse().map_err(|_| ImportError::Invalid {
            element: "vcpu",
            message: format!("`{}` is not a number of vCPUs", text_of(node)),
        })?;
        if count == 0 || count > MAX_VCPUS {
            return Err(ImportError::Invalid {
                element: "vcpu",
                message: format!("{count} vCPUs; vmrun takes 1 to {MAX_VCPUS}"),
            });
        }
        self.cpu.vcpus = count;
        if let Some(current) = node
            .attribute("current")
            .and_then(|c| c.parse::<u32>().ok())
            .filter(|c| (1..count).contains(c))
        {
            self.cpu.current = Some(current);
        }
        if node.attribute("cpuset").is_some() && node.attribute("placement") != Some("auto") {
            self.changed(
                node,
                "the cpuset of unpinned vCPUs is not a vmrun key; see [pinning]",
            );
        }
        Ok(())
    }

    /// `<vcpus>`: which vCPUs were online at start.
    pub(super) fn vcpus(&mut self, node: Node) {
        for item in elements(node).filter(|i| i.tag_name().name() == "vcpu") {
            let id = item.attribute("id").and_then(|i| i.parse::<u32>().ok());
            if let (Some(id), Some(enabled)) = (id, item.attribute("enabled")) {
                if id < MAX_VCPUS {
                    self.cpu.enabled.insert(id, enabled == "yes");
                }
            }
        }
    }

    pub(super) fn iothreads(&mut self, node: Node) -> Result<(), ImportError> {
        match text_of(node).parse::<u32>() {
            Ok(0) => Ok(()),
            Ok(count) if count <= MAX_IOTHREADS => {
                section(&mut self.profile.machine).iothreads = int(count);
                Ok(())
            }
            _ => Err(ImportError::Invalid {
                element: "iothreads",
                message: format!(
                    "`{}` iothreads; vmrun takes 0 to {MAX_IOTHREADS}",
                    text_of(node)
                ),
            }),
        }
    }

    /// `<on_poweroff>`, `<on_reboot>`, `<on_crash>`: vmrun does what libvirt does by default.
    pub(super) fn lifecycle(&mut self, node: Node) {
        let (expected, message) = match node.tag_name().name() {
            "on_poweroff" => ("destroy", "vmrun always does `destroy`"),
            "on_reboot" => ("restart", "vmrun always does `restart`"),
            _ => ("destroy", "vmrun stops when the guest crashes"),
        };
        if text_of(node) != expected {
            self.untranslated(node, message);
        }
    }

    /// Both suspend states off is `machine.suspend = false`; one alone stays QEMU's global.
    pub(super) fn pm(&mut self, node: Node) {
        let mut disabled = BTreeMap::new();
        for item in elements(node) {
            let state = match item.tag_name().name() {
                "suspend-to-mem" => "disable_s3",
                "suspend-to-disk" => "disable_s4",
                _ => {
                    self.untranslated(item, "vmrun has no key for this");
                    continue;
                }
            };
            disabled.insert(state, item.attribute("enabled") == Some("no"));
        }
        if disabled.get("disable_s3") == Some(&true) && disabled.get("disable_s4") == Some(&true) {
            section(&mut self.profile.machine).suspend = flag(false);
            return;
        }
        for (state, off) in disabled {
            self.extra_args([
                "-global".to_string(),
                format!("ICH9-LPC.{state}={}", u8::from(off)),
            ]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{domain, import_ok, noted};
    use super::super::*;

    #[test]
    fn names_are_made_valid_and_control_characters_refused() {
        let imported = import_ok(
            "<domain type='kvm'><name>my vm</name><memory unit='MiB'>100</memory></domain>",
        );
        assert_eq!(imported.name, "my-vm");
        assert!(noted(&imported, "<name>", "the profile uses `my-vm`"));
        let error = import(
            "<domain type='kvm'><name>a&#13;b</name><memory unit='MiB'>100</memory></domain>",
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                ImportError::Invalid {
                    element: "name",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("\\u{d}"), "{error}");
    }

    #[test]
    fn memory_is_rounded_as_libvirt_rounds_it_and_huge_sizes_refused() {
        let imported = import_ok(
            "<domain type='kvm'><name>m</name><memory unit='KiB'>100001</memory></domain>",
        );
        assert!(
            imported.profile.contains("memory = \"98M\""),
            "{}",
            imported.profile
        );
        assert!(noted(&imported, "<memory", "rounded up"));
        for memory in ["18446744073709551615</memory>", "x</memory>"] {
            let xml =
                format!("<domain type='kvm'><name>m</name><memory unit='b'>{memory}</domain>");
            assert!(
                matches!(
                    import(&xml),
                    Err(ImportError::Invalid {
                        element: "memory",
                        ..
                    })
                ),
                "{xml}"
            );
        }
    }

    #[test]
    fn hugepages_and_suspend_reach_the_machine_table() {
        let imported = import_ok(&domain(
            "<memoryBacking><hugepages><page size='1' unit='G'/></hugepages></memoryBacking>\
             <pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>",
        ));
        assert!(imported
            .profile
            .contains("[machine]\nmemory = \"1G\"\nhugepages = \"1G\"\nsuspend = false\n"));
        let imported = import_ok(&domain("<pm><suspend-to-mem enabled='no'/></pm>"));
        assert!(imported.profile.contains("\"ICH9-LPC.disable_s3=1\""));
    }

    #[test]
    fn vcpu_and_iothread_counts_are_capped_as_in_profiles() {
        for body in [
            "<vcpu>256</vcpu>",
            "<vcpu>0</vcpu>",
            "<iothreads>17</iothreads>",
            "<iothreads>-1</iothreads>",
        ] {
            assert!(
                matches!(import(&domain(body)), Err(ImportError::Invalid { .. })),
                "{body}"
            );
        }
        let imported = import_ok(&domain("<vcpu>4</vcpu><iothreads>2</iothreads>"));
        assert!(imported.profile.contains("iothreads = 2"));
        assert!(imported
            .profile
            .contains("[cpu]\nsockets = 4\ncores = 1\nthreads = 1\n"));
    }

    #[test]
    fn lifecycle_actions_vmrun_does_not_take_are_noted() {
        let imported = import_ok(&domain(
            "<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>",
        ));
        assert!(noted(&imported, "<on_reboot>", "restart"));
        assert!(!noted(&imported, "<on_poweroff>", ""));
    }
}
