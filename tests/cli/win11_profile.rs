//! The Windows 11 sections without booting: their validation (file, line, key), what `show`
//! and `check` say about them, and the argv they give.

use std::path::Path;

use serde_json::Value;

use crate::common::{expect_error, run, validate_text};

#[test]
fn the_new_tables_report_bad_keys_and_values_with_file_line_and_key() {
    expect_error(
        "[tpm]\nversion = \"1.2\" #<\n",
        "tpm.version",
        "use \"2.0\"",
    );
    expect_error(
        "[tpm]\nversoin = \"2.0\" #<\n",
        "tpm.versoin",
        "did you mean `version`?",
    );
    expect_error(
        "[smbios]\nuuid = \"not-a-uuid\" #<\n",
        "smbios.uuid",
        "is not a UUID",
    );
    expect_error(
        "[smbios]\nbios_release = \"5\" #<\n",
        "smbios.bios_release",
        "MAJOR.MINOR",
    );
    expect_error(
        "[smbios]\nvendor = \"ASUS\" #<\n",
        "smbios.vendor",
        "valid keys",
    );
    expect_error(
        "[audio]\nbackend = \"alsa\" #<\n",
        "audio.backend",
        "\"pulseaudio\", \"pipewire\", \"none\"",
    );
    expect_error(
        "[audio]\nserver = \"pulse/native\" #<\n",
        "audio.server",
        "not an absolute path",
    );
    expect_error(
        "[audio]\ndevice = \"ac97\" #<\n",
        "audio.device",
        "\"ich9\", \"usb\"",
    );
    expect_error(
        "[display]\nremote = \"rdp\" #<\n",
        "display.remote",
        "\"spice\", \"vnc\"",
    );
    expect_error(
        "[display]\nremote = \"spice\"\nlisten = \"0.0.0.0:5900\" #<\n",
        "display.listen",
        "set display.password_file",
    );
    expect_error(
        "[display]\nremote = \"vnc\"\nlisten = \"127.0.0.1:80\" #<\n",
        "display.listen",
        "VNC ports start at 5900",
    );
    expect_error(
        "[display]\nremote = \"spice\"\nlisten = \"somewhere\" #<\n",
        "display.listen",
        "ADDRESS:PORT",
    );
    expect_error(
        "[clock]\nbase = \"gmt\" #<\n",
        "clock.base",
        "\"utc\", \"localtime\"",
    );
    expect_error(
        "[clock]\npit_lost_ticks = \"slew\" #<\n",
        "clock.pit_lost_ticks",
        "\"discard\", \"delay\"",
    );
    expect_error(
        "[[disk]]\npath = \"/dev/null\"\nboot_order = 1\n[[pci]]\naddress = \"01:00.0\"\nboot_order = 1 #<\n",
        "pci[0].boot_order",
        "disk[0] has boot_order 1 too",
    );
}

#[test]
fn a_loopback_or_unix_listener_needs_no_password_and_spice_brings_qxl() {
    let dir = crate::common::tempdir();
    let (config, _) = validate_text(
        dir.path(),
        "r",
        "[[pci]]\naddress = \"01:00.0\"\n[display]\nremote = \"spice\"\nlisten = \"[::1]:5930\"\n",
    )
    .unwrap();
    assert_eq!(config.display.vga, vmrun::model::VgaModel::Qxl);
    let (config, _) = validate_text(
        dir.path(),
        "lg",
        "[[pci]]\naddress = \"01:00.0\"\n[looking_glass]\n[display]\nremote = \"spice\"\n",
    )
    .unwrap();
    assert_eq!(
        config.display.vga,
        vmrun::model::VgaModel::None,
        "Looking Glass uses SPICE for input only"
    );
}

fn write_dmi(root: &Path, values: &[(&str, &str)]) {
    let dir = root.join("sys/class/dmi/id");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, value) in values {
        std::fs::write(dir.join(file), format!("{value}\n")).unwrap();
    }
}

