//! `<metadata>` under vmrun's namespace: what libvirt has no element for, written by vmrun's
//! export (`<vmrun:profile>`), read back into the same keys.

use roxmltree::Node;

use super::read::{elements, text_of};
use super::{flag, int, section, text, text_list, Importer};
use crate::libvirt::VMRUN_NAMESPACE;
use crate::model::hooks::RawHook;

impl Importer {
    pub(super) fn metadata(&mut self, node: Node) {
        for item in elements(node) {
            if item.tag_name().namespace() != Some(VMRUN_NAMESPACE) {
                self.untranslated(item, "metadata of another program");
                continue;
            }
            for setting in elements(item) {
                let attribute = |name: &str| setting.attribute(name).map(str::to_string);
                let profile = &mut self.profile;
                match setting.tag_name().name() {
                    "firmware" => {
                        self.os.firmware_from_descriptors =
                            setting.attribute("selection") == Some("descriptors")
                    }
                    "display" => {
                        let display = section(&mut profile.display);
                        display.gui = attribute("gui").and_then(text);
                        display.password_file = attribute("password-file").and_then(text);
                    }
                    "pinning" => {
                        self.pinning.auto = setting.attribute("vcpus") == Some("auto");
                        self.pinning.threads_from_host =
                            setting.attribute("threads") == Some("host");
                    }
                    "isolation" => {
                        let isolation = section(&mut profile.isolation);
                        isolation.host_cpus = text(attribute("host-cpus").unwrap_or("auto".into()));
                        isolation.governor =
                            text(attribute("governor").unwrap_or("performance".into()));
                    }
                    "pci" => {
                        if let (Some(address), Some("yes")) =
                            (attribute("address"), setting.attribute("rescan"))
                        {
                            self.rescan.insert(address);
                        }
                        if let (Some(address), Some(methods)) =
                            (attribute("address"), attribute("reset-method"))
                        {
                            self.reset_method.insert(address, methods);
                        }
                        let number = |name: &str| {
                            setting.attribute(name).and_then(|n| n.parse::<u16>().ok())
                        };
                        if let (Some(address), Some(pf), Some(vf)) =
                            (attribute("address"), attribute("pf"), number("vf"))
                        {
                            let raw = crate::model::pci::RawPci {
                                pf: text(pf),
                                vf: int(vf),
                                mac: attribute("mac").and_then(text),
                                vlan: number("vlan").and_then(int),
                                ..Default::default()
                            };
                            self.virtual_functions.insert(address, raw);
                        }
                    }
                    "qemu" => {
                        if setting.attribute("sandbox") == Some("no") {
                            section(&mut profile.qemu).sandbox = flag(false);
                        }
                    }
                    "audio" => {
                        let audio = section(&mut profile.audio);
                        audio.user = attribute("user").and_then(text);
                        audio.cookie = attribute("cookie").and_then(text);
                    }
                    "looking-glass" => {
                        let lg = section(&mut profile.looking_glass);
                        lg.owner = attribute("owner").and_then(text);
                        lg.group = attribute("group").and_then(text);
                        lg.mode = attribute("mode").and_then(text);
                    }
                    "single-gpu" => {
                        let modules: Vec<String> = elements(setting)
                            .filter_map(|m| m.attribute("name").map(str::to_string))
                            .collect();
                        let single_gpu = section(&mut profile.single_gpu);
                        single_gpu.display_manager = attribute("display-manager").and_then(text);
                        if !modules.is_empty() {
                            single_gpu.modules = text_list(modules);
                        }
                    }
                    "holders" => {
                        let units: Vec<String> = elements(setting)
                            .filter_map(|u| u.attribute("name").map(str::to_string))
                            .collect();
                        if !units.is_empty() {
                            section(&mut profile.holders).stop = text_list(units);
                        }
                    }
                    "hook" => {
                        let argv: Vec<String> = elements(setting).map(text_of).collect();
                        let hooks = section(&mut profile.hooks);
                        let slot = match setting.attribute("phase") {
                            Some("pre_start") => &mut hooks.pre_start,
                            Some("started") => &mut hooks.started,
                            Some("post_stop") => &mut hooks.post_stop,
                            _ => {
                                self.untranslated(setting, "a hook phase vmrun does not know");
                                continue;
                            }
                        };
                        let hook =
                            slot.get_or_insert_with(|| super::spanned(RawHook::Many(Vec::new())));
                        if let RawHook::Many(list) = hook.get_mut() {
                            list.push(argv);
                        }
                    }
                    // vmrun's export of `hv_vendor_id` with `hyperv = "passthrough"`.
                    "hyperv" => {
                        if let Some(vendor) = attribute("vendor-id") {
                            section(&mut profile.cpu).hv_vendor_id = text(vendor);
                        }
                    }
                    "shutdown" => {
                        if let Some(timeout) = setting
                            .attribute("timeout")
                            .and_then(|t| t.parse::<u32>().ok())
                        {
                            section(&mut profile.shutdown).timeout = int(timeout);
                        }
                    }
                    _ => self.untranslated(setting, "a vmrun setting this version does not know"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{import_ok, noted};

    #[test]
    fn vmrun_metadata_comes_back_as_the_keys_it_was_written_from() {
        let imported = import_ok(&format!(
            "<domain type='kvm'><name>m</name><memory unit='MiB'>1024</memory><metadata>\
             <vmrun:profile xmlns:vmrun='{}'>\
             <vmrun:isolation host-cpus='0-1'/><vmrun:shutdown timeout='90'/>\
             <vmrun:hook phase='pre_start'><vmrun:arg>/bin/a</vmrun:arg><vmrun:arg>x</vmrun:arg></vmrun:hook>\
             <vmrun:hook phase='pre_start'><vmrun:arg>/bin/b</vmrun:arg></vmrun:hook>\
             <vmrun:single-gpu display-manager='gdm'><vmrun:module name='nvidia'/></vmrun:single-gpu>\
             <vmrun:holders><vmrun:unit name='sunshine.service'/><vmrun:unit name='session-*.scope'/></vmrun:holders>\
             <vmrun:qemu sandbox='no'/><vmrun:hyperv vendor-id='AMD is best'/><vmrun:future/>\
             </vmrun:profile><other:x xmlns:other='urn:o'/></metadata></domain>",
            crate::libvirt::VMRUN_NAMESPACE
        ));
        let profile = &imported.profile;
        assert!(
            profile.contains("[isolation]\nhost_cpus = \"0-1\"\ngovernor = \"performance\"\n"),
            "{profile}"
        );
        assert!(
            profile.contains("[hooks]\npre_start = [[\"/bin/a\", \"x\"], [\"/bin/b\"]]\n"),
            "{profile}"
        );
        assert!(
            profile.contains("[single_gpu]\ndisplay_manager = \"gdm\"\nmodules = [\"nvidia\"]\n"),
            "{profile}"
        );
        assert!(
            profile.contains("[holders]\nstop = [\"sunshine.service\", \"session-*.scope\"]\n"),
            "{profile}"
        );
        assert!(profile.contains("[shutdown]\ntimeout = 90\n"), "{profile}");
        assert!(profile.contains("[qemu]\nsandbox = false\n"), "{profile}");
        // Without enlightenments the vendor id has no effect and is left out.
        assert!(noted(&imported, "<vendor_id>", "no effect"));
        assert!(noted(&imported, "<future>", "does not know"));
        assert!(noted(&imported, "<x>", "another program"));
    }
}
