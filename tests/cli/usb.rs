//! `vmrun usb`: hot-plug onto the xHCI controller of a running VM under real QEMU. No USB
//! device exists here: the host side is a fake `/sys/bus/usb/devices` under VMRUN_SYSROOT, and
//! QEMU accepts a `usb-host` whose device is absent (it waits for it), so the guest's device
//! tree (QOM, `info usb`) is what is checked.

use std::path::Path;

use serde_json::Value;

use crate::common::{repo_root, run, validate_text, vmrun};
use crate::run_e2e::Vm;

fn fake_usb_tree(root: &Path, devices: &[(&str, &str, &str, &str, &str)]) {
    let base = root.join("sys/bus/usb/devices");
    for (port, vendor, product, manufacturer, name) in devices {
        let dir = base.join(port);
        std::fs::create_dir_all(&dir).unwrap();
        let (bus, path) = port.split_once('-').unwrap();
        for (file, text) in [
            ("idVendor", *vendor),
            ("idProduct", *product),
            ("busnum", bus),
            ("devpath", path),
            ("manufacturer", *manufacturer),
            ("product", *name),
        ] {
            std::fs::write(dir.join(file), format!("{text}\n")).unwrap();
        }
    }
    // Root hubs and interfaces are in the same directory and are not devices to pass.
    std::fs::create_dir_all(base.join("usb1")).unwrap();
    std::fs::create_dir_all(base.join("1-4.2:1.0")).unwrap();
}

fn usb(vm: &Vm, sysroot: &Path, args: &[&str]) -> (i32, String, String) {
    run(vm
        .vmrun()
        .env("VMRUN_SYSROOT", sysroot)
        .args(["usb", &vm.name])
        .args(args))
}

