//! Golden argv files: each bundled profile (and the test profiles) against a checked-in argv,
//! one argument per line. `UPDATE_GOLDEN=1 cargo test golden` rewrites them; review the diff
//! against QEMU's documentation before committing.

use std::path::{Path, PathBuf};

use vmrun::firmware::{FirmwareImage, ImageFormat, ResolvedFirmware};
use vmrun::plan::argv::OpenAs;
use vmrun::plan::{self, BaseDirs, BootFirmware, Plan};
use vmrun::profile::ProfileSource;

use crate::common::repo_root;

/// Debian 12's OVMF as its descriptors describe it (60-edk2-x86_64.json and
/// 40-edk2-x86_64-secure-enrolled.json), so the goldens do not depend on this host.
fn debian_ovmf(secure_boot: bool) -> ResolvedFirmware {
    let image = |name: &str| FirmwareImage {
        path: PathBuf::from(format!("/usr/share/OVMF/{name}")),
        format: ImageFormat::Raw,
    };
    if secure_boot {
        ResolvedFirmware {
            code: image("OVMF_CODE_4M.ms.fd"),
            vars_template: image("OVMF_VARS_4M.ms.fd"),
            secure_boot: true,
            requires_smm: true,
            source: "40-edk2-x86_64-secure-enrolled.json".into(),
        }
    } else {
        ResolvedFirmware {
            code: image("OVMF_CODE_4M.fd"),
            vars_template: image("OVMF_VARS_4M.fd"),
            secure_boot: false,
            requires_smm: false,
            source: "60-edk2-x86_64.json".into(),
        }
    }
}

fn plan_of(profile_path: &Path) -> Plan {
    let source = ProfileSource::read(profile_path).unwrap();
    let raw = vmrun::model::parse(&source).unwrap_or_else(|e| panic!("{e:#?}"));
    let (config, _warnings) =
        vmrun::model::validate(&source, &raw).unwrap_or_else(|e| panic!("{e:#?}"));
    let firmware = match &config.firmware {
        vmrun::model::Firmware::SeaBios => BootFirmware::SeaBios,
        vmrun::model::Firmware::Ovmf { secure_boot, .. } => {
            BootFirmware::Ovmf(debian_ovmf(*secure_boot))
        }
    };
    let base = BaseDirs {
        state: "/var/lib/vmrun".into(),
        runtime: "/run/vmrun".into(),
    };
    // A desktop user as `sudo` from uid 1000 gives it; no /dev/vhost-net, no DMI data.
    let facts = vmrun::plan::HostFacts {
        desktop_user: Some(vmrun::plan::DesktopUser {
            name: "desktop".into(),
            uid: 1000,
            home: "/home/desktop".into(),
        }),
        ..Default::default()
    };
    Plan::new(&config, &firmware, &base, &facts).unwrap()
}

fn argv_of(profile_path: &Path) -> Vec<String> {
    plan_of(profile_path).argv
}

