//! Firmware selection over fake descriptor directories: override by file name, empty-file
//! masking, secure boot with enrolled keys, qcow2 images, and CODE/VARS pairing.

use std::path::{Path, PathBuf};

use vmrun::firmware::{self, FirmwareError, FirmwareQuery, ImageFormat};

use crate::common::sized_file;

const CODE_4M: u64 = 3_653_632;
const VARS_4M: u64 = 540_672;
const VARS_2M: u64 = 131_072;

struct Tree {
    _dir: crate::common::TestDir,
    root: PathBuf,
}

impl Tree {
    fn new() -> Self {
        let dir = crate::common::tempdir();
        let root = dir.path().to_path_buf();
        for sub in [
            "home/qemu/firmware",
            "etc/qemu/firmware",
            "usr/qemu/firmware",
            "fw",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        Tree { _dir: dir, root }
    }

    /// Highest priority first, as `firmware::select` takes them.
    fn dirs(&self) -> Vec<PathBuf> {
        ["home", "etc", "usr"]
            .iter()
            .map(|d| self.root.join(d).join("qemu/firmware"))
            .collect()
    }

    fn image(&self, name: &str, size: u64) -> PathBuf {
        let path = self.root.join("fw").join(name);
        sized_file(&path, size);
        path
    }

    fn qcow2(&self, name: &str, virtual_size: u64) -> PathBuf {
        let path = self.root.join("fw").join(name);
        let mut header = vec![0u8; 512];
        header[..4].copy_from_slice(b"QFI\xfb");
        header[4..8].copy_from_slice(&3u32.to_be_bytes());
        header[24..32].copy_from_slice(&virtual_size.to_be_bytes());
        std::fs::write(&path, header).unwrap();
        path
    }

    fn descriptor(
        &self,
        dir: &str,
        name: &str,
        code: &Path,
        vars: &Path,
        format: &str,
        features: &[&str],
    ) {
        let features: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
        let text = format!(
            r#"{{"interface-types": ["uefi"],
                "mapping": {{"device": "flash",
                    "executable": {{"filename": "{}", "format": "{format}"}},
                    "nvram-template": {{"filename": "{}", "format": "{format}"}}}},
                "targets": [{{"architecture": "x86_64", "machines": ["pc-q35-*"]}}],
                "features": [{}]}}"#,
            code.display(),
            vars.display(),
            features.join(", ")
        );
        std::fs::write(self.root.join(dir).join("qemu/firmware").join(name), text).unwrap();
    }

    fn mask(&self, dir: &str, name: &str) {
        std::fs::write(self.root.join(dir).join("qemu/firmware").join(name), "").unwrap();
    }
}

fn query(secure_boot: bool) -> FirmwareQuery {
    FirmwareQuery {
        machine_type: "q35".into(),
        secure_boot,
    }
}

#[test]
fn a_higher_directory_overrides_a_descriptor_of_the_same_name() {
    let tree = Tree::new();
    let (usr_code, usr_vars) = (
        tree.image("usr_CODE.fd", CODE_4M),
        tree.image("usr_VARS.fd", VARS_4M),
    );
    let (etc_code, etc_vars) = (
        tree.image("etc_CODE.fd", CODE_4M),
        tree.image("etc_VARS.fd", VARS_4M),
    );
    tree.descriptor("usr", "60-ovmf.json", &usr_code, &usr_vars, "raw", &[]);
    tree.descriptor("etc", "60-ovmf.json", &etc_code, &etc_vars, "raw", &[]);
    let found = firmware::select(&query(false), &tree.dirs()).unwrap();
    assert_eq!(found.code.path, etc_code);
    assert!(
        found.source.contains("etc/qemu/firmware/60-ovmf.json"),
        "{}",
        found.source
    );
}

#[test]
fn an_empty_file_hides_the_descriptor_below_it() {
    let tree = Tree::new();
    let (code, vars) = (
        tree.image("CODE.fd", CODE_4M),
        tree.image("VARS.fd", VARS_4M),
    );
    let (code2, vars2) = (
        tree.image("CODE2.fd", CODE_4M),
        tree.image("VARS2.fd", VARS_4M),
    );
    tree.descriptor("usr", "50-first.json", &code, &vars, "raw", &[]);
    tree.descriptor("usr", "60-second.json", &code2, &vars2, "raw", &[]);
    assert_eq!(
        firmware::select(&query(false), &tree.dirs())
            .unwrap()
            .code
            .path,
        code
    );
    tree.mask("home", "50-first.json");
    assert_eq!(
        firmware::select(&query(false), &tree.dirs())
            .unwrap()
            .code
            .path,
        code2
    );
    tree.mask("etc", "60-second.json");
    let error = firmware::select(&query(false), &tree.dirs()).unwrap_err();
    assert!(matches!(error, FirmwareError::NotFound { .. }), "{error}");
}