fn qmp(vm: &Vm, command: &str, arguments: Value) -> Value {
    let (code, stdout, stderr) =
        run(vm
            .vmrun()
            .args(["qmp", &vm.name, command, &arguments.to_string()]));
    assert_eq!(code, 0, "{command}: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// The guest's usb-host devices, from QEMU's device tree: id → parent bus.
fn guest_usb_hosts(vm: &Vm) -> Vec<(String, String)> {
    let children = qmp(
        vm,
        "qom-list",
        serde_json::json!({"path": "/machine/peripheral"}),
    );
    children
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "child<usb-host>")
        .map(|c| {
            let id = c["name"].as_str().unwrap().to_string();
            let bus = qmp(
                vm,
                "qom-get",
                serde_json::json!({"path": format!("/machine/peripheral/{id}"), "property": "parent_bus"}),
            );
            (id, bus.as_str().unwrap().to_string())
        })
        .collect()
}

fn property(vm: &Vm, id: &str, name: &str) -> Value {
    qmp(
        vm,
        "qom-get",
        serde_json::json!({"path": format!("/machine/peripheral/{id}"), "property": name}),
    )
}

const XHCI: &str = "/machine/peripheral/xhci/xhci.0";

#[test]
fn attach_by_ids_and_by_port_detach_and_nothing_comes_back_on_the_next_start() {
    let sysroot = crate::common::tempdir();
    fake_usb_tree(
        sysroot.path(),
        &[
            ("1-4.2", "046d", "c52b", "Logitech", "USB Receiver"),
            ("3-1", "1532", "0084", "Razer", "DeathAdder V2"),
        ],
    );
    let vm = Vm::seabios(
        "usb-hot",
        "[pinning]\nvcpus = [1, 1]\nemulator = \"0\"\n",
        // QEMU as root: this VM starts against the real host, whose USB node at 2-1 (if any)
        // must not be handed to another user by a test. The handover has its own test on a
        // fake root.
        "[[usb]]\nport = \"2-1\"\n[qemu]\nuser = \"root\"\n",
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    assert_eq!(
        guest_usb_hosts(&vm),
        [("usb0".to_string(), XHCI.to_string())]
    );

    // By vendor:product: found at its port in sysfs and plugged there.
    let (code, _, stderr) = usb(&vm, sysroot.path(), &["attach", "046d:c52b"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr
            .contains("attached 1-4.2 (046d:c52b Logitech USB Receiver) to usb-hot as `usb-1-4.2`"),
        "{stderr}"
    );
    // By port.
    let (code, _, stderr) = usb(&vm, sysroot.path(), &["attach", "3-1"]);
    assert_eq!(code, 0, "{stderr}");
    let mut hosts = guest_usb_hosts(&vm);
    hosts.sort();
    assert_eq!(
        hosts,
        [
            ("usb-1-4.2".to_string(), XHCI.to_string()),
            ("usb-3-1".to_string(), XHCI.to_string()),
            ("usb0".to_string(), XHCI.to_string()),
        ]
    );
    assert_eq!(property(&vm, "usb-1-4.2", "hostbus"), 1);
    assert_eq!(property(&vm, "usb-1-4.2", "hostport"), "4.2");
    assert_eq!(property(&vm, "usb-1-4.2", "vendorid"), 0x046d);
    assert_eq!(property(&vm, "usb-3-1", "hostport"), "1");
    let info = qmp(
        &vm,
        "human-monitor-command",
        serde_json::json!({"command-line": "info usb"}),
    );
    let info = info.as_str().unwrap();
    assert!(
        info.contains("ID: usb-1-4.2") && info.contains("ID: usb-3-1"),
        "{info}"
    );

    let (code, _, stderr) = usb(&vm, sysroot.path(), &["attach", "1-4.2"]);
    assert_eq!(code, 1, "the same device twice: {stderr}");
    assert!(
        stderr.contains("already in usb-hot as `usb-1-4.2`"),
        "{stderr}"
    );

    let (code, stdout, stderr) = usb(&vm, sysroot.path(), &["list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let listing: Value = serde_json::from_str(&stdout).unwrap();
    let guest: Vec<(&str, bool)> = listing["guest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["id"].as_str().unwrap(),
                g["from_profile"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        guest.contains(&("usb0", true)) && guest.contains(&("usb-3-1", false)),
        "{listing}"
    );
    let host = &listing["host"];
    assert_eq!(host[0]["port"], "1-4.2");
    assert_eq!(host[0]["id"], "046d:c52b");
    assert_eq!(host[0]["manufacturer"], "Logitech");
    assert_eq!(host[1]["product"], "DeathAdder V2");
    assert_eq!(
        host.as_array().unwrap().len(),
        2,
        "no hubs, no interfaces: {listing}"
    );
    let (code, text, _) = usb(&vm, sysroot.path(), &["list"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("usb-3-1") && text.contains("Razer DeathAdder V2"),
        "{text}"
    );

    // Detach by vendor:product finds the device plugged by port.
    let (code, _, stderr) = usb(&vm, sysroot.path(), &["detach", "046d:c52b"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("detached `usb-1-4.2`"), "{stderr}");
    let ids: Vec<String> = guest_usb_hosts(&vm).into_iter().map(|h| h.0).collect();
    assert!(!ids.contains(&"usb-1-4.2".to_string()), "{ids:?}");
    let (code, _, stderr) = usb(&vm, sysroot.path(), &["detach", "1-4.2"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("1-4.2 is not in usb-hot"), "{stderr}");

    // usb-3-1 was attached by hand: the next start has only the profile's device.
    assert_eq!(vm.stop(), 5);
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    assert_eq!(
        guest_usb_hosts(&vm),
        [("usb0".to_string(), XHCI.to_string())]
    );
    assert_eq!(vm.stop(), 5);
}

#[test]
fn attach_refuses_a_stopped_vm_a_bad_device_and_an_ambiguous_id() {
    let sysroot = crate::common::tempdir();
    fake_usb_tree(
        sysroot.path(),
        &[
            ("1-1", "054c", "0ce6", "Sony", "DualSense"),
            ("1-2", "054c", "0ce6", "Sony", "DualSense"),
        ],
    );
    let vm = Vm::seabios("usb-cold", "", "");
    let (code, _, stderr) = usb(&vm, sysroot.path(), &["attach", "054c:0ce6"]);
    assert_eq!(code, 7, "{stderr}");
    assert!(stderr.contains("`usb-cold` is not running"), "{stderr}");
    for bad in ["046d", "1-4:1.0", "1-0", "zz:c52b"] {
        let (code, _, stderr) = usb(&vm, sysroot.path(), &["attach", bad]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(
            stderr.contains("VENDOR:PRODUCT")
                && stderr.contains("`046d:c52b`")
                && stderr.contains("`1-4.2`"),
            "{bad}: {stderr}"
        );
    }
    let (code, stdout, _) = usb(&vm, sysroot.path(), &["list"]);
    assert_eq!(code, 7);
    assert!(
        stdout.contains("usb-cold: not running") && stdout.contains("1-2"),
        "{stdout}"
    );

    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    let (code, _, stderr) = usb(&vm, sysroot.path(), &["attach", "054c:0ce6"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "2 devices on this host are 054c:0ce6: 1-1 (Sony DualSense), 1-2 (Sony DualSense)"
        ),
        "{stderr}"
    );
    assert!(guest_usb_hosts(&vm).is_empty());
    assert_eq!(vm.stop(), 5);
}

#[test]
fn usb_entries_take_a_device_or_a_port() {
    let dir = crate::common::tempdir();
    let (config, _) = validate_text(
        dir.path(),
        "ok",
        "[[usb]]\ndevice = \"046d:c52b\"\n[[usb]]\nport = \"1-4.2\"\n",
    )
    .unwrap();
    let spelled: Vec<String> = config.usb.iter().map(ToString::to_string).collect();
    assert_eq!(spelled, ["046d:c52b", "1-4.2"]);
    let text = "[[usb]]\nport = \"1-4.2\"\n[[usb]]\nport = \"1-x\" # bad\n[[usb]]\ndevice = \"046d:c52b\"\nport = \"1-1\" # both\n";
    let errors = validate_text(dir.path(), "bad", text).unwrap_err();
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let joined = messages.join("\n");
    assert!(
        joined.contains(&format!(
            "bad.toml:{}: usb[1].port:",
            crate::common::line_of(text, "# bad")
        )),
        "{joined}"
    );
    assert!(joined.contains("e.g. `1-4.2`"), "{joined}");
    assert!(
        joined.contains("usb[2].port: give `device` or `port`, not both"),
        "{joined}"
    );
    let (_, stdout, _) =
        run(vmrun(&repo_root()).args(["show", &dir.path().join("ok.toml").to_string_lossy()]));
    assert!(
        stdout.contains("usb-host,id=usb1,bus=xhci.0,hostbus=1,hostport=4.2"),
        "{stdout}"
    );
}

/// A fake `/dev/bus/usb/BBB/DDD` node for a device of `fake_usb_tree`, with its devnum in
/// sysfs: root's with mode 0664, as udev leaves them.
fn fake_usb_node(root: &Path, port: &str, bus: u32, devnum: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        root.join("sys/bus/usb/devices").join(port).join("devnum"),
        format!("{devnum}\n"),
    )
    .unwrap();
    let node = format!("dev/bus/usb/{bus:03}/{devnum:03}");
    std::fs::create_dir_all(root.join(&node).parent().unwrap()).unwrap();
    std::fs::write(root.join(&node), "").unwrap();
    std::fs::set_permissions(root.join(&node), std::fs::Permissions::from_mode(0o664)).unwrap();
    node
}

fn owner(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

/// QEMU runs as `nobody` and opens a hot-plugged device's node itself: `attach` hands the
/// node over (journaled with the VM's changes), `detach` gives it back, and so does the end
/// of the VM for a device still attached. The VM runs over the same fake root as the
/// commands, so that teardown finds the same node.
#[test]
fn attach_gives_the_node_to_the_qemu_user_and_detach_and_stop_give_it_back() {
    let sysroot = crate::common::tempdir();
    fake_usb_tree(
        sysroot.path(),
        &[("1-4.2", "046d", "c52b", "Logitech", "USB Receiver")],
    );
    let node = sysroot
        .path()
        .join(fake_usb_node(sysroot.path(), "1-4.2", 1, 7));
    std::fs::create_dir_all(sysroot.path().join("dev/shm")).unwrap();
    let vm = Vm::new(
        "usb-own",
        "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[firmware]\ntype = \"seabios\"\n\
         [network]\nmode = \"none\"\n[shutdown]\ntimeout = 1\n",
    );
    let (code, _, stderr) = run(vm
        .vmrun()
        .env("VMRUN_SYSROOT", sysroot.path())
        .arg("run")
        .arg(&vm.profile)
        .arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    let journal = vm.state_dir().join("usb-own/journal");

    let (code, _, stderr) = usb(&vm, sysroot.path(), &["attach", "046d:c52b"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(owner(&node), (65534, 65534, 0o664), "QEMU's while attached");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(
        text.contains(r#""undo":"restore_owner","path":"/dev/bus/usb/001/007","uid":0,"gid":0"#),
        "{text}"
    );

    let (code, _, stderr) = usb(&vm, sysroot.path(), &["detach", "1-4.2"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(owner(&node), (0, 0, 0o664), "root's again after detach");
    assert!(!journal.exists(), "nothing left to give back");

    let (code, _, stderr) = usb(&vm, sysroot.path(), &["attach", "1-4.2"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(owner(&node).0, 65534);
    let (code, _, stderr) = run(vm
        .vmrun()
        .env("VMRUN_SYSROOT", sysroot.path())
        .args(["stop", "usb-own"]));
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(
        owner(&node),
        (0, 0, 0o664),
        "root's again after the VM ended"
    );
    assert!(!journal.exists());
}
