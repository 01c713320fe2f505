//! `vmrun import libvirt` and `vmrun export libvirt`, measured against libvirt itself: its own
//! test suite's domains with the argv libvirt expects for them, published passthrough desktops,
//! seed 004, and a private libvirtd that checks (`virsh define`) and converts
//! (`virsh domxml-to-native`) what vmrun exports.

use std::collections::{BTreeMap, BTreeSet};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vmrun::plan::argv::{argv_with_paths, PassedFile};

use vmrun::profile::ProfileSource;

use crate::common::{repo_root, run, validate_text, vmrun};

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/libvirt")
}

/// `vmrun import libvirt FILE`: the profile and the notes it printed on stderr.
fn import(dir: &Path, xml: &Path) -> (String, Vec<String>) {
    let (code, stdout, stderr) = run(vmrun(dir).args(["import", "libvirt"]).arg(xml));
    assert_eq!(code, 0, "import of {} failed: {stderr}", xml.display());
    let notes = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("vmrun: import: "))
        .map(str::to_string)
        .collect();
    (stdout, notes)
}

/// `vmrun show --json` of a profile text, written as `dir/NAME.toml`.
fn show_json(dir: &Path, name: &str, profile: &str) -> serde_json::Value {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, profile).unwrap();
    let (code, stdout, stderr) = run(vmrun(dir)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .args(["show", "--json"])
        .arg(&path));
    assert_eq!(
        code, 0,
        "show of the imported {name} failed: {stderr}\n{profile}"
    );
    serde_json::from_str(&stdout).unwrap()
}

/// The argv of `show_json`, with each file QEMU gets as a descriptor named by its path
/// instead (libvirt's argv names paths): what the two say about the VM can be compared.
fn show_argv(dir: &Path, name: &str, profile: &str) -> Vec<String> {
    let json = show_json(dir, name, profile);
    let argv = crate::common::shown_argv(&json);
    let files: Vec<PassedFile> = serde_json::from_value(json["passed_files"].clone()).unwrap();
    argv_with_paths(&argv, &files)
}

/// An argv from a libvirt `.args` file or `domxml-to-native`: environment first, then QEMU.
fn libvirt_argv(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let words = shlex::split(&joined).expect("libvirt's argv is shell-quoted");
    words
        .into_iter()
        .skip_while(|word| !word.starts_with('/'))
        .collect()
}

/// A QEMU option value as key → value: libvirt writes JSON, vmrun `key=value,...`.
fn option_map(value: &str) -> (String, BTreeMap<String, String>) {
    if value.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(value).unwrap();
        let map = json
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Bool(true) => "on".into(),
                    serde_json::Value::Bool(false) => "off".into(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect::<BTreeMap<_, _>>();
        let head = map
            .get("driver")
            .or_else(|| map.get("qom-type"))
            .cloned()
            .unwrap_or_default();
        return (head, map);
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' && chars.peek() == Some(&',') {
            chars.next();
            current.push(',');
        } else if c == ',' {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    let head = parts.remove(0);
    let map = parts
        .into_iter()
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (part, "on".to_string()),
        })
        .collect();
    (head, map)
}

fn size_bytes(text: &str) -> u64 {
    let text = text.trim_start_matches("size=");
    let (digits, unit): (String, String) = text.chars().partition(|c| c.is_ascii_digit());
    let number: u64 = digits.parse().unwrap();
    number
        * match unit.as_str() {
            "" if number < 1 << 20 => 1 << 20,
            "" => 1,
            "k" | "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            other => panic!("unit {other}"),
        }
}

fn on_off(value: &str) -> String {
    match value {
        "on" | "true" | "yes" => "on".into(),
        "off" | "false" | "no" => "off".into(),
        other => other.into(),
    }
}