#[test]
fn smbios_from_host_copies_dmi_through_the_host_root_and_show_prints_it() {
    let dir = crate::common::tempdir();
    let root = dir.path().join("root");
    write_dmi(
        &root,
        &[
            ("sys_vendor", "Micro-Star International Co., Ltd."),
            ("product_name", "MS-7C91"),
            ("product_uuid", "4c4c4544-0034-3910-8051-b3c04f4b5a32"),
            ("board_vendor", "Micro-Star International Co., Ltd."),
            ("board_name", "MAG B550 TOMAHAWK (MS-7C91)"),
            ("bios_vendor", "American Megatrends International, LLC."),
            ("bios_release", "5.17"),
            ("bios_date", "04/22/2021"),
            // Empty host values are left out, not given as empty strings.
            ("chassis_asset_tag", ""),
        ],
    );
    std::fs::write(
        dir.path().join("vm.toml"),
        "[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n\
         [smbios]\nfrom_host = true\nproduct = \"Gaming, Desktop\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(crate::common::vmrun(dir.path())
        .env("VMRUN_SYSROOT", &root)
        .args(["show", "vm.toml", "--json", "--runtime-dir"])
        .arg(dir.path().join("run")));
    assert_eq!(code, 0, "{stderr}");
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    let argv: Vec<&str> = shown["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let smbios: Vec<&str> = argv
        .windows(2)
        .filter(|w| w[0] == "-smbios")
        .map(|w| w[1])
        .collect();
    assert_eq!(
        smbios,
        [
            "type=0,vendor=American Megatrends International,, LLC.,date=04/22/2021,release=5.17",
            "type=1,manufacturer=Micro-Star International Co.,, Ltd.,product=Gaming,, Desktop,\
             uuid=4c4c4544-0034-3910-8051-b3c04f4b5a32",
            "type=2,manufacturer=Micro-Star International Co.,, Ltd.,product=MAG B550 TOMAHAWK (MS-7C91)",
        ]
    );
    let product = shown["smbios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "product")
        .unwrap();
    assert_eq!(product["source"], "profile");
    assert_eq!(product["value"], "Gaming, Desktop");
    let (_, text, _) = run(crate::common::vmrun(dir.path())
        .env("VMRUN_SYSROOT", &root)
        .args(["show", "vm.toml", "--runtime-dir"])
        .arg(dir.path().join("run")));
    assert!(
        text.contains("#   type 2 board_product = \"MAG B550 TOMAHAWK (MS-7C91)\" (from the host)"),
        "{text}"
    );
    let (_, checked, _) = run(crate::common::vmrun(dir.path())
        .env("VMRUN_SYSROOT", &root)
        .args(["check", "vm.toml", "--runtime-dir"])
        .arg(dir.path().join("run")));
    assert!(
        checked.contains(&format!(
            "8 host values read from {}",
            root.join("sys/class/dmi/id").display()
        )),
        "{checked}"
    );
}

#[test]
fn vhost_is_used_for_virtio_on_tap_and_bridge_only_when_the_host_has_vhost_net() {
    let dir = crate::common::tempdir();
    let netdev = |text: &str, vhost_net: bool| -> String {
        let (config, _) = validate_text(dir.path(), "n", text).unwrap();
        let facts = vmrun::plan::HostFacts {
            vhost_net,
            ..Default::default()
        };
        let base = vmrun::plan::BaseDirs {
            state: "/s".into(),
            runtime: "/r".into(),
        };
        let plan =
            vmrun::plan::Plan::new(&config, &vmrun::plan::BootFirmware::SeaBios, &base, &facts)
                .unwrap();
        let at = plan.argv.iter().position(|a| a == "-netdev").unwrap();
        plan.argv[at + 1].clone()
    };
    let tap = "[network]\nmode = \"tap\"\ntap = \"vmtap0\"\n";
    assert_eq!(
        netdev(tap, true),
        "tap,id=net0,ifname=vmtap0,script=no,downscript=no,vhost=on"
    );
    assert!(!netdev(tap, false).contains("vhost"));
    let bridge = "[network]\nmode = \"bridge\"\nbridge = \"br0\"\n";
    // A bridge is reached through the tap vmrun makes for the VM (see host_session's test).
    let bridged = netdev(bridge, true);
    assert!(
        bridged.starts_with("tap,id=net0,ifname=vmrun")
            && bridged.ends_with(",script=no,downscript=no,vhost=on"),
        "{bridged}"
    );
    let e1000e = "[network]\nmode = \"bridge\"\nbridge = \"br0\"\nmodel = \"e1000e\"\n";
    assert!(!netdev(e1000e, true).contains("vhost"), "vhost is virtio's");
    assert_eq!(netdev("", true), "user,id=net0");
}

/// A stub program on PATH printing `banner` for `--version`.
fn stub(dir: &Path, name: &str, banner: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho '{banner}'\necho '{{\"features\": [\"tpm-2.0\"]}}'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn check_lines(dir: &Path, profile: &str, path_env: &str, topic: &str) -> (i32, Vec<String>) {
    std::fs::write(dir.join("vm.toml"), profile).unwrap();
    let (code, stdout, _) = run(crate::common::vmrun(dir)
        .env("PATH", path_env)
        .args(["check", "vm.toml", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run")));
    let lines = stdout
        .lines()
        .filter(|l| l.contains(&format!(" {topic} ")))
        .map(str::to_string)
        .collect();
    (code, lines)
}

const SEABIOS_TCG: &str = "[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n";

#[test]
fn check_names_a_missing_or_old_swtpm_and_the_package_to_install() {
    let dir = crate::common::tempdir();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let qemu = vmrun::check::find_program(&crate::common::test_qemu()).unwrap();
    std::os::unix::fs::symlink(&qemu, bin.join("qemu-system-x86_64")).unwrap();
    let profile = format!("{SEABIOS_TCG}[tpm]\n");
    let (code, lines) = check_lines(dir.path(), &profile, &bin.to_string_lossy(), "tpm");
    assert_eq!(code, 3, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("`swtpm` is not on PATH")
            && l.contains("apt install swtpm swtpm-tools")),
        "{lines:#?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("`swtpm_setup` is not on PATH")));

    stub(
        &bin,
        "swtpm",
        "TPM emulator version 0.5.2, Copyright (c) 2014 IBM Corp.",
    );
    stub(&bin, "swtpm_setup", "TPM emulator setup tool version 0.5.2");
    let (code, lines) = check_lines(dir.path(), &profile, &bin.to_string_lossy(), "tpm");
    assert_eq!(code, 3);
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("swtpm 0.5 is too old; vmrun needs 0.6 or newer")
            && l.contains("apt install swtpm swtpm-tools")),
        "{lines:#?}"
    );

    // The real ones, as scripts/install-deps.sh installs them.
    let (_, lines) = check_lines(dir.path(), &profile, "/usr/local/bin:/usr/bin:/bin", "tpm");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PASS") && l.contains("swtpm 0.")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("will be created by swtpm_setup on first run")),
        "{lines:#?}"
    );
}

#[test]
fn check_reports_the_sound_server_and_the_remote_display() {
    let dir = crate::common::tempdir();
    let profile = format!(
        "{SEABIOS_TCG}[audio]\nserver = \"{0}/no-server\"\ncookie = \"{0}/no-cookie\"\n\
         [display]\nremote = \"spice\"\n",
        dir.path().display()
    );
    let path = std::env::var("PATH").unwrap();
    let (code, lines) = check_lines(dir.path(), &profile, &path, "audio");
    assert_eq!(code, 3);
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("no sound server")
            && l.contains("pipewire-pulse")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("no cookie at")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PASS") && l.contains("PulseAudio backend (pa)")),
        "qemu-system-gui is installed here: {lines:#?}"
    );
    let (_, lines) = check_lines(dir.path(), &profile, &path, "display");
    let socket = dir.path().join("run/vm/qemu/spice.sock");
    assert!(
        lines.iter().any(|l| l.starts_with("PASS")
            && l.contains(&format!("remote-viewer spice+unix://{}", socket.display()))),
        "{lines:#?}"
    );
}
