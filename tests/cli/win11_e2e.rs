//! The Windows 11 desktop's pieces against the real programs: swtpm behind an OVMF guest
//! (TCG), a PulseAudio server started for a test user, and the remote display sockets.
//! Needs root, swtpm + swtpm-tools, pulseaudio + pulseaudio-utils and qemu-system-gui
//! (scripts/install-deps.sh installs them).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::{run, ThrowawayUser};
use crate::run_e2e::{seabios_accel, wait_gone, Vm};

fn digest(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An OVMF guest with a TPM whose UEFI shell runs `script`.
fn ovmf_with_startup(name: &str, script: &str, extra: &str) -> (Vm, crate::common::TestDir) {
    Vm::ovmf_with_startup(
        name,
        script,
        &format!("[shutdown]\ntimeout = 2\n[tpm]\nversion = \"2.0\"\n{extra}"),
    )
}

fn seabios(name: &str, extra: &str) -> Vm {
    let (accel, model) = seabios_accel(name);
    Vm::new(
        name,
        &format!(
            "[machine]\nmemory = \"128M\"\naccel = \"{accel}\"\n[cpu]\nmodel = \"{model}\"\ncores = 1\n\
             [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[shutdown]\ntimeout = 1\n{extra}"
        ),
    )
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn swtpm_serving(socket: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("swtpm\0") && cmdline.contains(&*socket.to_string_lossy()) {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            if !stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            {
                pids.push(pid);
            }
        }
    }
    pids
}

fn wait_not_running(vm: &Vm, within: Duration) {
    let deadline = Instant::now() + within;
    while vm.status()["running"] == true {
        assert!(Instant::now() < deadline, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn swtpm_serves_an_ovmf_guest_and_its_state_is_kept_and_changed_by_measured_boot() {
    // The guest powers itself off from the UEFI shell once OVMF booted (with its TPM2
    // measurements) and ran the script.
    let (vm, _esp) = ovmf_with_startup("w11-tpm", "reset -s\r\n", "");
    let tpm_dir = vm.state_dir().join("w11-tpm/tpm");
    let state_file = tpm_dir.join("tpm2-00.permall");
    // A state made beforehand, as a previous run would leave it: vmrun must take it as it is.
    std::fs::create_dir_all(&tpm_dir).unwrap();
    let (code, out, err) = run(Command::new("swtpm_setup")
        .args(["--tpm2", "--tpmstate"])
        .arg(&tpm_dir)
        .args(["--create-ek-cert", "--not-overwrite"]));
    assert_eq!(code, 0, "{out}{err}");
    let made = digest(&state_file);

    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let status = vm.wait_running();
    let (_, tpms, stderr) = run(vm.vmrun().args(["qmp", &vm.name, "query-tpm"]));
    let tpms: Value = serde_json::from_str(&tpms).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(tpms[0]["model"], "tpm-crb", "{tpms}");
    assert_eq!(tpms[0]["options"]["type"], "emulator", "{tpms}");
    let swtpm = status["swtpm_pid"].as_u64().expect("status names swtpm") as u32;
    assert_eq!(comm(swtpm), "swtpm");
    let socket = vm.runtime_dir().join("w11-tpm/swtpm.sock");
    assert_eq!(swtpm_serving(&socket), [swtpm]);
    // OVMF with its TPM measurements under TCG: about 20 s alone here, much longer when the
    // machine is busy (a wait, not a timing assert).
    wait_not_running(&vm, Duration::from_secs(300));
    let last: Value = serde_json::from_str(
        &std::fs::read_to_string(vm.state_dir().join("w11-tpm/last-run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(last["exit_code"], 0, "the guest powered itself off: {last}");
    assert!(
        wait_gone(swtpm, Duration::from_secs(5)),
        "swtpm outlived the run"
    );
    assert!(!socket.exists() && !vm.runtime_dir().join("w11-tpm/swtpm.pid").exists());
    let after_first = digest(&state_file);
    assert_ne!(
        after_first, made,
        "OVMF's TPM startup and measurements left no trace"
    );

    // A second run uses the same state again (never re-created) and changes it again.
    let (code, _, stderr) = run(vm.vmrun().arg("run").arg(&vm.profile));
    assert_eq!(code, 0, "{stderr}");
    let after_second = digest(&state_file);
    assert_ne!(after_second, after_first);
    let log = std::fs::read_to_string(vm.state_dir().join("w11-tpm/vmrun.log")).unwrap();
    assert!(
        !log.contains("creating the VM's TPM state"),
        "an existing TPM state must never be re-created: {log}"
    );
    assert_eq!(log.matches("swtpm started").count(), 2, "{log}");
    assert!(
        vm.runtime_leftovers().is_empty(),
        "{:?}",
        vm.runtime_leftovers()
    );
}

#[test]
fn kill_9_of_vmrun_leaves_no_swtpm_and_recover_cleans_up() {
    let vm = seabios("w11-tpmkill", "[tpm]\n");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let status = vm.wait_running();
    let state_file = vm.state_dir().join("w11-tpmkill/tpm/tpm2-00.permall");
    assert!(state_file.is_file(), "the first run creates the TPM state");
    let log = std::fs::read_to_string(vm.state_dir().join("w11-tpmkill/vmrun.log")).unwrap();
    assert!(log.contains("creating the VM's TPM state"), "{log}");
    let (vmrun_pid, qemu, swtpm) = (
        status["vmrun_pid"].as_u64().unwrap() as i32,
        status["pid"].as_u64().unwrap() as u32,
        status["swtpm_pid"].as_u64().unwrap() as u32,
    );
    let socket = vm.runtime_dir().join("w11-tpmkill/swtpm.sock");
    assert_eq!(swtpm_serving(&socket), [swtpm]);
    kill(Pid::from_raw(vmrun_pid), Signal::SIGKILL).unwrap();
    assert!(
        wait_gone(qemu, Duration::from_secs(5)),
        "QEMU outlived vmrun"
    );
    assert!(
        wait_gone(swtpm, Duration::from_secs(5)),
        "swtpm outlived vmrun"
    );
    assert!(swtpm_serving(&socket).is_empty());
    let journal = vm.state_dir().join("w11-tpmkill/journal");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.contains("\"undo\":\"stop_swtpm\""), "{text}");

    let (code, _, stderr) = run(vm.vmrun().args(["recover", &vm.name]));
    assert_eq!(code, 0, "{stderr}");
    assert!(!journal.exists(), "recover replays and clears the journal");
    let log = std::fs::read_to_string(vm.state_dir().join("w11-tpmkill/vmrun.log")).unwrap();
    assert!(log.contains("undoing 1 host change(s)"), "{log}");
    assert!(!socket.exists());
    assert!(!vm.runtime_dir().join("w11-tpmkill/swtpm.pid").exists());
    assert!(state_file.is_file(), "recover never touches the TPM state");
}

/// A PulseAudio server run for a throwaway user, with its own runtime directory.
struct PulseUser {
    // Dropped after the server is stopped (`Drop` below runs before the fields drop).
    user: ThrowawayUser,
    daemon: Child,
}

impl PulseUser {
    fn start(name: &'static str) -> Self {
        let user = ThrowawayUser::create(name);
        let runtime = user.runtime();
        let daemon = user
            .command()
            .args([
                "pulseaudio",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "-n",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink",
                "--log-target=stderr",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pulseaudio runs (apt install pulseaudio)");
        let socket = runtime.join("pulse/native");
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "pulseaudio did not open {socket:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PulseUser { user, daemon }
    }

    fn clients(&self) -> String {
        let (_, out, err) = run(self.user.command().args(["pactl", "list", "clients"]));
        format!("{out}{err}")
    }
}

impl Drop for PulseUser {
    fn drop(&mut self) {
        // runuser forwards the signal to pulseaudio.
        let _ = kill(Pid::from_raw(self.daemon.id() as i32), Signal::SIGTERM);
        let _ = self.daemon.wait();
    }
}

#[test]
fn a_users_pulseaudio_server_sees_qemu_as_a_client_with_the_handed_over_cookie() {
    let pulse = PulseUser::start("vmrunpatest");
    let vm = seabios(
        "w11-audio",
        &format!(
            "[audio]\nbackend = \"pulseaudio\"\nuser = \"{}\"\n",
            pulse.user.name
        ),
    );
    let (code, out, err) = run(vm.vmrun().arg("check").arg(&vm.profile));
    let server = format!("/run/user/{}/pulse/native", pulse.user.uid);
    assert!(
        out.contains(&format!(
            "the PulseAudio/PipeWire server of vmrunpatest listens on {server}"
        )),
        "{code} {out}{err}"
    );
    assert!(
        out.contains("QEMU has its PulseAudio backend (pa)"),
        "{out}"
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    let clients = pulse.clients();
    assert!(clients.contains("qemu-system-x86_64"), "{clients}");
    let qemu: u32 = std::fs::read_to_string(vm.dir.path().join("run/w11-audio/qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
    assert!(
        status.contains(&format!("Uid:\t{0}\t{0}\t{0}\t{0}", pulse.user.uid)),
        "QEMU runs as the audio user: {status}"
    );
    assert_eq!(vm.stop(), 5);
    assert!(!pulse.clients().contains("qemu-system-x86_64"));

    // QEMU ran as that user, whose server needs no cookie from its own user. As root (the
    // opt-out) without the user's cookie, QEMU is refused: the handover is what makes root work.
    let refused = seabios(
        "w11-nocookie",
        &format!(
            "[audio]\nuser = \"{}\"\ncookie = \"/nonexistent/cookie\"\n[qemu]\nuser = \"root\"\n",
            pulse.user.name
        ),
    );
    let (code, _, stderr) = run(refused.vmrun().arg("run").arg(&refused.profile));
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("Access denied"), "{stderr}");
}

fn spice_link_reply(socket: &Path) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // SpiceLinkHeader (magic, major 2, minor 2, size) + SpiceLinkMess for the main channel
    // with no capabilities (connection_id, channel_type 1, channel_id, 0, 0, caps_offset 18).
    let mut hello = Vec::new();
    hello.extend_from_slice(b"REDQ");
    for word in [2u32, 2, 18] {
        hello.extend_from_slice(&word.to_le_bytes());
    }
    hello.extend_from_slice(&0u32.to_le_bytes());
    hello.extend_from_slice(&[1, 0]);
    for word in [0u32, 0, 18] {
        hello.extend_from_slice(&word.to_le_bytes());
    }
    stream.write_all(&hello).unwrap();
    let mut reply = vec![0u8; 20];
    stream.read_exact(&mut reply).unwrap();
    reply
}

#[test]
fn the_remote_display_sockets_answer_vnc_and_spice_and_status_says_how_to_connect() {
    let vnc = seabios("w11-vnc", "[display]\nremote = \"vnc\"\n");
    let (code, stderr) = vnc.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vnc.wait_running();
    let socket = vnc.runtime_dir().join("w11-vnc/qemu/vnc.sock");
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 12];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"RFB 003.008\n");
    let (_, out, _) = run(vnc.vmrun().args(["status", &vnc.name]));
    assert!(
        out.contains(&format!("remote-viewer vnc+unix://{}", socket.display())),
        "{out}"
    );
    assert_eq!(vnc.stop(), 5);
    assert!(!socket.exists(), "the display socket goes with the run");

    let spice = seabios("w11-spice", "[display]\nremote = \"spice\"\n");
    let (code, stderr) = spice.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let status = spice.wait_running();
    let socket = spice.runtime_dir().join("w11-spice/qemu/spice.sock");
    assert_eq!(
        status["display"],
        format!("spice+unix://{}", socket.display()),
        "{status}"
    );
    let reply = spice_link_reply(&socket);
    assert_eq!(&reply[..4], b"REDQ", "{reply:?}");
    assert_eq!(u32::from_le_bytes(reply[4..8].try_into().unwrap()), 2);
    // SpiceLinkReply.error: 0 is SPICE_LINK_ERR_OK (no ticket was asked for).
    assert_eq!(u32::from_le_bytes(reply[16..20].try_into().unwrap()), 0);
    let (_, qxl, _) = run(spice.vmrun().args([
        "qmp",
        &spice.name,
        "qom-list",
        "{\"path\":\"/machine/peripheral\"}",
    ]));
    assert!(
        qxl.contains("video0") && qxl.contains("tablet0"),
        "SPICE brings an adapter and a tablet: {qxl}"
    );
    assert_eq!(spice.stop(), 5);
}

#[test]
fn windows_timers_power_smbios_and_usb_audio_are_accepted_by_a_real_qemu() {
    let (accel, model) = seabios_accel("w11-timers");
    let vm = Vm::new(
        "w11-timers",
        &format!(
            "[machine]\nmemory = \"128M\"\naccel = \"{accel}\"\nsuspend = false\n[cpu]\nmodel = \"{model}\"\n\
             cores = 1\n[firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n[shutdown]\ntimeout = 1\n\
             [clock]\nbase = \"localtime\"\n[smbios]\nmanufacturer = \"ASUS, Inc.\"\nbios_release = \"5.11\"\n\
             uuid = \"4c4c4544-0034-3910-8051-b3c04f4b5a32\"\n[audio]\nbackend = \"none\"\ndevice = \"usb\"\n"
        ),
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    let qom = |path: &str, property: &str| -> String {
        let (_, out, err) = run(vm.vmrun().args([
            "qmp",
            &vm.name,
            "qom-get",
            &format!("{{\"path\":\"{path}\",\"property\":\"{property}\"}}"),
        ]));
        format!("{}{err}", out.trim())
    };
    assert_eq!(qom("/machine", "hpet"), "false");
    // Devices move in QOM between QEMU versions (QEMU 10 puts q35's RTC under its LPC bridge,
    // 7.2 under /machine/unattached): each is found by its type, by walking the tree QEMU
    // reports, over one connection to the VM's second monitor.
    let mut qmp = vmrun::qmp::Qmp::connect(
        &vm.runtime_dir().join("w11-timers/ctl.sock"),
        Duration::from_secs(10),
    )
    .unwrap();
    let mut by_type: Vec<(String, String)> = Vec::new();
    let mut pending = vec!["/machine".to_string()];
    while let Some(path) = pending.pop() {
        let children = qmp
            .execute("qom-list", Some(serde_json::json!({ "path": path })))
            .unwrap_or(Value::Null);
        for child in children.as_array().into_iter().flatten() {
            let (Some(name), Some(kind)) = (child["name"].as_str(), child["type"].as_str()) else {
                continue;
            };
            if let Some(kind) = kind
                .strip_prefix("child<")
                .and_then(|k| k.strip_suffix('>'))
            {
                let child_path = format!("{path}/{name}");
                by_type.push((kind.to_string(), child_path.clone()));
                pending.push(child_path);
            }
        }
    }
    drop(qmp);
    let child_of_type = |kind: &str| -> Option<String> {
        by_type
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, path)| path.clone())
    };
    eprintln!(
        "[w11-timers] RTC at {:?}, LPC at {:?}",
        child_of_type("mc146818rtc"),
        child_of_type("ICH9-LPC")
    );
    let lpc = child_of_type("ICH9-LPC").expect("q35 has its ICH9 LPC bridge");
    assert_eq!(qom(&lpc, "disable_s3"), "1", "machine.suspend = false");
    assert_eq!(qom(&lpc, "disable_s4"), "1");
    let rtc = child_of_type("mc146818rtc").expect("q35's RTC");
    assert_eq!(qom(&rtc, "lost_tick_policy"), "\"slew\"", "rtc_driftfix");
    if accel == "kvm" {
        let pit = child_of_type("kvm-pit").expect("KVM's in-kernel PIT");
        assert_eq!(qom(&pit, "lost_tick_policy"), "\"discard\"");
    }
    assert_eq!(qom("/machine/peripheral/sound0", "audiodev"), "\"audio0\"");
    let (_, uuid, _) = run(vm.vmrun().args(["qmp", &vm.name, "query-uuid"]));
    assert!(
        uuid.contains("4c4c4544-0034-3910-8051-b3c04f4b5a32"),
        "SMBIOS type 1 carries the UUID: {uuid}"
    );
    assert_eq!(vm.stop(), 5);
}

#[test]
fn a_vnc_display_on_an_address_with_a_password_file_asks_for_the_password() {
    let port = (5990..6190)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port from 5990");
    let dir = crate::common::tempdir();
    let password = dir.path().join("vnc-password");
    std::fs::write(&password, "s3cret").unwrap();
    let vm = seabios(
        "w11-vncpw",
        &format!(
            "[display]\nremote = \"vnc\"\nlisten = \"127.0.0.1:{port}\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let status = vm.wait_running();
    assert_eq!(status["display"], format!("vnc://127.0.0.1:{port}"));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 12];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"RFB 003.008\n");
    stream.write_all(b"RFB 003.008\n").unwrap();
    let mut count = [0u8; 1];
    stream.read_exact(&mut count).unwrap();
    let mut types = vec![0u8; count[0] as usize];
    stream.read_exact(&mut types).unwrap();
    // 2 is VNC authentication; 1 (none) would mean the password file was not used.
    assert_eq!(types, [2], "security types offered: {types:?}");
    assert_eq!(vm.stop(), 5);
}