/// The facts of a QEMU argv the issue asks to compare: memory, vCPUs, CPU model and flags
/// (Hyper-V vendor id among them), host PCI addresses and ROM files, firmware, evdev,
/// shared memory, SMBIOS, hugepages, TPM; and the clock, guest suspend, the audio backend and
/// the remote display.
///
/// Not facts, because libvirt cannot say them the same way: the remote display's socket path
/// (libvirt makes its own socket in its own directory; the kind, a socket, is compared), and
/// the PulseAudio cookie (vmrun passes it in QEMU's environment, PULSE_COOKIE; libvirt has no
/// setting for it). vmrun's pvpanic is libvirt's <panic model='isa'/>: the same `pvpanic`
/// device, compared with the other devices.
fn facts(argv: &[String]) -> BTreeSet<String> {
    let mut facts = BTreeSet::new();
    let mut index = 1;
    while index + 1 < argv.len() {
        let (option, value) = (argv[index].as_str(), argv[index + 1].as_str());
        index += 1;
        if !option.starts_with('-') {
            continue;
        }
        if option == "-no-hpet" {
            facts.insert("hpet=off".to_string());
            continue;
        }
        let (head, map) = option_map(value);
        match option {
            "-rtc" => {
                // base=utc is QEMU's default, which vmrun leaves unsaid and libvirt says.
                for part in value.split(',') {
                    if part != "base=utc" {
                        facts.insert(format!("rtc.{part}"));
                    }
                }
            }
            "-global"
                if value.starts_with("kvm-pit.lost_tick_policy=")
                    || value.starts_with("ICH9-LPC.disable_s") =>
            {
                facts.insert(value.to_string());
            }
            "-machine" if map.get("hpet").is_some_and(|v| on_off(v) == "off") => {
                facts.insert("hpet=off".to_string());
            }
            "-audiodev" => {
                // libvirt adds a `none` backend to every domain, sound card or not: only a
                // backend that plays somewhere is a fact.
                let driver = map.get("driver").cloned().unwrap_or(head.clone());
                if driver != "none" {
                    facts.insert(format!("audiodev={driver}"));
                }
            }
            "-spice" => {
                let listen = if value
                    .split(',')
                    .any(|part| matches!(part, "unix" | "unix=on"))
                {
                    "socket".to_string()
                } else {
                    format!(
                        "{}:{}",
                        map.get("addr").cloned().unwrap_or_default(),
                        map.get("port").cloned().unwrap_or_default()
                    )
                };
                facts.insert(format!("spice={listen}"));
                if map
                    .get("disable-ticketing")
                    .is_some_and(|v| on_off(v) == "on")
                {
                    facts.insert("spice.password=none".to_string());
                }
            }
            "-vnc" => {
                let listen = if head.starts_with("unix:") {
                    "socket".to_string()
                } else {
                    head.clone()
                };
                facts.insert(format!("vnc={listen}"));
            }
            "-m" => {
                facts.insert(format!("memory={}", size_bytes(value)));
            }
            "-smp" => {
                facts.insert(format!("vcpus={head}"));
            }
            "-cpu" => {
                facts.insert(format!("cpu.model={head}"));
                for (key, value) in &map {
                    // libvirt states QEMU's default for host-passthrough explicitly.
                    if key == "migratable" && value == "on" {
                        continue;
                    }
                    facts.insert(format!("cpu.{key}={}", on_off(value)));
                }
            }
            "-device" if head == "vfio-pci" => {
                facts.insert(format!("vfio={}", map["host"]));
                if let Some(rom) = map.get("romfile") {
                    facts.insert(format!("romfile={rom}"));
                }
                if let Some(order) = map.get("bootindex") {
                    facts.insert(format!("bootindex {}={order}", map["host"]));
                }
            }
            "-device" if head == "ivshmem-doorbell" => {
                facts.insert(format!("ivshmem-doorbell={}", map["id"]));
            }
            "-blockdev" => {
                let node = map.get("node-name").cloned().unwrap_or_default();
                if node == "libvirt-pflash0-storage" || node == "ovmf-code-file" {
                    facts.insert(format!("firmware={}", map["filename"]));
                }
            }
            "-object" if head == "input-linux" => {
                facts.insert(format!("evdev={}", map["evdev"]));
                if let Some(toggle) = map.get("grab-toggle") {
                    facts.insert(format!("evdev.grab-toggle={toggle}"));
                }
            }
            "-object" if head.starts_with("memory-backend") => {
                if let Some(path) = map.get("mem-path").filter(|p| p.starts_with("/dev/shm")) {
                    facts.insert(format!("shmem={path}:{}", size_bytes(&map["size"])));
                }
                let hugepages = map.get("hugetlbsize").map(|s| size_bytes(s)).or_else(|| {
                    map.get("mem-path")
                        .filter(|p| p.contains("/dev/hugepages2M"))
                        .map(|_| 2 << 20)
                });
                if let Some(size) = hugepages {
                    facts.insert(format!("hugepages={size}"));
                }
            }
            "-smbios" => {
                facts.insert(format!("smbios={value}"));
            }
            "-tpmdev" => {
                facts.insert("tpm".into());
            }
            _ => {}
        }
    }
    facts
}

/// The word a note must name for a fact vmrun does not reproduce.
fn keyword(fact: &str) -> String {
    let (key, value) = fact.split_once('=').unwrap_or((fact, ""));
    match key {
        k if k.starts_with("cpu.hv-") => k.trim_start_matches("cpu.hv-").to_string(),
        k if k.starts_with("cpu.") => k.trim_start_matches("cpu.").to_string(),
        "shmem" => value
            .trim_start_matches("/dev/shm/")
            .split(':')
            .next()
            .unwrap()
            .to_string(),
        "evdev.grab-toggle" => "grab".into(),
        "tpm" => "tpm".into(),
        _ => value.to_string(),
    }
}

fn explained(fact: &str, notes: &[String]) -> bool {
    let word = keyword(fact).replace('_', "-");
    !word.is_empty()
        && notes
            .iter()
            .any(|note| note.replace('_', "-").contains(&word))
}

/// libvirt's own test domains: the imported profile's argv carries the facts of the argv
/// libvirt expects, and every fact it does not carry is named by a note.
#[test]
fn libvirt_test_suite_domains_keep_their_facts() {
    let cases = [
        "hostdev-vfio",
        "cputune",
        "hyperv",
        "kvm-features",
        "hugepages-default",
        "shmem-plain-doorbell",
        "input-linux",
        "smbios",
        "tpm-emulator",
        "firmware-manual-efi-nvram-template",
    ];
    let dir = crate::common::tempdir();
    for case in cases {
        let (profile, notes) = import(dir.path(), &fixtures().join(format!("{case}.xml")));
        let ours = facts(&show_argv(dir.path(), case, &profile));
        let expected_text =
            std::fs::read_to_string(fixtures().join(format!("{case}.x86_64-latest.args"))).unwrap();
        let theirs = facts(&libvirt_argv(&expected_text));
        assert!(
            theirs.iter().any(|f| f.starts_with("memory=")),
            "{case}: no memory in {theirs:?}"
        );
        let missing: Vec<&String> = theirs
            .iter()
            .filter(|fact| !ours.contains(*fact) && !explained(fact, &notes))
            .collect();
        assert!(
            missing.is_empty(),
            "{case}: libvirt's argv has {missing:?}, vmrun's has not and no note says why.\n\
             vmrun: {ours:?}\nnotes: {notes:#?}\n{profile}"
        );
        let extra: Vec<&String> = ours
            .iter()
            .filter(|fact| !theirs.contains(*fact) && !explained(fact, &notes))
            .collect();
        assert!(
            extra.is_empty(),
            "{case}: vmrun's argv adds {extra:?} that libvirt's has not.\nnotes: {notes:#?}\n{profile}"
        );
    }
}

/// What the tests read from a domain XML, independently of the importer.
struct DomainFacts {
    memory_kib: u64,
    vcpus: u32,
    pci_hosts: BTreeSet<String>,
    romfiles: BTreeSet<String>,
    vendor_id: Option<String>,
}