#[test]
fn secure_boot_needs_enrolled_keys_and_plain_boot_avoids_them() {
    let tree = Tree::new();
    let (sb_code, sb_vars) = (
        tree.image("SB_CODE.fd", CODE_4M),
        tree.image("SB_VARS.fd", VARS_4M),
    );
    let (plain_code, plain_vars) = (
        tree.image("CODE.fd", CODE_4M),
        tree.image("VARS.fd", VARS_4M),
    );
    tree.descriptor(
        "usr",
        "50-secure.json",
        &sb_code,
        &plain_vars,
        "raw",
        &["requires-smm", "secure-boot"],
    );
    tree.descriptor("usr", "60-plain.json", &plain_code, &plain_vars, "raw", &[]);
    let error = firmware::select(&query(true), &tree.dirs())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("50-secure.json: no secure boot with enrolled keys"),
        "{error}"
    );
    tree.descriptor(
        "usr",
        "40-enrolled.json",
        &sb_code,
        &sb_vars,
        "raw",
        &["enrolled-keys", "requires-smm", "secure-boot"],
    );
    let secure = firmware::select(&query(true), &tree.dirs()).unwrap();
    assert_eq!(secure.vars_template.path, sb_vars);
    assert!(secure.secure_boot && secure.requires_smm);
    let plain = firmware::select(&query(false), &tree.dirs()).unwrap();
    assert_eq!(
        plain.code.path, plain_code,
        "enrolled and SMM builds are skipped without secure boot"
    );
    assert!(!plain.requires_smm);
}

#[test]
fn qcow2_images_keep_their_format_and_virtual_size() {
    let tree = Tree::new();
    let code = tree.qcow2("CODE_4M.qcow2", CODE_4M);
    let vars = tree.qcow2("VARS_4M.qcow2", VARS_4M);
    tree.descriptor("usr", "60-fedora.json", &code, &vars, "qcow2", &[]);
    let found = firmware::select(&query(false), &tree.dirs()).unwrap();
    assert_eq!(found.code.format, ImageFormat::Qcow2);
    assert_eq!(firmware::flash_size(&found.vars_template).unwrap(), VARS_4M);
    firmware::check_pairing(&found.code, &found.vars_template).unwrap();

    let base = vmrun::plan::BaseDirs {
        state: "/s".into(),
        runtime: "/r".into(),
    };
    let dir = crate::common::tempdir();
    let (config, _) = crate::common::validate_text(dir.path(), "fedora", "").unwrap();
    let plan = vmrun::plan::Plan::new(
        &config,
        &vmrun::plan::BootFirmware::Ovmf(found),
        &base,
        &vmrun::plan::HostFacts::default(),
    )
    .unwrap();
    assert_eq!(plan.vars, Some(PathBuf::from("/s/fedora/OVMF_VARS.qcow2")));
    assert!(
        plan.argv
            .iter()
            .any(|a| a == "driver=qcow2,node-name=ovmf-vars,file=ovmf-vars-file"),
        "{:?}",
        plan.argv
    );
}

#[test]
fn a_descriptor_pairing_a_4m_code_with_a_2m_vars_is_refused() {
    let tree = Tree::new();
    let (code, vars) = (
        tree.image("CODE_4M.fd", CODE_4M),
        tree.image("VARS.fd", VARS_2M),
    );
    tree.descriptor("usr", "60-broken.json", &code, &vars, "raw", &[]);
    let found = firmware::select(&query(false), &tree.dirs()).unwrap();
    let error = firmware::check_pairing(&found.code, &found.vars_template)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pairs with a VARS of 540672 bytes, but the VARS is 131072 bytes"),
        "{error}"
    );
}

#[test]
fn without_any_descriptor_the_bundled_templates_are_tried_and_named() {
    let tree = Tree::new();
    let error = firmware::select(&query(false), &tree.dirs())
        .unwrap_err()
        .to_string();
    assert!(error.contains("ovmf-templates/60-arch-edk2-x86_64-4m.json: /usr/share/edk2/x64/OVMF_CODE.4m.fd does not exist")
        || std::path::Path::new("/usr/share/edk2/x64/OVMF_CODE.4m.fd").exists(), "{error}");
    assert!(error.contains("apt install ovmf"), "{error}");
}

#[test]
fn descriptors_for_other_machines_or_missing_files_are_skipped_with_a_reason() {
    let tree = Tree::new();
    let vars = tree.image("VARS.fd", VARS_4M);
    tree.descriptor(
        "usr",
        "50-missing.json",
        Path::new("/nonexistent/CODE.fd"),
        &vars,
        "raw",
        &[],
    );
    let error = firmware::select(&query(false), &tree.dirs())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("50-missing.json: /nonexistent/CODE.fd does not exist"),
        "{error}"
    );
}
