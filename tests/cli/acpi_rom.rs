//! `vmrun rom --from-acpi --output FILE`: a VFCT table built around a real ROM (SeaBIOS's ATI
//! VGA BIOS, committed in tests/fixtures/roms) under a fake host root, read through
//! `VMRUN_SYSROOT` like the real `/sys/firmware/acpi/tables/VFCT`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vmrun::rom::vfct;

use crate::common::{repo_root, run, vmrun};

fn ati_rom() -> Vec<u8> {
    std::fs::read(repo_root().join("tests/fixtures/roms/vgabios-ati.bin")).unwrap()
}

/// A host root whose firmware left `table` as its VFCT.
fn host_with(table: Option<&[u8]>) -> (crate::common::TestDir, PathBuf) {
    let dir = crate::common::tempdir();
    let root = dir.path().join("root");
    let tables = root.join("sys/firmware/acpi/tables");
    std::fs::create_dir_all(&tables).unwrap();
    if let Some(table) = table {
        std::fs::write(tables.join("VFCT"), table).unwrap();
    }
    (dir, root)
}

fn from_acpi(dir: &Path, root: &Path, args: &[&str]) -> (i32, String, String) {
    run(vmrun(dir)
        .env("VMRUN_SYSROOT", root)
        .args(["rom", "--from-acpi"])
        .args(args))
}

#[test]
fn the_apu_rom_is_extracted_checked_and_written_for_romfile() {
    let rom = ati_rom();
    let (dir, root) = host_with(Some(&vfct::build(&[(0xc1, 0, 0, 0x1002, 0x5159, &rom)])));
    let out = dir.path().join("apu.rom");
    let (code, stdout, stderr) = from_acpi(dir.path(), &root, &["--output", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), rom, "the image byte for byte");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    for expected in [
        "1 video BIOS image(s)",
        "GPU c1:00.0 1002:5159",
        "39936 bytes",
        "x86    1002:5159",
        "checksum ok",
        "wrote ",
        "[[pci]] address = \"c1:00.0\"",
    ] {
        assert!(stdout.contains(expected), "{expected} missing:\n{stdout}");
    }
    // The written file is a ROM `vmrun rom` accepts as it is.
    let (code, stdout, _) = run(vmrun(dir.path()).arg("rom").arg(&out));
    assert_eq!(code, 0, "{stdout}");

    // Not overwritten without --force (exit 2, the file unchanged), and with --force.
    std::fs::write(&out, b"keep").unwrap();
    let (code, _, stderr) = from_acpi(dir.path(), &root, &["-o", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    let (code, _, stderr) = from_acpi(dir.path(), &root, &["-o", out.to_str().unwrap(), "--force"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), rom);

    // Never through a symbolic link, even with --force.
    let link = dir.path().join("link.rom");
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, b"untouched").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, _, stderr) = from_acpi(
        dir.path(),
        &root,
        &["-o", link.to_str().unwrap(), "--force"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
}

#[test]
fn several_images_go_to_one_file_per_gpu_and_json_lists_them() {
    let rom = ati_rom();
    // A second GPU's image, shortened to its first 2 KiB: the walker finds it cut off.
    let cut = &rom[..2048];
    let table = vfct::build(&[
        (0xc1, 0, 0, 0x1002, 0x5159, &rom),
        (3, 0, 0, 0x1002, 0x5159, cut),
    ]);
    let (dir, root) = host_with(Some(&table));
    let out = dir.path().join("apu.rom");
    let (code, stdout, stderr) = from_acpi(
        dir.path(),
        &root,
        &["--output", out.to_str().unwrap(), "--json"],
    );
    assert_eq!(
        code, 3,
        "an image with a problem is exit 3 as for `rom`: {stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let images = json["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["address"], "c1:00.0");
    assert_eq!(images[0]["vendor_id"], "1002");
    assert_eq!(images[0]["ok"], true);
    let first = dir.path().join("apu-c1-00.0.rom");
    assert_eq!(images[0]["file"], first.to_str().unwrap());
    assert_eq!(std::fs::read(&first).unwrap(), rom);
    assert_eq!(images[1]["address"], "03:00.0");
    assert_eq!(images[1]["ok"], false);
    assert!(images[1]["file"].is_null());
    assert!(
        !images[1]["report"]["problems"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{}",
        images[1]
    );
    assert!(
        !dir.path().join("apu-03-00.0.rom").exists(),
        "an image failing the walker is not written"
    );
    assert!(!out.exists());
}

#[test]
fn no_table_a_truncated_table_and_an_image_for_another_gpu_are_told_apart() {
    let rom = ati_rom();
    let dir = crate::common::tempdir();
    let out = dir.path().join("apu.rom");
    let out = out.to_str().unwrap();

    let (_keep, root) = host_with(None);
    let (code, _, stderr) = from_acpi(dir.path(), &root, &["-o", out]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no VFCT table"), "{stderr}");
    assert!(stderr.contains("AMD APUs"), "{stderr}");

    let table = vfct::build(&[(0xc1, 0, 0, 0x1002, 0x5159, &rom)]);
    let (_keep, root) = host_with(Some(&table[..table.len() - 100]));
    let (code, _, stderr) = from_acpi(dir.path(), &root, &["-o", out]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");

    // The table names 1002:15d8, the image inside is 1002:5159's: not written, exit 3.
    let (_keep, root) = host_with(Some(&vfct::build(&[(0xc1, 0, 0, 0x1002, 0x15d8, &rom)])));
    let (code, stdout, stderr) = from_acpi(dir.path(), &root, &["-o", out]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stdout.contains("not for 1002:15d8"), "{stdout}");
    assert!(!Path::new(out).exists());

    // --from-acpi needs --output, and takes no ROM file.
    let (code, _, _) = run(vmrun(dir.path()).args(["rom", "--from-acpi"]));
    assert_eq!(code, 2);
    let (code, _, _) = run(vmrun(dir.path()).args(["rom", "x.rom", "--from-acpi", "-o", out]));
    assert_eq!(code, 2);
}

#[test]
fn two_images_for_one_address_get_a_file_each() {
    let rom = ati_rom();
    let mut other = rom.clone();
    // Another build of the BIOS: a byte outside the header, its checksum kept.
    let last = other.len() - 1;
    other[last] = other[last].wrapping_sub(1);
    other[last - 1] = other[last - 1].wrapping_add(1);
    let table = vfct::build(&[
        (0xc1, 0, 0, 0x1002, 0x5159, &rom),
        (0xc1, 0, 0, 0x1002, 0x5159, &other),
    ]);
    let (dir, root) = host_with(Some(&table));
    let out = dir.path().join("apu.rom");
    let (code, stdout, stderr) = from_acpi(dir.path(), &root, &["-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        std::fs::read(dir.path().join("apu-c1-00.0-0.rom")).unwrap(),
        rom
    );
    assert_eq!(
        std::fs::read(dir.path().join("apu-c1-00.0-1.rom")).unwrap(),
        other,
        "the second image did not overwrite the first"
    );
    assert!(!dir.path().join("apu-c1-00.0.rom").exists());
}
