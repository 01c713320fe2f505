//! `vmrun rom` and the ROM preflight: real ROMs Debian ships, synthetic ones shaped like real
//! vendor ROMs (NVIDIA's extended images, dump headers, AMD's EFI images and trailing data), and
//! property tests that the parser never panics or reads out of bounds.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::Value;
use vmrun::rom::{self, Checksum, CodeType, ImageKind};

use crate::common::{repo_root, run, vmrun};

const IPXE_E1000E: &str = "/usr/lib/ipxe/qemu/efi-e1000e.rom";
const VGABIOS_STD: &str = "/usr/share/seabios/vgabios-stdvga.bin";

/// One synthetic image: its signature, data structure at 0x1c, optional NPDE, sum fixed.
struct Image {
    vendor: u16,
    device: u16,
    code_type: u8,
    blocks: u16,
    last: bool,
    rom_signature: [u8; 2],
    signature: &'static [u8; 4],
    npde: Option<(u16, bool)>,
    efi_machine: u16,
    /// Whether the bytes sum to zero, as legacy x86 images must; otherwise they sum to 0x5a.
    zero_sum: bool,
    fill: u8,
}

impl Image {
    fn new(code_type: u8, blocks: u16, last: bool) -> Self {
        Image {
            vendor: 0x10de,
            device: 0x1c02,
            code_type,
            blocks,
            last,
            rom_signature: [0x55, 0xAA],
            signature: b"PCIR",
            npde: None,
            efi_machine: 0x8664,
            zero_sum: true,
            fill: 0,
        }
    }

    /// A `56 4E` image as NVIDIA chains them: NPDS, and an NPDE that says where the chain goes.
    fn nvidia_extended(code_type: u8, blocks: u16, last: bool) -> Self {
        Image {
            rom_signature: [0x56, 0x4E],
            signature: b"NPDS",
            npde: Some((blocks, last)),
            device: 0x1c80,
            ..Image::new(code_type, blocks, last)
        }
    }