fn domain_facts(xml: &str) -> DomainFacts {
    let document = roxmltree::Document::parse(xml).unwrap();
    let find = |name: &str| document.descendants().find(|n| n.has_tag_name(name));
    let memory = find("memory").unwrap();
    let memory_kib = memory.text().unwrap().trim().parse::<u64>().unwrap()
        * match memory.attribute("unit").unwrap_or("KiB") {
            "KiB" => 1,
            "GiB" => 1 << 20,
            other => panic!("unit {other}"),
        };
    let mut pci_hosts = BTreeSet::new();
    let mut romfiles = BTreeSet::new();
    for hostdev in document
        .descendants()
        .filter(|n| n.has_tag_name("hostdev") && n.attribute("type") == Some("pci"))
    {
        let address = hostdev
            .descendants()
            .find(|n| n.has_tag_name("source"))
            .and_then(|s| s.children().find(|n| n.has_tag_name("address")))
            .unwrap();
        let hex = |name: &str| {
            u32::from_str_radix(
                address.attribute(name).unwrap().trim_start_matches("0x"),
                16,
            )
            .unwrap()
        };
        pci_hosts.insert(format!(
            "{:04x}:{:02x}:{:02x}.{:x}",
            hex("domain"),
            hex("bus"),
            hex("slot"),
            hex("function")
        ));
        if let Some(file) = hostdev
            .children()
            .find(|n| n.has_tag_name("rom"))
            .and_then(|r| r.attribute("file"))
        {
            romfiles.insert(file.to_string());
        }
    }
    DomainFacts {
        memory_kib,
        // The vCPUs online at start: vmrun has no hot-plug and starts only those.
        vcpus: find("vcpu")
            .unwrap()
            .attribute("current")
            .or(find("vcpu").unwrap().text())
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
        pci_hosts,
        romfiles,
        vendor_id: find("vendor_id").and_then(|v| v.attribute("value").map(str::to_string)),
    }
}

