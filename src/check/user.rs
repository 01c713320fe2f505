//! Who QEMU runs as, and whether that user reaches what QEMU opens itself.

use std::path::Path;

use super::{Finding, Sysroot};
use crate::model::{Accel, VmConfig};
use crate::plan::Plan;

/// Who QEMU runs as, and whether that user reaches what QEMU opens itself (vmrun passes the
/// disks, firmware and VARS as descriptors; the device nodes are handed over for the run).
pub(super) fn qemu_user_findings(
    config: &VmConfig,
    root: &Sysroot,
    qemu: Option<&Path>,
) -> Vec<Finding> {
    use crate::host::identity::{reach, Access};
    use crate::model::QemuUser;
    let identity = match &config.qemu.user {
        QemuUser::Resolved(identity) => identity,
        QemuUser::Root => {
            return vec![Finding::warn(
                "qemu-user",
                "QEMU runs as root (qemu.user = \"root\"): a bug in any emulated device gives \
                 the guest the host; remove the key to run it unprivileged",
            )]
        }
        // Not resolved against this host (a plan made without host facts).
        _ => return Vec::new(),
    };
    let mut findings = vec![if identity.source == "fallback" {
        Finding::warn(
            "qemu-user",
            format!(
                "QEMU runs as {} (uid {}): no desktop user ran vmrun through sudo or pkexec, and \
                 {} may be shared with other daemons; set qemu.user to an account of its own",
                identity.name, identity.uid, identity.name
            ),
        )
    } else {
        Finding::pass(
            "qemu-user",
            format!(
                "QEMU runs as {} (uid {}, gid {}, from {}) with no capabilities, no_new_privs \
                 and its files passed as descriptors",
                identity.name, identity.uid, identity.gid, identity.source
            ),
        )
    }];
    let mut must_reach: Vec<(String, std::path::PathBuf, Access)> = Vec::new();
    if let Some(binary) = qemu {
        must_reach.push(("qemu.binary".into(), binary.to_path_buf(), Access::Execute));
    }
    if config.machine.accel == Accel::Kvm {
        must_reach.push(("KVM".into(), root.path("/dev/kvm"), Access::ReadWrite));
    }
    for (index, device) in config.pci.iter().enumerate() {
        if let Some(rom) = &device.romfile {
            must_reach.push((format!("pci[{index}].romfile"), rom.clone(), Access::Read));
        }
    }
    if let Some(file) = config
        .display
        .remote
        .as_ref()
        .and_then(|r| r.password_file.as_ref())
    {
        must_reach.push(("display.password_file".into(), file.clone(), Access::Read));
    }
    if let Some(lg) = config.looking_glass.as_ref() {
        let real = root.path(&lg.path.to_string_lossy());
        // A file vmrun creates is made QEMU's; one that exists must already be reachable.
        if real.exists() || lg.is_kvmfr() {
            must_reach.push(("looking_glass.path".into(), real, Access::ReadWrite));
        }
    }
    for (what, path, access) in must_reach {
        // A file that is not there is reported once, as missing, with the profile's other
        // files: not also as something QEMU's user cannot reach.
        if matches!(path.try_exists(), Ok(false)) {
            continue;
        }
        findings.push(match reach(identity, &path, access) {
            Ok(()) => Finding::pass(
                "qemu-user",
                format!("{} reaches {what} ({})", identity.name, path.display()),
            ),
            Err(problem) => Finding::fail(
                "qemu-user",
                format!(
                    "{what}: {problem}; QEMU runs as {} and opens it itself (make it readable \
                     to {}, move it, or set qemu.user)",
                    identity.name, identity.name
                ),
            ),
        });
    }
    findings
}

/// The sound server's socket and cookie, and the directories above QEMU's own runtime
/// subdirectory (where it creates the remote display's socket), as QEMU's user sees them.
pub(super) fn qemu_user_reaches_runtime(plan: &Plan) -> Vec<Finding> {
    use crate::host::identity::{reach, Access};
    let Some(identity) = &plan.qemu_user else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    if let Some(audio) = &plan.audio {
        checks.extend(
            audio
                .server
                .iter()
                .map(|server| ("audio server", server.clone(), Access::ReadWrite)),
        );
        if audio.user.as_deref() != Some(identity.name.as_str()) {
            checks.extend(
                audio
                    .cookie
                    .iter()
                    .map(|cookie| ("audio cookie", cookie.clone(), Access::Read)),
            );
        }
    }
    // vmrun makes the base runtime directory passable itself; the ones above it are the
    // host's.
    if plan.remote.as_ref().is_some_and(|r| r.socket.is_some()) {
        if let Some(above) = plan
            .paths
            .runtime_dir
            .parent()
            .and_then(|base| base.parent())
        {
            checks.push(("the runtime directory", above.to_path_buf(), Access::Search));
        }
    }
    checks
        .into_iter()
        .filter(|(_, path, _)| path.exists())
        .filter_map(|(what, path, access)| {
            let problem = reach(identity, &path, access).err()?;
            Some(Finding::fail(
                "qemu-user",
                format!("{what}: {problem}; QEMU runs as {}", identity.name),
            ))
        })
        .collect()
}