    /// NVIDIA's NBSI image: `56 4E`, type 0x70, no NPDE, so its PCI data structure says whether
    /// it is last.
    fn nbsi(blocks: u16, last: bool) -> Self {
        Image {
            rom_signature: [0x56, 0x4E],
            signature: b"NPDS",
            device: 0,
            ..Image::new(0x70, blocks, last)
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let blocks = self.npde.map(|(b, _)| b).unwrap_or(self.blocks);
        let mut data = vec![self.fill; usize::from(blocks.max(1)) * 512];
        data[0..2].copy_from_slice(&self.rom_signature);
        data[2] = blocks as u8;
        if self.code_type == 3 && self.rom_signature == [0x55, 0xAA] {
            data[4..8].copy_from_slice(&0x0EF1u32.to_le_bytes());
            data[8..10].copy_from_slice(&11u16.to_le_bytes());
            data[10..12].copy_from_slice(&self.efi_machine.to_le_bytes());
        }
        let pcir = 0x1c;
        data[0x18..0x1a].copy_from_slice(&(pcir as u16).to_le_bytes());
        data[pcir..pcir + 4].copy_from_slice(self.signature);
        data[pcir + 4..pcir + 6].copy_from_slice(&self.vendor.to_le_bytes());
        data[pcir + 6..pcir + 8].copy_from_slice(&self.device.to_le_bytes());
        data[pcir + 0x0a..pcir + 0x0c].copy_from_slice(&0x18u16.to_le_bytes());
        data[pcir + 0x0d..pcir + 0x10].copy_from_slice(&[0x00, 0x00, 0x03]);
        data[pcir + 0x10..pcir + 0x12].copy_from_slice(&self.blocks.to_le_bytes());
        data[pcir + 0x14] = self.code_type;
        data[pcir + 0x15] = if self.last { 0x80 } else { 0 };
        if let Some((npde_blocks, npde_last)) = self.npde {
            let at = (pcir + 0x18 + 0x0f) & !0x0f;
            data[at..at + 4].copy_from_slice(b"NPDE");
            data[at + 8..at + 10].copy_from_slice(&npde_blocks.to_le_bytes());
            data[at + 10] = if npde_last { 0x80 } else { 0 };
        }
        let wanted_sum = if self.zero_sum { 0 } else { 0x5a };
        let sum = byte_sum(&data);
        let last_byte = data.len() - 1;
        data[last_byte] = data[last_byte].wrapping_sub(sum).wrapping_add(wanted_sum);
        data
    }
}

fn byte_sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

fn gpu_rom() -> Vec<u8> {
    let mut data = Image::new(0, 2, false).bytes();
    data.extend(Image::new(3, 3, true).bytes());
    data
}

fn concat(images: &[Image]) -> Vec<u8> {
    images.iter().flat_map(Image::bytes).collect()
}

/// Shaped like a Quadro M1200 laptop ROM: the x86 image's PCIR covers the whole ROM and says
/// last, its NPDE says 2 blocks and more to come, then an extended image and a last NBSI image.
fn laptop_nvidia_rom() -> Vec<u8> {
    let mut x86 = Image::new(0, 5, true);
    x86.npde = Some((2, false));
    concat(&[
        x86,
        Image::nvidia_extended(0xe0, 2, false),
        Image::nbsi(1, true),
    ])
}

/// Shaped like a GeForce GT 640 (GK107) ROM: x86, EFI whose PCIR says last but whose NPDE goes
/// on, an extended image, and a last NBSI image.
fn desktop_nvidia_rom() -> Vec<u8> {
    let mut x86 = Image::new(0, 2, false);
    x86.npde = Some((2, false));
    let mut efi = Image::new(3, 2, true);
    efi.npde = Some((2, false));
    concat(&[
        x86,
        efi,
        Image::nvidia_extended(0xe0, 2, false),
        Image::nbsi(1, true),
    ])
}

/// nvflash writes a header (starting "NVGI" on Kepler cards) before the ROM.
fn with_nvflash_header(rom: &[u8]) -> Vec<u8> {
    let mut data = b"NVGI".to_vec();
    data.resize(0x400, 0x00);
    data.extend_from_slice(rom);
    data
}

/// Shaped like an ASUS GT 640 ROM without GOP: a `77 BB` slot of EFI type holding only 0xff.
fn nvidia_rom_with_an_empty_uefi_slot() -> Vec<u8> {
    let mut x86 = Image::new(0, 2, true);
    x86.npde = Some((2, false));
    let slot = Image {
        rom_signature: [0x77, 0xBB],
        signature: b"RGIS",
        npde: Some((3, false)),
        fill: 0xff,
        ..Image::new(3, 3, true)
    };
    concat(&[x86, slot, Image::nbsi(1, true)])
}

/// Shaped like a factory RX 580 ROM: an x86 image and an EFI image whose bytes do not sum to
/// zero.
fn amd_rom() -> Vec<u8> {
    let efi = Image {
        vendor: 0x1002,
        device: 0x67df,
        zero_sum: false,
        ..Image::new(3, 2, true)
    };
    let x86 = Image {
        vendor: 0x1002,
        device: 0x67df,
        ..Image::new(0, 2, false)
    };
    concat(&[x86, efi])
}

#[test]
fn ipxe_rom_has_an_x86_and_an_efi_image() {
    let report = rom::inspect(Path::new(IPXE_E1000E))
        .expect("ipxe-qemu is installed by scripts/install-deps.sh");
    assert_eq!(report.images.len(), 2);
    let (x86, efi) = (&report.images[0], &report.images[1]);
    assert_eq!(
        (x86.code_type, x86.offset, x86.last),
        (CodeType::X86, 0, false)
    );
    assert_eq!(
        (efi.code_type, efi.offset, efi.last),
        (CodeType::Efi, 0x12600, true)
    );
    assert_eq!(
        (
            x86.vendor_id.as_str(),
            x86.device_id.as_str(),
            x86.class.as_str()
        ),
        ("8086", "10d3", "020000")
    );
    assert_eq!(
        (x86.checksum, efi.checksum),
        (Checksum::Ok, Checksum::NotChecked)
    );
    assert_eq!(
        (x86.kind, efi.kind, x86.signature),
        (ImageKind::Pci, ImageKind::Pci, "55aa")
    );
    let info = efi.efi.as_ref().unwrap();
    assert_eq!((info.machine_type.as_str(), info.subsystem), ("X64", 11));
    assert!(report.has_efi && report.problems.is_empty());
    assert!(report.info.is_empty(), "the file ends with its last image");
    assert_eq!(report.header_bytes, 0);
}

#[test]
fn seabios_vgabios_is_x86_only() {
    let report = rom::inspect(Path::new(VGABIOS_STD)).unwrap();
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].code_type, CodeType::X86);
    assert_eq!(
        (
            report.images[0].vendor_id.as_str(),
            report.images[0].device_id.as_str()
        ),
        ("1234", "1111")
    );
    assert!(report.images[0].last);
    assert_eq!(report.images[0].checksum, Checksum::Ok);
    assert!(!report.has_efi);
}

