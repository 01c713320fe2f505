use super::*;

#[test]
fn several_acpi_images_get_one_file_each_named_by_address() {
    let image = |bus, device| vfct::VfctImage {
        bus,
        device,
        function: 0,
        vendor_id: "1002".into(),
        device_id: "1681".into(),
        subsystem_vendor_id: "1002".into(),
        subsystem_id: "0001".into(),
        revision: 0,
        offset: 0,
        length: 1,
        data: vec![0],
    };
    let out = Path::new("/roms/apu.rom");
    assert_eq!(acpi_rom_paths(out, &[image(0xc1, 0)]), [out]);
    assert_eq!(
        acpi_rom_paths(out, &[image(0xc1, 0), image(3, 1)]),
        [
            PathBuf::from("/roms/apu-c1-00.0.rom"),
            PathBuf::from("/roms/apu-03-01.0.rom")
        ]
    );
    // Two images for one address get their index in the table, so neither overwrites the other.
    assert_eq!(
        acpi_rom_paths(out, &[image(0xc1, 0), image(3, 1), image(0xc1, 0)]),
        [
            PathBuf::from("/roms/apu-c1-00.0-0.rom"),
            PathBuf::from("/roms/apu-03-01.0.rom"),
            PathBuf::from("/roms/apu-c1-00.0-2.rom")
        ]
    );
}

#[test]
fn a_rom_file_is_created_once_without_force_and_never_through_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.rom");
    write_rom_file(&path, b"one", false).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert!(matches!(
        write_rom_file(&path, b"two", false),
        Err(RomError::Exists(_))
    ));
    write_rom_file(&path, b"two", true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    let link = dir.path().join("link.rom");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(matches!(
        write_rom_file(&link, b"x", true),
        Err(RomError::Symlink(_))
    ));
    assert!(matches!(
        write_rom_file(&link, b"x", false),
        Err(RomError::Exists(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
}

#[test]
fn code_types_serialize_by_name_or_number() {
    assert_eq!(serde_json::to_string(&CodeType::Efi).unwrap(), "\"efi\"");
    assert_eq!(serde_json::to_string(&CodeType::Other(7)).unwrap(), "7");
}

#[test]
fn empty_and_garbage_input_give_problems_not_panics() {
    assert_eq!(parse(&[]).problems, ["the file is empty"]);
    assert!(parse(&[0x55]).problems[0].contains("no option ROM image"));
    assert!(parse(&[0x55, 0xAA, 0, 0]).images.is_empty());
}
