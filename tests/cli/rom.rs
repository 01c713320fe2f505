//! `vmrun rom` and the ROM preflight: real ROMs Debian ships, synthetic ones, and a property
//! test that the parser never panics or reads out of bounds.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::Value;
use vmrun::rom::{self, CodeType};

use crate::common::{repo_root, run, vmrun};

const IPXE_E1000E: &str = "/usr/lib/ipxe/qemu/efi-e1000e.rom";
const VGABIOS_STD: &str = "/usr/share/seabios/vgabios-stdvga.bin";

/// One synthetic image: 55 AA, data structure at 0x1c, optional NPDE, checksum fixed.
struct Image {
    vendor: u16,
    device: u16,
    code_type: u8,
    blocks: u16,
    last: bool,
    signature: &'static [u8; 4],
    npde: Option<(u16, bool)>,
    efi_machine: u16,
}

impl Image {
    fn new(code_type: u8, blocks: u16, last: bool) -> Self {
        Image {
            vendor: 0x10de,
            device: 0x1c02,
            code_type,
            blocks,
            last,
            signature: b"PCIR",
            npde: None,
            efi_machine: 0x8664,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let blocks = self.npde.map(|(b, _)| b).unwrap_or(self.blocks);
        let mut data = vec![0u8; usize::from(blocks.max(1)) * 512];
        data[0] = 0x55;
        data[1] = 0xAA;
        data[2] = blocks as u8;
        if self.code_type == 3 {
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
        let sum = data.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        let last_byte = data.len() - 1;
        data[last_byte] = data[last_byte].wrapping_sub(sum);
        data
    }
}

fn gpu_rom() -> Vec<u8> {
    let mut data = Image::new(0, 2, false).bytes();
    data.extend(Image::new(3, 3, true).bytes());
    data
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
    assert!(x86.checksum_ok && efi.checksum_ok);
    let info = efi.efi.as_ref().unwrap();
    assert_eq!((info.machine_type.as_str(), info.subsystem), ("X64", 11));
    assert!(report.has_efi && report.problems.is_empty());
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
    assert!(report.images[0].last && report.images[0].checksum_ok);
    assert!(!report.has_efi);
}

#[test]
fn json_output_has_the_documented_fields() {
    let (code, stdout, stderr) = run(vmrun(&repo_root()).args(["rom", IPXE_E1000E, "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["has_efi"], true);
    assert_eq!(value["header_bytes"], 0);
    let image = &value["images"][1];
    for field in [
        "offset",
        "code_type",
        "vendor_id",
        "device_id",
        "class",
        "length",
        "last",
        "checksum_ok",
    ] {
        assert!(!image[field].is_null(), "{field} missing: {image}");
    }
    assert_eq!(image["code_type"], "efi");
    assert_eq!(image["vendor_id"], "8086");
    assert_eq!(image["offset"], 0x12600);
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
    assert!(report.images.iter().all(|i| i.checksum_ok), "{report:#?}");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_dump_header_is_reported_and_strip_writes_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = b"NVFLASH DUMP HEADER".to_vec();
    data.resize(0x190, 0xee);
    data.extend(gpu_rom());
    let file = dir.path().join("gpu.rom");
    std::fs::write(&file, &data).unwrap();
    let report = rom::inspect(&file).unwrap();
    assert_eq!(report.header_bytes, 0x190);
    assert_eq!(report.images.len(), 2, "{report:#?}");
    assert!(report.images.iter().all(|i| i.checksum_ok));
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
    assert!(report.images[0].truncated && !report.images[0].checksum_ok);
    assert!(
        report.problems[0].contains("truncated"),
        "{:?}",
        report.problems
    );

    let mut data = Image::new(0, 1, true).bytes();
    data[100] ^= 0x5a;
    let report = rom::parse(&data);
    assert!(!report.images[0].checksum_ok);
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

/// A fake host with one device, for `--device` and the preflight.
fn fake_sysroot(vendor: &str, device: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sys/bus/pci/devices/0000:01:00.0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vendor"), format!("0x{vendor}\n")).unwrap();
    std::fs::write(dir.join("device"), format!("0x{device}\n")).unwrap();
    root
}

#[test]
fn device_ids_are_compared_through_the_host_layer() {
    let dir = tempfile::tempdir().unwrap();
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
    let dir = tempfile::tempdir().unwrap();
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
        which in 0usize..3,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..24),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = match which {
            0 => gpu_rom(),
            1 => { let mut d = vec![0u8; 0x190]; d.extend(gpu_rom()); d }
            _ => real_roms()[1].clone(),
        };
        // Aim the edits at the headers and data structures, where the parser looks.
        for (index, value) in edits {
            let position = index.index(data.len().min(0x80)) + if value & 1 == 0 { 0 } else { 1024 };
            if position < data.len() {
                data[position] = value;
            }
        }
        data.truncate(cut.index(data.len() + 1));
        let report = rom::parse(&data);
        let mut previous = None;
        for image in &report.images {
            prop_assert!(previous.is_none_or(|p| image.offset > p), "offsets strictly increase");
            previous = Some(image.offset);
        }
    }
}