#[test]
fn json_output_has_the_documented_fields() {
    let (code, stdout, stderr) = run(vmrun(&repo_root()).args(["rom", IPXE_E1000E, "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["has_efi"], true);
    assert_eq!(value["header_bytes"], 0);
    assert_eq!(value["problems"], serde_json::json!([]));
    assert_eq!(value["info"], serde_json::json!([]));
    for image in value["images"].as_array().unwrap() {
        for field in [
            "offset",
            "signature",
            "kind",
            "code_type",
            "vendor_id",
            "device_id",
            "class",
            "length",
            "last",
            "checksum",
            "checksum_ok",
            "npde",
            "efi",
            "truncated",
        ] {
            assert!(image.get(field).is_some(), "{field} missing: {image}");
        }
    }
    let (x86, efi) = (&value["images"][0], &value["images"][1]);
    assert_eq!(
        (&x86["checksum"], &x86["checksum_ok"]),
        (&"ok".into(), &true.into())
    );
    // EFI images keep no checksum rule: not judged, so neither true nor false.
    assert_eq!(efi["checksum"], "not_checked");
    assert!(efi["checksum_ok"].is_null(), "{efi}");
    assert_eq!(
        (&efi["signature"], &efi["kind"]),
        (&"55aa".into(), &"pci".into())
    );
    assert_eq!(efi["code_type"], "efi");
    assert_eq!(efi["vendor_id"], "8086");
    assert_eq!(efi["offset"], 0x12600);
}

#[test]
fn several_images_are_walked_to_the_last() {
    let mut data = Image::new(0, 1, false).bytes();
    data.extend(Image::new(1, 1, false).bytes());
    data.extend(Image::new(3, 2, true).bytes());
    data.extend(vec![0xff; 512]);
    let report = rom::parse(&data);
    let types: Vec<CodeType> = report.images.iter().map(|i| i.code_type).collect();
    assert_eq!(
        types,
        [CodeType::X86, CodeType::OpenFirmware, CodeType::Efi]
    );
    assert_eq!(report.images[2].offset, 1024);
    let checksums: Vec<Checksum> = report.images.iter().map(|i| i.checksum).collect();
    assert_eq!(
        checksums,
        [Checksum::Ok, Checksum::NotChecked, Checksum::NotChecked]
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        report.info,
        ["512 bytes after the last image (0x800 to the end of the file) are no image: 0xff padding"]
    );
}

#[test]
fn a_dump_header_is_reported_and_strip_writes_a_copy() {
    let dir = crate::common::tempdir();
    let mut data = b"NVFLASH DUMP HEADER".to_vec();
    data.resize(0x190, 0xee);
    data.extend(gpu_rom());
    let file = dir.path().join("gpu.rom");
    std::fs::write(&file, &data).unwrap();
    let report = rom::inspect(&file).unwrap();
    assert_eq!(report.header_bytes, 0x190);
    assert_eq!(report.images.len(), 2, "{report:#?}");
    assert_eq!(report.images[0].checksum, Checksum::Ok);
    let (code, stdout, _) = run(vmrun(dir.path()).args(["rom", "gpu.rom"]));
    assert_eq!(code, 3);
    assert!(
        stdout.contains("fix: vmrun rom gpu.rom --strip gpu.stripped.rom"),
        "{stdout}"
    );

    let out = dir.path().join("clean.rom");
    let (code, _, stderr) = run(vmrun(dir.path()).args(["rom", "gpu.rom", "--strip", "clean.rom"]));
    assert_eq!(code, 3, "the original still has its header: {stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), data, "FILE is never changed");
    let stripped = std::fs::read(&out).unwrap();
    assert_eq!(&stripped[..2], &[0x55, 0xAA]);
    assert_eq!(stripped, &data[0x190..]);
    let (code, _, _) = run(vmrun(dir.path()).args(["rom", "clean.rom"]));
    assert_eq!(code, 0);
    assert!(matches!(
        rom::strip(&file, &file),
        Err(rom::RomError::SameFile(_))
    ));
    assert!(matches!(
        rom::strip(&out, &dir.path().join("x.rom")),
        Err(rom::RomError::NothingToStrip(_))
    ));
    // OUT is the user's to name: an existing file is overwritten, a link is never written
    // through (its target stays as it was).
    std::fs::write(&out, b"old").unwrap();
    rom::strip(&file, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), &data[0x190..]);
    let target = dir.path().join("target");
    std::fs::write(&target, b"kept").unwrap();
    let link = dir.path().join("link.rom");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(matches!(
        rom::strip(&file, &link),
        Err(rom::RomError::Symlink(_))
    ));
    assert_eq!(std::fs::read(&target).unwrap(), b"kept");
}

#[test]
fn nvidia_npds_and_npde_are_understood() {
    let mut first = Image::new(0, 1, true);
    first.signature = b"NPDS";
    // The PCIR claims one block and last; NVIDIA's NPDE says two blocks and more to come.
    first.npde = Some((2, false));
    let mut data = first.bytes();
    data.extend(Image::new(3, 1, true).bytes());
    let report = rom::parse(&data);
    assert_eq!(report.images.len(), 2, "{report:#?}");
    assert_eq!(report.images[0].data_structure, "NPDS");
    assert_eq!(report.images[0].length, 1024);
    assert!(!report.images[0].last);
    assert_eq!(report.images[0].npde.as_ref().unwrap().length, 1024);
    assert_eq!(report.images[1].offset, 1024);
    assert!(report.has_efi);
}

#[test]
fn truncated_bad_checksum_and_zero_length_images_are_problems() {
    let mut data = Image::new(0, 4, true).bytes();
    data.truncate(700);
    let report = rom::parse(&data);
    assert!(report.images[0].truncated);
    assert_eq!(
        report.images[0].checksum,
        Checksum::Bad,
        "a cut x86 image cannot sum to zero"
    );
    assert!(
        report.problems[0].contains("truncated"),
        "{:?}",
        report.problems
    );

    let mut data = Image::new(0, 1, true).bytes();
    data[100] ^= 0x5a;
    let report = rom::parse(&data);
    assert_eq!(report.images[0].checksum, Checksum::Bad);
    assert!(
        report.problems.iter().any(|p| p.contains("bad checksum")),
        "{:?}",
        report.problems
    );

    let mut data = Image::new(0, 0, false).bytes();
    data.extend(Image::new(0, 1, true).bytes());
    let report = rom::parse(&data);
    assert_eq!(report.images.len(), 1, "a zero length must not loop");
    assert!(
        report.problems.iter().any(|p| p.contains("length 0")),
        "{:?}",
        report.problems
    );

    let data = Image::new(0, 1, false).bytes();
    let report = rom::parse(&data);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("not marked last")),
        "{:?}",
        report.problems
    );
}

#[test]
fn an_npde_that_goes_on_after_the_x86_image_leads_to_nvidia_extended_images() {
    let data = laptop_nvidia_rom();
    let report = rom::parse(&data);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.info.is_empty(), "{:?}", report.info);
    let walked: Vec<(usize, &str, ImageKind, CodeType, usize, bool, Checksum)> = report
        .images
        .iter()
        .map(|i| {
            (
                i.offset,
                i.signature,
                i.kind,
                i.code_type,
                i.length,
                i.last,
                i.checksum,
            )
        })
        .collect();
    assert_eq!(
        walked,
        [
            (
                0,
                "55aa",
                ImageKind::Pci,
                CodeType::X86,
                1024,
                false,
                Checksum::Ok
            ),
            (
                1024,
                "564e",
                ImageKind::NvidiaExtended,
                CodeType::Other(0xe0),
                1024,
                false,
                Checksum::NotChecked
            ),
            (
                2048,
                "564e",
                ImageKind::NvidiaExtended,
                CodeType::Other(0x70),
                512,
                true,
                Checksum::NotChecked
            ),
        ]
    );
    assert!(!report.has_efi, "an x86-only laptop ROM");

    let dir = crate::common::tempdir();
    std::fs::write(dir.path().join("laptop.rom"), &data).unwrap();
    let (code, stdout, stderr) = run(vmrun(dir.path()).args(["rom", "laptop.rom", "--json"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    let extended = &value["images"][1];
    assert_eq!(
        (
            &extended["signature"],
            &extended["kind"],
            &extended["code_type"]
        ),
        (&"564e".into(), &"nvidia_extended".into(), &0xe0.into())
    );
    assert_eq!(extended["checksum"], "not_checked");
}

#[test]
fn a_dumped_nvidia_rom_has_only_its_header_as_problem_and_none_once_stripped() {
    let dir = crate::common::tempdir();
    let dumped = with_nvflash_header(&desktop_nvidia_rom());
    std::fs::write(dir.path().join("gt640.rom"), &dumped).unwrap();
    let report = rom::parse(&dumped);
    assert_eq!(report.header_bytes, 0x400);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("1024 bytes precede the first image"),
        "{:?}",
        report.problems
    );
    let kinds: Vec<ImageKind> = report.images.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            ImageKind::Pci,
            ImageKind::Pci,
            ImageKind::NvidiaExtended,
            ImageKind::NvidiaExtended
        ]
    );
    assert!(report.has_efi);

    let (code, _, stderr) =
        run(vmrun(dir.path()).args(["rom", "gt640.rom", "--strip", "gt640.stripped.rom"]));
    assert_eq!(code, 3, "the dump itself keeps its header: {stderr}");
    let (code, stdout, stderr) =
        run(vmrun(dir.path()).args(["rom", "gt640.stripped.rom", "--json"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["problems"], serde_json::json!([]));
    assert_eq!(value["images"].as_array().map(Vec::len), Some(4));
}

#[test]
fn efi_images_whose_bytes_do_not_sum_to_zero_are_not_called_bad() {
    let data = amd_rom();
    let efi_bytes = &data[1024..];
    assert_ne!(
        byte_sum(efi_bytes),
        0,
        "the fixture must carry a non-zero sum"
    );
    let report = rom::parse(&data);
    assert_eq!(report.images[1].code_type, CodeType::Efi);
    assert_eq!(report.images[1].checksum, Checksum::NotChecked);
    assert!(
        report.images[1].checksum_ok,
        "two-state output must not say BAD"
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    let dir = crate::common::tempdir();
    std::fs::write(dir.path().join("rx580.rom"), &data).unwrap();
    let (code, stdout, _) = run(vmrun(dir.path()).args(["rom", "rx580.rom"]));
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains("BAD"), "{stdout}");
    let (_, stdout, _) = run(vmrun(dir.path()).args(["rom", "rx580.rom", "--json"]));
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["images"][1]["checksum"], "not_checked");
    assert!(value["images"][1]["checksum_ok"].is_null());
    assert_eq!(value["images"][0]["checksum"], "ok");
}

#[test]
fn an_nvidia_77bb_slot_of_efi_type_is_listed_but_is_no_efi_image() {
    let report = rom::parse(&nvidia_rom_with_an_empty_uefi_slot());
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let slot = &report.images[1];
    assert_eq!(
        (slot.signature, slot.kind, slot.code_type, slot.offset),
        ("77bb", ImageKind::NvidiaReserved, CodeType::Efi, 1024)
    );
    assert_eq!(slot.data_structure, "RGIS");
    assert!(slot.efi.is_none(), "a slot has no EFI header to read");
    assert!(!report.has_efi, "OVMF runs only 55 AA images");
    assert_eq!(report.images.len(), 3);
}

#[test]
fn an_nbsi_image_not_marked_last_is_followed_to_the_efi_images_after_it() {
    // Maxwell laptop ROMs (Quadro M2200M) put their EFI images after the NBSI image.
    let mut x86 = Image::new(0, 5, false);
    x86.npde = Some((2, false));
    let data = concat(&[
        x86,
        Image::nvidia_extended(0xe0, 2, false),
        Image::nbsi(1, false),
        Image::new(3, 2, true),
    ]);
    let report = rom::parse(&data);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.images.len(), 4);
    assert_eq!(
        (report.images[3].offset, report.images[3].code_type),
        (2560, CodeType::Efi)
    );
    assert!(report.has_efi);
}

