//! The sound server and the remote display QEMU talks to.

use std::process::{Command, Stdio};

use super::qemu::last_lines;
use super::{Depth, Finding};
use crate::plan::Plan;

/// The sound server must be up when QEMU starts (QEMU refuses to start without it), and
/// QEMU needs its PulseAudio module, which Debian ships apart.
pub(super) fn audio_findings(plan: &Plan, depth: Depth) -> Vec<Finding> {
    use std::os::unix::fs::FileTypeExt;
    let Some(audio) = &plan.audio else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    let Some(server) = &audio.server else {
        return vec![Finding::fail(
            "audio",
            "cannot tell whose sound server to use: vmrun was not started through sudo by a desktop user; \
             set audio.user (or audio.server and audio.cookie)",
        )];
    };
    let who = audio
        .user
        .as_deref()
        .map(|user| format!(" of {user}"))
        .unwrap_or_default();
    findings.push(match std::fs::metadata(server) {
        Ok(meta) if meta.file_type().is_socket() => Finding::pass(
            "audio",
            format!(
                "the PulseAudio/PipeWire server{who} listens on {}",
                server.display()
            ),
        ),
        _ => Finding::fail(
            "audio",
            format!(
                "no sound server{who} at {}: the desktop user must be logged in with PipeWire or PulseAudio \
                 (or PipeWire's pipewire-pulse) running; QEMU refuses to start without it",
                server.display()
            ),
        ),
    });
    if let Some(cookie) = &audio.cookie {
        if !cookie.is_file() {
            findings.push(Finding::warn(
                "audio",
                format!(
                    "no cookie at {}: PulseAudio will refuse QEMU (\"Access denied\"); PipeWire needs none",
                    cookie.display()
                ),
            ));
        }
    }
    if depth == Depth::Check {
        findings.push(qemu_audio_module(plan));
    }
    findings
}

/// QEMU lists only the audio drivers it can load (`-audiodev help`; a module whose library
/// is missing makes QEMU 10 fail the whole list).
pub(super) fn qemu_audio_module(plan: &Plan) -> Finding {
    let binary = plan
        .qemu_program
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| plan.argv[0].clone());
    let (driver, name, packages) = match plan.audio.as_ref().map(|a| a.backend) {
        Some("pipewire") => ("pipewire", "PipeWire", "qemu-system-gui libpipewire-0.3-0"),
        _ => ("pa", "PulseAudio", "qemu-system-gui"),
    };
    let output = Command::new(&binary)
        .args(["-audiodev", "help"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output)
            if String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|l| l.trim() == driver) =>
        {
            Finding::pass("audio", format!("QEMU has its {name} backend ({driver})"))
        }
        Ok(output) => Finding::fail(
            "audio",
            format!(
                "QEMU cannot load its {name} backend (`-audiodev help` has no `{driver}`{}): \
                 Debian/Ubuntu: apt install {packages}",
                last_lines(&String::from_utf8_lossy(&output.stderr), 1)
                    .split_once("help: ")
                    .map(|(_, why)| format!("; {why}"))
                    .unwrap_or_default()
            ),
        ),
        Err(error) => Finding::fail("audio", format!("cannot run {binary}: {error}")),
    }
}

pub(super) fn display_findings(plan: &Plan) -> Vec<Finding> {
    let Some(remote) = &plan.remote else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    let protocol = remote.protocol.to_uppercase();
    match &remote.socket {
        Some(socket) if socket.as_os_str().len() > crate::plan::paths::MAX_SOCKET_PATH => {
            findings.push(Finding::fail(
                "display",
                format!(
                    "the {protocol} socket path {} is too long for a Unix socket; use a shorter --runtime-dir",
                    socket.display()
                ),
            ))
        }
        Some(socket) => findings.push(Finding::pass(
            "display",
            format!(
                "{protocol} on {}: `remote-viewer {}`; from another machine forward it with \
                 ssh -L /tmp/vm.sock:{} HOST",
                socket.display(),
                remote.uri,
                socket.display()
            ),
        )),
        None => findings.push(Finding::pass(
            "display",
            format!("{protocol} on the network: `remote-viewer {}`", remote.uri),
        )),
    }
    if let Some(file) = &remote.password_file {
        match std::fs::read(file) {
            Err(error) => findings.push(Finding::fail(
                "display",
                format!("display.password_file {}: {error}", file.display()),
            )),
            Ok(bytes) if bytes.is_empty() => findings.push(Finding::fail(
                "display",
                format!("display.password_file {} is empty", file.display()),
            )),
            Ok(bytes) => {
                if bytes.ends_with(b"\n") {
                    findings.push(Finding::warn(
                        "display",
                        format!(
                            "display.password_file {} ends with a newline, which QEMU takes as part of the password \
                             (write it with `printf %s PASSWORD`)",
                            file.display()
                        ),
                    ));
                }
                if remote.protocol == "vnc" && bytes.len() > 8 {
                    findings.push(Finding::warn(
                        "display",
                        "VNC passwords are cut to 8 characters, and VNC is not encrypted: prefer SPICE or an SSH tunnel",
                    ));
                }
            }
        }
    }
    findings
}