fn check_golden(profile_path: &Path, golden_name: &str) {
    let root = repo_root();
    let plan = plan_of(profile_path);
    // The files behind the descriptors the argv names, after the argv, as comment lines.
    let files = plan.passed_files.iter().map(|file| {
        format!(
            "# fd {} = {} ({:?})",
            file.fd,
            file.path.display(),
            file.open
        )
    });
    let text: String = plan
        .argv
        .iter()
        .cloned()
        .chain(files)
        .map(|arg| arg.replace(root.to_str().unwrap(), "@REPO@") + "\n")
        .collect();
    let golden = root
        .join("tests/golden")
        .join(format!("{golden_name}.argv"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_GOLDEN=1", golden.display()));
    assert_eq!(
        text,
        expected,
        "argv of {} differs from {}",
        profile_path.display(),
        golden.display()
    );
}

#[test]
fn every_bundled_profile_validates_and_matches_its_golden_argv() {
    let dir = repo_root().join("vm-profiles");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["demo", "linux-dual-gpu", "looking-glass", "win10", "win11"]
    );
    for name in names {
        check_golden(&dir.join(format!("{name}.toml")), &name);
    }
}

#[test]
fn seabios_test_profile_matches_its_golden_argv() {
    check_golden(
        &repo_root().join("tests/fixtures/profiles/legacy-bios.toml"),
        "legacy-bios",
    );
}

#[test]
fn argv_invariants_hold_for_the_reference_profile() {
    let argv = argv_of(&repo_root().join("vm-profiles/win10.toml"));
    let after = |option: &str| -> Vec<&str> {
        argv.windows(2)
            .filter(|w| w[0] == option)
            .map(|w| w[1].as_str())
            .collect()
    };
    assert!(argv.contains(&"-S".to_string()), "vCPUs must start paused");
    assert!(argv.contains(&"-nodefaults".to_string()));
    assert_eq!(after("-name"), ["guest=win10,debug-threads=on"]);
    assert_eq!(after("-smp"), ["8,sockets=1,cores=4,threads=2"]);
    assert_eq!(after("-vga"), ["none"]);
    let cpu = after("-cpu")[0];
    assert!(cpu.starts_with("host,kvm=off,"), "{cpu}");
    assert!(
        cpu.contains("hv-vendor-id=1234567890ab") && cpu.contains("hv-spinlocks=0x1fff"),
        "{cpu}"
    );
    let vfio: Vec<&str> = after("-device")
        .into_iter()
        .filter(|d| d.starts_with("vfio-pci"))
        .collect();
    assert_eq!(vfio.len(), 2);
    assert!(
        vfio[0].contains("host=0000:01:00.0") && vfio[0].contains("addr=0x0.0,multifunction=on")
    );
    assert!(vfio[1].contains("host=0000:01:00.1") && vfio[1].contains("addr=0x0.1"));
    assert!(
        vfio[0].contains("romfile=/"),
        "romfile is absolute: {}",
        vfio[0]
    );
    assert!(!vfio[0].contains("x-vga"), "x-vga only with SeaBIOS");
    let plan = plan_of(&repo_root().join("vm-profiles/win10.toml"));
    let vars = after("-blockdev")
        .into_iter()
        .find(|b| b.contains("ovmf-vars-file,filename="))
        .unwrap();
    assert!(!vars.contains("read-only"), "the VARS copy is writable");
    // QEMU gets the VARS copy as an fd set: a read-write and a read-only descriptor of the
    // VM's own file, announced by -add-fd before the blockdev that opens the set.
    let set = vars
        .split(',')
        .find_map(|part| part.strip_prefix("filename=/dev/fdset/"))
        .unwrap_or_else(|| panic!("VARS not passed as an fd set: {vars}"));
    let fds: Vec<i32> = after("-add-fd")
        .into_iter()
        .filter(|opts| opts.contains(&format!(",set={set},")))
        .map(|opts| {
            opts.split(',').next().unwrap()["fd=".len()..]
                .parse()
                .unwrap()
        })
        .collect();
    let opened: Vec<(String, OpenAs)> = fds
        .iter()
        .map(|fd| {
            let file = plan.passed_files.iter().find(|f| f.fd == *fd).unwrap();
            (file.path.display().to_string(), file.open)
        })
        .collect();
    assert_eq!(
        opened,
        [
            (
                "/var/lib/vmrun/win10/OVMF_VARS.fd".to_string(),
                OpenAs::ReadWrite
            ),
            (
                "/var/lib/vmrun/win10/OVMF_VARS.fd".to_string(),
                OpenAs::Read
            )
        ]
    );
    let numbers: Vec<i32> = plan.passed_files.iter().map(|f| f.fd).collect();
    let expected: Vec<i32> = (5..5 + numbers.len() as i32).collect();
    assert_eq!(
        numbers, expected,
        "descriptors follow the monitors' 3 and 4"
    );
    assert_eq!(
        argv.last().unwrap(),
        "base=localtime",
        "extra_args come last"
    );
}

#[test]
fn this_hosts_descriptors_give_the_golden_firmware() {
    let dirs = vmrun::firmware::default_descriptor_dirs();
    if !Path::new("/usr/share/qemu/firmware/60-edk2-x86_64.json").exists() {
        eprintln!("skipped: Debian's ovmf package is not installed");
        return;
    }
    let source = ProfileSource::read(&repo_root().join("vm-profiles/looking-glass.toml")).unwrap();
    let raw = vmrun::model::parse(&source).unwrap();
    let (config, _) = vmrun::model::validate(&source, &raw).unwrap();
    match plan::resolve_firmware(&config, &dirs).unwrap() {
        BootFirmware::Ovmf(found) => {
            assert_eq!(found.code.path, debian_ovmf(true).code.path);
            assert!(found.secure_boot && found.requires_smm);
        }
        BootFirmware::SeaBios => panic!("OVMF expected"),
    }
}