#[test]
fn data_after_the_last_image_is_information_not_a_problem() {
    let mut data = Image::new(0, 1, true).bytes();
    data.extend(vec![0xff; 512]);
    let mut table = vec![0x30, 0xdc, 0xb4, 0x00];
    table.resize(512, 0x11);
    data.extend(table);
    data.extend(Image::new(0, 1, true).bytes());
    let report = rom::parse(&data);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.images.len(), 1);
    assert_eq!(
        report.info,
        ["1536 bytes after the last image (0x200 to the end of the file) are no image: padding, \
          then data from 0x400 (30 dc b4 00...), with an option ROM image at 0x600 that no image \
          before it leads to"]
    );

    let mut data = Image::new(0, 1, true).bytes();
    data.extend(vec![0x00; 100]);
    assert_eq!(
        rom::parse(&data).info,
        ["100 bytes after the last image (0x200 to the end of the file) are no image: 0x00 padding"]
    );
}

#[test]
fn unknown_bytes_where_the_chain_promises_an_image_stay_a_problem_that_names_them() {
    let mut data = Image::new(0, 1, false).bytes();
    data.extend([0x12, 0x34, 0x56, 0x78, 0x9a]);
    let report = rom::parse(&data);
    assert_eq!(
        report.problems,
        [
            "the image before 0x200 is not marked last, but no image starts at 0x200: it holds \
          data (12 34 56 78...)"
        ]
    );
    assert!(report.info.is_empty());
}

