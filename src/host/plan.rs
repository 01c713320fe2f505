//! What the host layer will do for a profile, in words: printed by `vmrun show` next to the
//! argv. Pure: the same profile gives the same plan on any machine.

use crate::model::{ByteSize, VmConfig};

pub fn describe(config: &VmConfig) -> Vec<String> {
    let mut steps = Vec::new();
    for argv in &config.hooks.pre_start {
        steps.push(format!("run pre_start hook: {}", argv.join(" ")));
    }
    if let Some(single) = &config.single_gpu {
        steps.push(format!("stop {} if it is active", single.display_manager));
        steps.push("unbind the bound vtconsoles".into());
        steps.push("unbind efi-framebuffer / simple-framebuffer devices if bound".into());
        if !single.modules.is_empty() {
            steps.push(format!(
                "unload modules, in this order: {}",
                single.modules.join(", ")
            ));
        }
    }
    if !config.pci.is_empty() {
        steps.push("load vfio-pci if it is not loaded".into());
        for device in &config.pci {
            steps.push(format!(
                "bind {} to vfio-pci (driver_override, unbind, drivers_probe), remembering its driver",
                device.address
            ));
        }
    }
    if let Some(pages) = config.machine.hugepages {
        steps.push(format!(
            "make {} free {} hugepages available, allocating the missing ones",
            config.machine.memory.bytes() / pages.bytes(),
            ByteSize(pages.bytes())
        ));
    }
    if let Some(lg) = config.looking_glass.as_ref().filter(|lg| !lg.is_kvmfr()) {
        steps.push(format!(
            "create {} if missing (mode {:o}{}{})",
            lg.path.display(),
            lg.mode,
            lg.owner
                .as_deref()
                .map(|o| format!(", owner {o}"))
                .unwrap_or_default(),
            lg.group
                .as_deref()
                .map(|g| format!(", group {g}"))
                .unwrap_or_default()
        ));
    }
    if !steps.is_empty() || !config.hooks.post_stop.is_empty() {
        let mut after = "after QEMU exits: undo all of the above in reverse order".to_string();
        if !config.hooks.post_stop.is_empty() {
            let hooks: Vec<String> = config
                .hooks
                .post_stop
                .iter()
                .map(|argv| argv.join(" "))
                .collect();
            after.push_str(&format!(", post_stop hooks last: {}", hooks.join("; ")));
        }
        steps.push(after);
    }
    steps
}