/// Published desktops and seed 004: the profile validates, and its argv passes the same host
/// devices and ROM files with the same memory, vCPUs and vendor id.
#[test]
fn published_desktops_and_seed_004_import_into_valid_profiles() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("desktops"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.push(fixtures().join("seed-004-x99-windows.xml"));
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let dir = crate::common::tempdir();
    for file in files {
        let xml = std::fs::read_to_string(&file).unwrap();
        let expected = domain_facts(&xml);
        let (profile, notes) = import(dir.path(), &file);
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let argv = show_argv(dir.path(), &name, &profile);
        let ours = facts(&argv);
        assert!(
            ours.contains(&format!("memory={}", expected.memory_kib * 1024)),
            "{name}: {ours:?}"
        );
        assert!(
            ours.contains(&format!("vcpus={}", expected.vcpus)),
            "{name}: {ours:?}"
        );
        let hosts: BTreeSet<String> = ours
            .iter()
            .filter_map(|f| f.strip_prefix("vfio="))
            .map(str::to_string)
            .collect();
        assert_eq!(hosts, expected.pci_hosts, "{name}");
        for rom in &expected.romfiles {
            assert!(ours.contains(&format!("romfile={rom}")), "{name}: {rom}");
        }
        // Spaces and all, as libvirt and QEMU take it.
        if let Some(vendor) = &expected.vendor_id {
            assert!(
                ours.contains(&format!("cpu.hv-vendor-id={vendor}")),
                "{name}: {ours:?}"
            );
        }
        // What was left out is at the top of the profile too, naming the element.
        for note in &notes {
            let element = note.split(": ").nth(1).unwrap();
            assert!(
                profile.contains(element),
                "{name}: {element} not in profile"
            );
        }
        // The validator agrees with `show`, with no error.
        validate_text(dir.path(), &name, &profile).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

#[test]
fn import_translates_what_the_desktops_rely_on() {
    let dir = crate::common::tempdir();
    let desktops = fixtures().join("desktops");
    // Zile995: ROM file, USB devices, topoext, a bridge, unpinned vCPUs placed on emulatorpin.
    let (profile, notes) = import(dir.path(), &desktops.join("zile995-polaris-win10.xml"));
    for line in [
        "romfile = \"/var/lib/libvirt/vbios/sapphire.rom\"",
        "device = \"046d:c526\"",
        "device = \"04d9:1603\"",
        "features = [\"+host-cache-info\", \"+topoext\", \"+svm\", \"+apic\", \"+hypervisor\", \"+invtsc\"]",
        "bridge = \"br0\"",
        // 8 of 12 vCPUs online: the offline 4-7 are not started, so none sits on the
        // emulator's CPU 0; 6 cores × 2 threads become 4 × 2.
        "vcpus = [1, 7, 2, 8, 4, 10, 5, 11]",
        "sockets = 1\ncores = 4\nthreads = 2",
        "emulator = \"0,3,6,9\"",
        "scheduler = \"other\"",
    ] {
        assert!(profile.contains(line), "missing {line}:\n{profile}");
    }
    assert!(notes
        .iter()
        .any(|n| n.contains("8 of 12 vCPUs") && n.contains("[0, 1, 2, 3, 8, 9, 10, 11]")));
    assert!(
        !notes.iter().any(|n| n.contains("host CPU 0")),
        "{notes:#?}"
    );
    // cafreo: Looking Glass <shmem>, secure boot from the loader; SPICE on a port libvirt
    // picks becomes vmrun's socket, the ich9 card stays and plays nowhere, as with libvirt's
    // audio type='spice' without a client: both with a note.
    let (profile, notes) = import(dir.path(), &desktops.join("cafreo-looking-glass-win10.xml"));
    assert!(profile.contains("[looking_glass]\nsize = \"32M\"\npath = \"/dev/shm/looking-glass\""));
    assert!(profile.contains("secure_boot = true"));
    assert!(profile.contains("model = \"Skylake-Client-noTSX-IBRS\""));
    assert!(
        profile.contains("remote = \"spice\"\nlisten = \"unix\""),
        "{profile}"
    );
    assert!(
        profile.contains("[audio]\nbackend = \"none\"\ndevice = \"ich9\""),
        "{profile}"
    );
    for element in [
        "<graphics type='spice'",
        "<audio id='1' type='spice'>",
        "<image compression='off'>",
        "<watchdog",
    ] {
        assert!(
            notes.iter().any(|n| n.contains(element)),
            "{element} not noted: {notes:#?}"
        );
    }
    // JustArchi: i440fx becomes q35 with a note; evdev from qemu:commandline; kvm=off.
    let (profile, notes) = import(dir.path(), &desktops.join("justarchi-vfio-win10.xml"));
    assert!(!profile.contains("i440fx") || profile.contains("# "));
    assert!(notes
        .iter()
        .any(|n| n.contains("pc-i440fx-3.1") && n.contains("q35")));
    assert!(profile.contains("usb-Corsair_Corsair_Gaming_K70_LUX_Keyboard_0D02F023AECE00A457698FBDF5001941-if01-event-kbd"));
    assert!(profile.contains("hide_hypervisor = true"));
    assert!(notes.iter().any(|n| n.contains("QEMU_AUDIO_DRV")));
    // bryansteiner: hugepages, booting from a passed-through NVMe.
    let (profile, _) = import(dir.path(), &desktops.join("bryansteiner-win10.xml"));
    assert!(profile.contains("hugepages = \"2M\""));
    assert!(profile.contains("address = \"0000:04:00.0\"\nboot_order = 1"));
    // randomcoww: <input type='evdev'>, the second NIC and macvtap noted.
    let (profile, notes) = import(dir.path(), &desktops.join("randomcoww-homelab-de-1-pt.xml"));
    assert!(profile.contains("evdev = [\"/dev/input/by-id/usb-Logitech_USB_Receiver-if02-event-mouse\", \"/dev/input/by-id/usb-MOSART_Semi._wireless_dongle-event-kbd\"]"));
    assert!(notes.iter().any(|n| n.contains("one network interface")));
}

#[test]
fn import_reads_stdin_and_refuses_to_overwrite_without_force() {
    let dir = crate::common::tempdir();
    let xml = std::fs::read_to_string(fixtures().join("hostdev-vfio.xml")).unwrap();
    let mut child = vmrun(dir.path())
        .args(["import", "libvirt", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let from_stdin = String::from_utf8(output.stdout).unwrap();
    assert!(from_stdin.contains("address = \"0000:06:12.1\""));

    let target = dir.path().join("guest.toml");
    std::fs::write(&target, "keep me").unwrap();
    let file = fixtures().join("hostdev-vfio.xml");
    let (code, _, stderr) = run(vmrun(dir.path())
        .args(["import", "libvirt"])
        .arg(&file)
        .arg("-o")
        .arg(&target));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    let (code, _, stderr) = run(vmrun(dir.path())
        .args(["import", "libvirt", "--force", "-o"])
        .arg(&target)
        .arg(&file));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), from_stdin);

    let (code, _, stderr) = run(vmrun(dir.path())
        .args(["import", "libvirt"])
        .arg(repo_root().join("Cargo.toml")));
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot be read"), "{stderr}");
}

fn vm_profiles() -> Vec<PathBuf> {
    let mut profiles: Vec<PathBuf> = std::fs::read_dir(repo_root().join("vm-profiles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    profiles.sort();
    profiles
}

fn export(dir: &Path, profile: &Path) -> String {
    let (code, stdout, stderr) = run(vmrun(dir)
        .arg("--state-dir")
        .arg("/var/lib/vmrun")
        .args(["export", "libvirt"])
        .arg(profile));
    assert_eq!(code, 0, "export of {} failed: {stderr}", profile.display());
    stdout
}

/// import(export(p)) is the same VM as p for every profile the project ships.
#[test]
fn every_shipped_profile_survives_export_then_import() {
    let dir = crate::common::tempdir();
    for profile in vm_profiles() {
        let name = profile.file_stem().unwrap().to_string_lossy().into_owned();
        let xml_path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&xml_path, export(dir.path(), &profile)).unwrap();
        let (imported, _) = import(dir.path(), &xml_path);
        let source = ProfileSource::read(&profile).unwrap();
        let raw = vmrun::model::parse(&source).unwrap();
        let (mut original, _) = vmrun::model::validate(&source, &raw).unwrap();
        let (mut round_trip, _) = validate_text(dir.path(), &name, &imported).unwrap();
        original.profile_path = PathBuf::new();
        round_trip.profile_path = PathBuf::new();
        assert_eq!(round_trip, original, "{name}:\n{imported}");
    }
}

#[test]
fn new_profile_keys_reach_the_argv_and_are_checked() {
    let dir = crate::common::tempdir();
    let profile = "[cpu]\nfeatures = [\"+topoext\", \"-hypervisor\"]\n\
                   [[disk]]\npath = \"/d.img\"\nboot_order = 2\n\
                   [[pci]]\naddress = \"04:00.0\"\nboot_order = 1\n";
    let argv = show_argv(dir.path(), "keys", profile);
    assert!(
        argv.iter()
            .any(|a| a.starts_with("host,topoext=on,hypervisor=off")),
        "{argv:?}"
    );
    assert!(argv
        .iter()
        .any(|a| a.starts_with("vfio-pci,host=0000:04:00.0") && a.ends_with(",bootindex=1")));
    let errors = validate_text(
        dir.path(),
        "bad",
        "[cpu]\nfeatures = [\"topoext\", \"+a\", \"-a\"]\n[[disk]]\npath = \"/d.img\"\nboot_order = 1\n\
         [[pci]]\naddress = \"04:00.0\"\nboot_order = 1\n",
    )
    .unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let text = text.join("\n");
    assert!(
        text.contains("cpu.features: `topoext` is not `+name` or `-name`"),
        "{text}"
    );
    assert!(text.contains("`a` is already set"), "{text}");
    assert!(
        text.contains("pci[0].boot_order: disk[0] has boot_order 1 too"),
        "{text}"
    );
}

/// A libvirt daemon of our own: session mode, every directory in a temporary one, never the
/// machine's system daemon. As root it runs as `nobody` (session mode is for unprivileged
/// users), with the kvm group so that it can probe KVM.
struct PrivateLibvirt {
    dir: crate::common::TestDir,
    daemon: Child,
    as_nobody: bool,
}

fn program_exists(name: &str) -> bool {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin")])
        .any(|dir| dir.join(name).is_file())
}

/// The group that may open /dev/kvm (whatever its name: `kvm` on Debian), given to the
/// daemon's user as vmrun gives it to QEMU's; none when only root may.
fn kvm_gid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/dev/kvm").ok()?;
    (meta.gid() != 0 && meta.mode() & 0o060 == 0o060).then_some(meta.gid())
}

impl PrivateLibvirt {
    fn start() -> Option<Self> {
        let missing: Vec<&str> = ["libvirtd", "virsh", "virt-xml-validate"]
            .into_iter()
            .filter(|p| !program_exists(p))
            .collect();
        if !missing.is_empty() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install libvirt (scripts/install-deps.sh); missing {missing:?}"
            );
            eprintln!("SKIPPED: libvirt is not installed (missing {missing:?})");
            return None;
        }
        let dir = crate::common::tempdir();
        let as_nobody = nix::unistd::geteuid().is_root();
        for sub in ["run", "config", "cache", "home"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        if as_nobody {
            for entry in [".", "run", "config", "cache", "home"] {
                std::os::unix::fs::chown(dir.path().join(entry), Some(65534), Some(65534)).unwrap();
            }
        }
        let mut command = Self::command(dir.path(), as_nobody, "libvirtd");
        command
            .args(["--timeout", "120"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let daemon = command.spawn().unwrap();
        let socket = dir.path().join("run/libvirt/libvirt-sock");
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "libvirtd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(PrivateLibvirt {
            dir,
            daemon,
            as_nobody,
        })
    }

    fn command(dir: &Path, as_nobody: bool, program: &str) -> Command {
        let mut command = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534"]);
            match kvm_gid() {
                Some(gid) => c.arg(format!("--groups={gid}")),
                None => c.arg("--clear-groups"),
            };
            c.arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .current_dir(dir)
            .env("HOME", dir.join("home"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"));
        command
    }

    /// Writes `text` where the daemon's user can read it.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        if self.as_nobody {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        }
        path
    }

    fn virsh(&self, args: &[&str]) -> (i32, String, String) {
        run(Self::command(self.dir.path(), self.as_nobody, "virsh")
            .args(["-c", "qemu:///session"])
            .args(args))
    }
}

impl Drop for PrivateLibvirt {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A shipped profile as shown from another directory: its ROM files, relative to
/// vm-profiles/, are made absolute as the export made them.
fn profile_text(profile: &Path) -> String {
    std::fs::read_to_string(profile).unwrap().replace(
        "\"roms/",
        &format!("\"{}/", repo_root().join("vm-profiles/roms").display()),
    )
}

/// Removes every element `<tag ...>...</tag>` whose opening tag contains `marker`.
fn without_elements(xml: &str, tag: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    let open = format!("<{tag} ");
    let close = format!("</{tag}>");
    while let Some(start) = rest.find(&open) {
        let end_of_open = start + rest[start..].find('>').unwrap();
        if !rest[start..end_of_open].contains(marker) {
            out.push_str(&rest[..=end_of_open]);
            rest = &rest[end_of_open + 1..];
            continue;
        }
        let end = start + rest[start..].find(&close).unwrap() + close.len();
        out.push_str(&rest[..start]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Exported XML is checked by libvirt itself: the schema, a real daemon's `virsh define`, and
/// the argv libvirt would run, compared with vmrun's.
#[test]
fn libvirt_accepts_the_exported_domains_and_would_run_the_same_vm() {
    let Some(libvirt) = PrivateLibvirt::start() else {
        return;
    };
    // virt-xml-validate runs xmllint, a Recommends of libvirt-clients.
    crate::common::require_program("xmllint", "libxml2-utils");
    let (code, _, _) = libvirt.virsh(&["domcapabilities", "--virttype", "kvm"]);
    let libvirt_has_kvm = code == 0;
    eprintln!("libvirt offers KVM domains here: {libvirt_has_kvm}");
    let mut compared = 0;
    let dir = crate::common::tempdir();
    for profile in vm_profiles() {
        let name = profile.file_stem().unwrap().to_string_lossy().into_owned();
        let xml = export(dir.path(), &profile);
        let path = libvirt.file(&format!("{name}.xml"), &xml);

        let (code, stdout, stderr) =
            run(Command::new("virt-xml-validate").arg(&path).arg("domain"));
        assert_eq!(
            code, 0,
            "{name}: virt-xml-validate: {stdout}{stderr}\n{xml}"
        );

        // libvirt offers a KVM domain only where its daemon's user may open /dev/kvm; on a
        // host whose /dev/kvm is root's alone (or missing) only the schema is checked for
        // those, and the test says so.
        if xml.contains("<domain type='kvm'") && !libvirt_has_kvm {
            eprintln!(
                "{name}: libvirt here offers no KVM domains (its daemon runs as nobody, who may \
                 not open /dev/kvm): schema checked, define and argv comparison skipped"
            );
            continue;
        }
        compared += 1;
        let (code, stdout, stderr) = libvirt.virsh(&["define", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: virsh define: {stdout}{stderr}\n{xml}");
        let (code, dumped, _) = libvirt.virsh(&["dumpxml", &name]);
        assert_eq!(code, 0);
        assert!(dumped.contains("<vmrun:profile") || !xml.contains("<vmrun:profile"));

        // Differences, and why: domxml-to-native turns every <interface> into a tap device it
        // creates, which needs root; USB devices given by vendor:product must be plugged in
        // for libvirt to find their bus and port. Both are left out of the conversion; the
        // NIC and the USB ids are in the exported XML checked above.
        let convertible = without_elements(&xml, "interface", "type=");
        let convertible = without_elements(&convertible, "hostdev", "type='usb'");
        // SMBIOS from the host: libvirt's <smbios mode='host'/> reads the host's tables with
        // dmidecode at every start and lays no field over them (libvirt cannot express
        // smbios.from_host together with explicit fields); vmrun reads /sys/class/dmi/id and
        // lays the profile's fields over it. What the host says depends on the machine (a
        // container has no tables, and libvirt then refuses to convert), so both sides are
        // compared with the profile's own fields only: mode='sysinfo' for libvirt,
        // from_host = false for vmrun.
        let from_host = convertible.contains("<smbios mode='host'/>");
        if from_host {
            assert!(
                profile_text(&profile).contains("from_host = true"),
                "{name}: <smbios mode='host'/> without smbios.from_host"
            );
        }
        let own_fields = if convertible.contains("<sysinfo") {
            "<smbios mode='sysinfo'/>"
        } else {
            ""
        };
        let convertible = convertible.replace("<smbios mode='host'/>", own_fields);
        let path = libvirt.file(&format!("{name}-native.xml"), &convertible);
        let (code, native, stderr) =
            libvirt.virsh(&["domxml-to-native", "qemu-argv", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: domxml-to-native: {stderr}\n{convertible}");
        let theirs = facts(&libvirt_argv(&native));

        let mut profile_text = profile_text(&profile);
        if from_host {
            profile_text = profile_text.replace("from_host = true", "from_host = false");
        }
        let ours = facts(&show_argv(dir.path(), &name, &profile_text));
        assert_eq!(
            theirs, ours,
            "{name}: libvirt's argv differs from vmrun's\nlibvirt: {native}"
        );
        let devices = |argv: &[String]| -> Vec<String> {
            argv.windows(2)
                .filter(|w| w[0] == "-device")
                .map(|w| option_map(&w[1]).0)
                .filter(|d| {
                    !matches!(
                        d.as_str(),
                        "virtio-net-pci" | "e1000e" | "rtl8139" | "usb-host"
                    )
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let native_argv = libvirt_argv(&native);
        let show = show_argv(dir.path(), &name, &profile_text);
        assert_eq!(
            devices(&native_argv),
            devices(&show),
            "{name}: the same kinds of devices"
        );
    }
    // The TCG demo is always compared; with KVM every shipped profile is.
    assert!(
        compared >= 1,
        "no exported domain was compared with libvirt's argv"
    );
}

/// The guest addresses in the exported XML are the ones QEMU gives the devices under vmrun:
/// measured with QEMU's own `info pci` on vmrun's argv (a VM without passed devices, which
/// this machine cannot provide; root ports take their slot by the same rule).
#[test]
fn exported_guest_addresses_are_the_ones_qemu_assigns_under_vmrun() {
    if !program_exists("qemu-system-x86_64") {
        assert!(std::env::var_os("CI").is_none(), "CI must install QEMU");
        eprintln!("SKIPPED: qemu-system-x86_64 is not installed");
        return;
    }
    let dir = crate::common::tempdir();
    for image in ["a.img", "b.img", "c.img"] {
        crate::common::sized_file(&dir.path().join(image), 1 << 20);
    }
    let shm = format!("/dev/shm/vmrun-test-{}", std::process::id());
    let profile = format!(
        "[machine]\nmemory = \"256M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[firmware]\ntype = \"seabios\"\n\
         [[disk]]\npath = \"{d}/a.img\"\nformat = \"raw\"\n\
         [[disk]]\npath = \"{d}/b.img\"\nformat = \"raw\"\nbus = \"scsi\"\n\
         [[disk]]\npath = \"{d}/c.img\"\nformat = \"raw\"\nbus = \"nvme\"\n\
         [network]\nmode = \"user\"\n[display]\nvga = \"std\"\n[[usb]]\ndevice = \"046d:c52b\"\n\
         [looking_glass]\nsize = \"1M\"\npath = \"{shm}\"\n",
        d = dir.path().display()
    );
    let shown = show_json(dir.path(), "addresses", &profile);
    let profile_path = dir.path().join("addresses.toml");
    let (code, xml, stderr) = run(vmrun(dir.path())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["export", "libvirt"])
        .arg(&profile_path));
    assert_eq!(code, 0, "{stderr}");
    for sub in ["state/addresses", "run/addresses"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mut qemu = crate::common::qemu_command(&shown, dir.path())
        .args(["-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    qemu.stdin
        .take()
        .unwrap()
        .write_all(b"info pci\nquit\n")
        .unwrap();
    let output = qemu.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&shm);
    let monitor = String::from_utf8_lossy(&output.stdout);
    // slot → vendor:device, from QEMU.
    let mut measured = BTreeMap::new();
    let mut slot = None;
    for line in monitor.lines() {
        if let Some(rest) = line.trim().strip_prefix("Bus  0, device") {
            slot = rest
                .split(',')
                .next()
                .and_then(|s| s.trim().parse::<u32>().ok());
        } else if let (Some(s), Some((_, id))) = (slot, line.split_once("PCI device ")) {
            measured.insert(s, id.trim().to_string());
            slot = None;
        }
    }
    assert!(
        measured.len() > 4,
        "QEMU said: {monitor}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // slot → vendor:device, from the exported XML.
    let document = roxmltree::Document::parse(&xml).unwrap();
    let mut exported = BTreeMap::new();
    for node in document.descendants().filter(|n| n.is_element()) {
        let Some(address) = node
            .children()
            .find(|c| c.has_tag_name("address") && c.attribute("type") == Some("pci"))
        else {
            continue;
        };
        let id = match (node.tag_name().name(), node.attribute("type")) {
            ("video", _) => "1234:1111",
            ("controller", Some("scsi")) => "1af4:1004",
            ("controller", Some("usb")) => "1b36:000d",
            ("disk", _) => "1af4:1001",
            ("interface", _) => "1af4:1000",
            ("shmem", _) => "1af4:1110",
            (other, _) => panic!("unexpected addressed <{other}>"),
        };
        let slot = u32::from_str_radix(
            address.attribute("slot").unwrap().trim_start_matches("0x"),
            16,
        )
        .unwrap();
        exported.insert(slot, id.to_string());
    }
    // NVMe lives in <qemu:commandline> with its address.
    let nvme = xml
        .lines()
        .find(|l| l.contains("nvme,drive="))
        .and_then(|l| l.split("addr=0x").nth(1))
        .and_then(|rest| {
            u32::from_str_radix(rest.split(|c: char| !c.is_ascii_hexdigit()).next()?, 16).ok()
        })
        .expect("the NVMe device has an address");
    exported.insert(nvme, "1b36:0010".to_string());
    for (slot, id) in &exported {
        assert_eq!(
            measured.get(slot),
            Some(id),
            "slot {slot}: QEMU has {measured:?}\nXML:\n{xml}"
        );
    }
    assert_eq!(exported.len(), 7, "{exported:?}");
}

/// The keys no shipped profile has survive the round trip too: host steps through
/// `<metadata>`, a VNC display on an address with a password file, USB audio playing nowhere,
/// the PIT's delay policy with the HPET on, a USB port.
#[test]
fn keys_outside_the_shipped_profiles_survive_export_then_import() {
    let dir = crate::common::tempdir();
    std::fs::write(dir.path().join("vnc.pass"), "secret\n").unwrap();
    let profile = "[machine]\nmemory = \"1G\"\nsuspend = false\n[cpu]\ncores = 2\nthreads = 1\n\
                   [pinning]\nvcpus = [0, 1]\n[isolation]\nhost_cpus = \"2-3\"\ngovernor = \"keep\"\n\
                   [firmware]\ntype = \"seabios\"\n[[pci]]\naddress = \"03:00.0\"\nrescan = true\nreset_method = \"flr bus\"\n\
                   [[usb]]\nport = \"1-4.2\"\n[[usb]]\ndevice = \"046d:c52b\"\n\
                   [display]\nvga = \"std\"\nremote = \"vnc\"\nlisten = \"127.0.0.1:5901\"\npassword_file = \"vnc.pass\"\n\
                   [audio]\nbackend = \"none\"\ndevice = \"usb\"\n\
                   [clock]\nbase = \"utc\"\nrtc_driftfix = false\nhpet = true\npit_lost_ticks = \"delay\"\n\
                   [hooks]\nstarted = [\"/usr/local/bin/looking-glass-host\"]\n\
                   [qemu]\nsandbox = false\n";
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, profile).unwrap();
    let xml = export(dir.path(), &path);
    for element in [
        "<graphics type='vnc' port='5901' autoport='no'>",
        "<sound model='usb'>",
        "<audio id='1' type='none'/>",
        "<timer name='pit' tickpolicy='delay'/>",
        "<timer name='hpet' present='yes'/>",
        "<suspend-to-mem enabled='no'/>",
        "hostbus=1,hostport=4.2",
        "<vmrun:isolation host-cpus='2-3' governor='keep'/>",
        "<vmrun:pci address='0000:03:00.0' rescan='yes'/>",
        "<vmrun:pci address='0000:03:00.0' reset-method='flr bus'/>",
        "<vmrun:qemu sandbox='no'/>",
    ] {
        assert!(xml.contains(element), "{element} missing:\n{xml}");
    }
    let xml_path = dir.path().join("keys.xml");
    std::fs::write(&xml_path, &xml).unwrap();
    let (imported, _) = import(dir.path(), &xml_path);
    let source = ProfileSource::read(&path).unwrap();
    let raw = vmrun::model::parse(&source).unwrap();
    let (mut original, _) = vmrun::model::validate(&source, &raw).unwrap();
    let (mut round_trip, _) = validate_text(dir.path(), "keys", &imported).unwrap();
    original.profile_path = PathBuf::new();
    round_trip.profile_path = PathBuf::new();
    assert_eq!(round_trip, original, "{imported}");
}

/// Bad input in the XML is a usage error (exit 2) naming what is wrong, never a profile that
/// fails later (exit 1, "please report") nor gigabytes spent on a CPU list.
#[test]
fn import_refuses_bad_input_with_exit_2() {
    let dir = crate::common::tempdir();
    let domain = |body: &str| {
        format!(
            "<domain type='kvm'><name>bad</name><memory unit='MiB'>1024</memory>{body}</domain>"
        )
    };
    for (body, expected) in [
        (
            "<vcpu>2</vcpu><cputune><vcpupin vcpu='0' cpuset='0-4294967295'/></cputune>",
            "at most 8191",
        ),
        (
            "<vcpu>2</vcpu><cputune><emulatorpin cpuset='0-4294967295'/></cputune>",
            "at most 8191",
        ),
        (
            "<devices><shmem name='../../etc/shadow'><model type='ivshmem-plain'/></shmem></devices>",
            "<shmem>: name='../../etc/shadow'",
        ),
        (
            "<devices><interface type='user'><mac address='52:54:00:zz:00:01'/></interface></devices>",
            "<mac>:",
        ),
        (
            "<devices><hostdev mode='subsystem' type='pci'><source>\
             <address domain='0x0000' bus='0x01' slot='0x40' function='0x0'/></source></hostdev></devices>",
            "slot='0x40'",
        ),
        ("<vcpu>300</vcpu>", "1 to 255"),
        ("<iothreads>1000</iothreads>", "0 to 16"),
    ] {
        let path = dir.path().join("bad.xml");
        std::fs::write(&path, domain(body)).unwrap();
        let (code, stdout, stderr) = run(vmrun(dir.path()).args(["import", "libvirt"]).arg(&path));
        assert_eq!(code, 2, "{body}: {stderr}");
        assert!(stderr.contains(expected), "{body}: {stderr}");
        assert!(stdout.is_empty(), "{body}: {stdout}");
    }
    // A control character in the name: said, not a TOML error to report.
    let path = dir.path().join("cr.xml");
    std::fs::write(
        &path,
        "<domain type='kvm'><name>a&#13;b</name><memory unit='MiB'>1024</memory></domain>",
    )
    .unwrap();
    let (code, _, stderr) = run(vmrun(dir.path()).args(["import", "libvirt"]).arg(&path));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("control character"), "{stderr}");
    assert!(!stderr.contains("please report"), "{stderr}");
}

/// `-o` never writes through a symbolic link: a dangling one is an existing file without
/// `--force`, and refused with it; its target is never created.
#[test]
fn import_output_does_not_follow_a_symlink() {
    let dir = crate::common::tempdir();
    let xml = fixtures().join("hostdev-vfio.xml");
    let target = dir.path().join("target.toml");
    let link = dir.path().join("link.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for force in [false, true] {
        let mut command = vmrun(dir.path());
        command
            .args(["import", "libvirt", "-o"])
            .arg(&link)
            .arg(&xml);
        if force {
            command.arg("--force");
        }
        let (code, _, stderr) = run(&mut command);
        assert_eq!(code, 2, "force={force}: {stderr}");
        assert!(
            !target.exists(),
            "force={force}: the link's target was written"
        );
        assert!(
            stderr.contains(if force { "symbolic link" } else { "--force" }),
            "{stderr}"
        );
    }
    // A new file gets its own mode, not the umask's.
    let out = dir.path().join("new.toml");
    let (code, _, stderr) = run(vmrun(dir.path())
        .args(["import", "libvirt", "-o"])
        .arg(&out)
        .arg(&xml));
    assert_eq!(code, 0, "{stderr}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

/// `cpu.hyperv = "passthrough"`: QEMU's hv-passthrough with a vendor id that has a space,
/// libvirt's `<hyperv mode='passthrough'>`, and back.
#[test]
fn hyperv_passthrough_reaches_the_argv_libvirt_and_back() {
    let dir = crate::common::tempdir();
    let profile = "[machine]\nmemory = \"1G\"\n[cpu]\ncores = 2\nthreads = 1\nmodel = \"host\"\n\
                   hv_vendor_id = \"AMD is best\"\nhyperv = \"passthrough\"\n";
    let argv = show_argv(dir.path(), "hvpt", profile);
    assert!(
        argv.iter()
            .any(|a| a == "host,hv-passthrough,hv-vendor-id=AMD is best"),
        "{argv:?}"
    );
    let path = dir.path().join("hvpt.toml");
    let xml = export(dir.path(), &path);
    // libvirt's schema takes no <vendor_id> in passthrough mode: it travels in vmrun's
    // metadata, and the XML is one libvirt accepts.
    assert!(
        xml.contains("<hyperv mode='passthrough'/>")
            && xml.contains("<vmrun:hyperv vendor-id='AMD is best'/>"),
        "{xml}"
    );
    let xml_path = dir.path().join("hvpt.xml");
    std::fs::write(&xml_path, &xml).unwrap();
    if program_exists("virt-xml-validate") {
        let (code, stdout, stderr) = run(Command::new("virt-xml-validate")
            .arg(&xml_path)
            .arg("domain"));
        assert_eq!(code, 0, "{stdout}{stderr}\n{xml}");
    }
    let (imported, _) = import(dir.path(), &xml_path);
    let source = ProfileSource::read(&path).unwrap();
    let raw = vmrun::model::parse(&source).unwrap();
    let (mut original, _) = vmrun::model::validate(&source, &raw).unwrap();
    let (mut round_trip, _) = validate_text(dir.path(), "hvpt", &imported).unwrap();
    original.profile_path = PathBuf::new();
    round_trip.profile_path = PathBuf::new();
    assert_eq!(round_trip, original, "{imported}");
    // Under TCG it is refused, as QEMU would refuse it; an unknown word too.
    for (extra, message) in [
        ("[machine]\naccel = \"tcg\"\n", "needs KVM"),
        ("", "is not a choice"),
    ] {
        let hyperv = if extra.is_empty() {
            "\"all\""
        } else {
            "\"passthrough\""
        };
        let text = format!("{extra}[cpu]\nmodel = \"max\"\nhyperv = {hyperv}\n");
        let errors = validate_text(dir.path(), "hvbad", &text).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(text.join("\n").contains(message), "{text:?}");
    }
}

/// `[holders] stop` travels in `<metadata>` and comes back; the export says which hook would
/// stop the holders and persistence.
#[test]
fn holders_to_stop_survive_export_then_import() {
    let dir = crate::common::tempdir();
    let profile = "[machine]\nmemory = \"1G\"\n[cpu]\ncores = 2\nthreads = 1\n[firmware]\ntype = \"seabios\"\n\
                   [[pci]]\naddress = \"03:00.0\"\n\
                   [holders]\nstop = [\"sunshine.service\", \"session-*.scope\"]\n";
    let path = dir.path().join("held.toml");
    std::fs::write(&path, profile).unwrap();
    let xml = export(dir.path(), &path);
    for text in [
        "<vmrun:holders>\n        <vmrun:unit name='sunshine.service'/>\n        <vmrun:unit name='session-*.scope'/>\n      </vmrun:holders>",
        "vmrun stops the processes holding the passed devices' nodes",
        "vmrun stops nvidia-persistenced.service for the run",
    ] {
        assert!(xml.contains(text), "{text} missing:\n{xml}");
    }
    let xml_path = dir.path().join("held.xml");
    std::fs::write(&xml_path, &xml).unwrap();
    let (imported, _) = import(dir.path(), &xml_path);
    let source = ProfileSource::read(&path).unwrap();
    let raw = vmrun::model::parse(&source).unwrap();
    let (mut original, _) = vmrun::model::validate(&source, &raw).unwrap();
    let (mut round_trip, _) = validate_text(dir.path(), "held", &imported).unwrap();
    original.profile_path = PathBuf::new();
    round_trip.profile_path = PathBuf::new();
    assert_eq!(round_trip, original, "{imported}");
}