#[test]
fn the_image_limit_is_a_problem_only_when_images_go_on_past_it() {
    let chain = |count: usize| {
        let mut images: Vec<Image> = (1..count).map(|_| Image::new(0, 1, false)).collect();
        images.push(Image::new(0, 1, true));
        concat(&images)
    };
    let report = rom::parse(&chain(64));
    assert_eq!(report.images.len(), 64);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let report = rom::parse(&chain(65));
    assert_eq!(report.images.len(), 64);
    assert_eq!(report.problems, ["more than 64 images; the walk stopped"]);
}

/// A fake host with one device, for `--device` and the preflight.
fn fake_sysroot(vendor: &str, device: &str) -> crate::common::TestDir {
    let root = crate::common::tempdir();
    let dir = root.path().join("sys/bus/pci/devices/0000:01:00.0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vendor"), format!("0x{vendor}\n")).unwrap();
    std::fs::write(dir.join("device"), format!("0x{device}\n")).unwrap();
    root
}

#[test]
fn device_ids_are_compared_through_the_host_layer() {
    let dir = crate::common::tempdir();
    std::fs::write(dir.path().join("gpu.rom"), gpu_rom()).unwrap();
    let matching = fake_sysroot("10de", "1c02");
    let (code, stdout, stderr) = run(vmrun(dir.path())
        .env("VMRUN_SYSROOT", matching.path())
        .args(["rom", "gpu.rom", "--device", "01:00.0"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("the ROM matches"), "{stdout}");
    let other = fake_sysroot("1002", "67ff");
    let (code, stdout, _) = run(vmrun(dir.path())
        .env("VMRUN_SYSROOT", other.path())
        .args(["rom", "gpu.rom", "--device", "01:00.0", "--json"]));
    assert_eq!(code, 3);
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["device"]["matches"], false);
    assert_eq!(value["device"]["vendor_id"], "1002");
}

fn check_with_rom(rom_bytes: &[u8], firmware: &str, sysroot: &Path) -> (i32, String) {
    let dir = crate::common::tempdir();
    std::fs::write(dir.path().join("card.rom"), rom_bytes).unwrap();
    std::fs::write(
        dir.path().join("gpu.toml"),
        format!("[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"{firmware}\"\n[[pci]]\naddress = \"01:00.0\"\nromfile = \"card.rom\"\n"),
    )
    .unwrap();
    let (code, stdout, _) = run(vmrun(dir.path())
        .env("VMRUN_SYSROOT", sysroot)
        .args(["check", "gpu.toml", "--runtime-dir"])
        .arg(dir.path().join("run"))
        .arg("--state-dir")
        .arg(dir.path().join("state")));
    let rom_lines: Vec<&str> = stdout.lines().filter(|l| l.contains(" rom ")).collect();
    (code, rom_lines.join("\n"))
}

#[test]
fn the_preflight_refuses_headers_legacy_only_roms_under_ovmf_and_other_devices_roms() {
    let host = fake_sysroot("10de", "1c02");
    let (_, lines) = check_with_rom(&gpu_rom(), "ovmf", host.path());
    assert!(
        lines.starts_with("PASS") && lines.contains("x86 + efi") && lines.contains("10de:1c02"),
        "{lines}"
    );

    let mut with_header = vec![0u8; 0x200];
    with_header.extend(gpu_rom());
    let (code, lines) = check_with_rom(&with_header, "ovmf", host.path());
    assert_eq!(code, 3);
    assert!(
        lines.contains("FAIL")
            && lines.contains("512-byte dump header")
            && lines.contains("--strip"),
        "{lines}"
    );

    let legacy_only = Image::new(0, 2, true).bytes();
    let (code, lines) = check_with_rom(&legacy_only, "ovmf", host.path());
    assert_eq!(code, 3);
    assert!(
        lines.contains("FAIL") && lines.contains("no EFI (GOP) image"),
        "{lines}"
    );
    let (_, lines) = check_with_rom(&legacy_only, "seabios", host.path());
    assert!(
        lines.starts_with("PASS"),
        "SeaBIOS runs the x86 image: {lines}"
    );

    let amd_host = fake_sysroot("1002", "67ff");
    let (code, lines) = check_with_rom(&gpu_rom(), "ovmf", amd_host.path());
    assert_eq!(code, 3);
    assert!(
        lines.contains("is for 10de:1c02 but 0000:01:00.0 is 1002:67ff"),
        "{lines}"
    );
}

fn real_roms() -> Vec<Vec<u8>> {
    [IPXE_E1000E, VGABIOS_STD]
        .iter()
        .map(|p| std::fs::read(PathBuf::from(p)).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let report = rom::parse(&data);
        for image in &report.images {
            prop_assert!(image.offset < data.len());
        }
    }

    #[test]
    fn mutated_roms_never_panic(
        which in 0usize..6,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..24),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = match which {
            0 => gpu_rom(),
            1 => { let mut d = vec![0u8; 0x190]; d.extend(gpu_rom()); d }
            2 => laptop_nvidia_rom(),
            3 => with_nvflash_header(&desktop_nvidia_rom()),
            4 => nvidia_rom_with_an_empty_uefi_slot(),
            _ => real_roms()[1].clone(),
        };
        // Aim the edits at the headers and data structures of the first images, where the
        // parser looks.
        for (index, value) in edits {
            let position = index.index(data.len().min(0x80)) + 1024 * usize::from(value & 3);
            if position < data.len() {
                data[position] = value;
            }
        }
        data.truncate(cut.index(data.len() + 1));
        let report = rom::parse(&data);
        let mut previous = None;
        for image in &report.images {
            prop_assert!(previous.is_none_or(|p| image.offset > p), "offsets strictly increase");
            prop_assert!(image.offset < data.len());
            previous = Some(image.offset);
            if image.checksum != Checksum::NotChecked {
                prop_assert_eq!((image.kind, image.code_type), (ImageKind::Pci, CodeType::X86));
            }
            if image.efi.is_some() {
                prop_assert_eq!(image.kind, ImageKind::Pci);
            }
        }
        prop_assert!(report.images.len() <= 64);
        prop_assert_eq!(
            report.has_efi,
            report.images.iter().any(|i| i.kind == ImageKind::Pci && i.code_type == CodeType::Efi)
        );
    }

    #[test]
    fn whatever_follows_the_last_image_is_information_only(
        which in 0usize..4,
        trailing in prop::collection::vec(any::<u8>(), 1..2048),
    ) {
        let rom_alone = match which {
            0 => gpu_rom(),
            1 => laptop_nvidia_rom(),
            2 => desktop_nvidia_rom(),
            _ => amd_rom(),
        };
        let mut data = rom_alone.clone();
        data.extend(&trailing);
        let report = rom::parse(&data);
        prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        prop_assert_eq!(report.info.len(), 1);
        prop_assert_eq!(report.images, rom::parse(&rom_alone).images);
    }
}

#[test]
fn a_rom_truncated_after_it_was_opened_is_still_whole_in_memory() {
    let dir = crate::common::tempdir();
    let file = dir.path().join("gpu.rom");
    std::fs::write(&file, gpu_rom()).unwrap();
    let rom = rom::RomBytes::open(&file).unwrap();
    // Another process truncates it: a mapped file's pages would now fault (SIGBUS).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(rom.bytes(), gpu_rom().as_slice());
    assert_eq!(rom::parse(rom.bytes()).images.len(), 2);
}

#[test]
fn a_fifo_or_a_device_is_refused_at_once_not_read() {
    let dir = crate::common::tempdir();
    let fifo = dir.path().join("rom.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for path in [fifo.as_path(), Path::new("/dev/zero")] {
        let mut child = vmrun(dir.path())
            .arg("rom")
            .arg(path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vmrun rom {} hangs", path.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("is not a regular file"), "{stderr}");
    }
}
