//! PCI option ROMs (a GPU's VBIOS): walk the images of a ROM file and say what they are.
//!
//! Each image starts with `55 AA`; the word at +0x18 points to the PCI data structure
//! (`PCIR`, or NVIDIA's `NPDS`, same layout) with vendor, device, class, image length in 512-byte
//! units, code type and the last-image flag. NVIDIA ROMs may follow it with an `NPDE` extension
//! (16-byte aligned) whose length and last flag take precedence. EFI images carry their subsystem
//! and machine type in the image header. Every read is bounds-checked: the parser returns a
//! report with problems, never panics, and stops when an image would not move forward.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

/// More images than any real ROM has; a crafted file cannot make the walk long.
const MAX_IMAGES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeType {
    X86,
    OpenFirmware,
    Hppa,
    Efi,
    Other(u8),
}

impl CodeType {
    fn from_byte(byte: u8) -> Self {
        match byte {
            0 => CodeType::X86,
            1 => CodeType::OpenFirmware,
            2 => CodeType::Hppa,
            3 => CodeType::Efi,
            other => CodeType::Other(other),
        }
    }
}

impl fmt::Display for CodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeType::X86 => f.write_str("x86"),
            CodeType::OpenFirmware => f.write_str("openfirmware"),
            CodeType::Hppa => f.write_str("hppa"),
            CodeType::Efi => f.write_str("efi"),
            CodeType::Other(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for CodeType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CodeType::Other(n) => serializer.serialize_u8(*n),
            named => serializer.serialize_str(&named.to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EfiInfo {
    /// 10 application, 11 boot-service driver, 12 runtime driver.
    pub subsystem: u16,
    pub subsystem_name: String,
    /// `X64`, `AA64`, `IA32`...
    pub machine_type: String,
    pub compressed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NpdeInfo {
    pub length: usize,
    pub last: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RomImage {
    pub offset: usize,
    pub code_type: CodeType,
    pub vendor_id: String,
    pub device_id: String,
    pub class: String,
    /// Bytes, from NPDE when present, else from the PCI data structure.
    pub length: usize,
    pub last: bool,
    pub checksum_ok: bool,
    /// `PCIR` or `NPDS`.
    pub data_structure: String,
    pub npde: Option<NpdeInfo>,
    pub efi: Option<EfiInfo>,
    /// The image claims more bytes than the file has.
    pub truncated: bool,
    #[serde(skip)]
    pub vendor: u16,
    #[serde(skip)]
    pub device: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RomReport {
    pub images: Vec<RomImage>,
    pub has_efi: bool,
    /// Bytes before the first image (a dump tool's header), 0 when the ROM starts at once.
    pub header_bytes: usize,
    /// What is wrong with the file, in words a user can act on.
    pub problems: Vec<String>,
    pub size: usize,
}

impl RomReport {
    pub fn first_image(&self) -> Option<&RomImage> {
        self.images.first()
    }

    /// Whether the ROM is made for a device with these ids (its first image says so).
    pub fn is_for(&self, vendor: u16, device: u16) -> bool {
        self.first_image()
            .is_some_and(|image| (image.vendor, image.device) == (vendor, device))
    }
}

fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    let bytes = data.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

const PCIR: &[u8; 4] = b"PCIR";
const NPDS: &[u8; 4] = b"NPDS";
const NPDE: &[u8; 4] = b"NPDE";
const EFI_SIGNATURE: u32 = 0x0EF1;

/// The PCI data structure of an image starting at `start`, if it has one.
fn data_structure(data: &[u8], start: usize) -> Option<(usize, [u8; 4])> {
    if data.get(start..start.checked_add(2)?)? != [0x55, 0xAA] {
        return None;
    }
    let pointer = usize::from(u16_at(data, start + 0x18)?);
    let at = start.checked_add(pointer)?;
    let signature: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    (&signature == PCIR || &signature == NPDS).then_some((at, signature))
}

/// Where the first real image starts: a `55 AA` whose pointer leads to a PCI data structure.
fn find_first_image(data: &[u8]) -> Option<usize> {
    (0..data.len().saturating_sub(1)).find(|&offset| {
        data[offset] == 0x55 && data[offset + 1] == 0xAA && data_structure(data, offset).is_some()
    })
}

fn machine_name(machine: u16) -> String {
    match machine {
        0x014c => "IA32".into(),
        0x0200 => "IA64".into(),
        0x0EBC => "EBC".into(),
        0x8664 => "X64".into(),
        0x01c2 => "ARM".into(),
        0xAA64 => "AA64".into(),
        0x5032 => "RISCV32".into(),
        0x5064 => "RISCV64".into(),
        0x6264 => "LOONGARCH64".into(),
        other => format!("0x{other:04x}"),
    }
}

fn subsystem_name(subsystem: u16) -> String {
    match subsystem {
        10 => "application".into(),
        11 => "boot service driver".into(),
        12 => "runtime driver".into(),
        other => format!("subsystem {other}"),
    }
}

/// Walks every image of a ROM held in memory.
pub fn parse(data: &[u8]) -> RomReport {
    let mut report = RomReport {
        images: Vec::new(),
        has_efi: false,
        header_bytes: 0,
        problems: Vec::new(),
        size: data.len(),
    };
    let Some(first) = find_first_image(data) else {
        report.problems.push(if data.is_empty() {
            "the file is empty".to_string()
        } else {
            "no option ROM image: no `55 AA` signature leads to a PCIR/NPDS structure \
             (not a PCI ROM, or an encrypted/compressed dump)"
                .to_string()
        });
        return report;
    };
    report.header_bytes = first;
    if first > 0 {
        report.problems.push(format!(
            "{first} bytes precede the first image (a dump tool's header, as nvflash and GPU-Z \
             write them); the GPU and QEMU need the ROM to start at the image"
        ));
    }
    let mut offset = first;
    while report.images.len() < MAX_IMAGES {
        let Some((pcir, signature)) = data_structure(data, offset) else {
            report.problems.push(format!(
                "the image before 0x{offset:x} is not marked last, but no image starts at 0x{offset:x}"
            ));
            break;
        };
        let read16 = |at: usize| u16_at(data, pcir + at).unwrap_or(0);
        let class_bytes = data.get(pcir + 0x0d..pcir + 0x10).unwrap_or(&[0, 0, 0]);
        let structure_length = usize::from(read16(0x0a));
        let mut length = usize::from(read16(0x10)) * 512;
        let code_byte = data.get(pcir + 0x14).copied().unwrap_or(0);
        let mut last = data
            .get(pcir + 0x15)
            .is_some_and(|indicator| indicator & 0x80 != 0);
        // 16-byte aligned as the card sees it: relative to where the ROM starts, not the file.
        let npde_at = first + ((pcir - first + structure_length.max(0x18) + 0x0f) & !0x0f);
        let npde = match data.get(npde_at..npde_at + 4) {
            Some(found) if found == NPDE => {
                let npde_length = usize::from(u16_at(data, npde_at + 0x08).unwrap_or(0)) * 512;
                let npde_last = data.get(npde_at + 0x0a).is_some_and(|i| i & 0x80 != 0);
                if npde_length > 0 {
                    length = npde_length;
                    last = npde_last;
                }
                Some(NpdeInfo {
                    length: npde_length,
                    last: npde_last,
                })
            }
            _ => None,
        };
        let code_type = CodeType::from_byte(code_byte);
        let efi = (code_type == CodeType::Efi).then(|| {
            let signature = u32_at(data, offset + 0x04).unwrap_or(0);
            if signature != EFI_SIGNATURE {
                report.problems.push(format!(
                    "the EFI image at 0x{offset:x} lacks the EFI signature 0x0EF1"
                ));
            }
            let subsystem = u16_at(data, offset + 0x08).unwrap_or(0);
            EfiInfo {
                subsystem,
                subsystem_name: subsystem_name(subsystem),
                machine_type: machine_name(u16_at(data, offset + 0x0a).unwrap_or(0)),
                compressed: u16_at(data, offset + 0x0c).unwrap_or(0) != 0,
            }
        });
        let end = offset.saturating_add(length);
        let truncated = end > data.len();
        let checksum_ok = !truncated
            && length > 0
            && data[offset..end]
                .iter()
                .fold(0u8, |sum, byte| sum.wrapping_add(*byte))
                == 0;
        let vendor = read16(0x04);
        let device = read16(0x06);
        report.images.push(RomImage {
            offset,
            code_type,
            vendor_id: format!("{vendor:04x}"),
            device_id: format!("{device:04x}"),
            class: format!(
                "{:02x}{:02x}{:02x}",
                class_bytes[2], class_bytes[1], class_bytes[0]
            ),
            length,
            last,
            checksum_ok,
            data_structure: String::from_utf8_lossy(&signature).into_owned(),
            npde,
            efi,
            truncated,
            vendor,
            device,
        });
        if truncated {
            report.problems.push(format!(
                "the image at 0x{offset:x} claims {length} bytes but the file ends after {} (truncated dump)",
                data.len() - offset
            ));
            break;
        }
        if length == 0 {
            report.problems.push(format!(
                "the image at 0x{offset:x} has length 0; the walk stops there"
            ));
            break;
        }
        if !checksum_ok && code_type == CodeType::X86 {
            report.problems.push(format!(
                "the x86 image at 0x{offset:x} has a bad checksum (a corrupt or modified dump)"
            ));
        }
        if last {
            break;
        }
        offset = end;
        if offset >= data.len() {
            report.problems.push(format!(
                "the image at 0x{:x} is not marked last but the file ends after it",
                report.images.last().map(|i| i.offset).unwrap_or(0)
            ));
            break;
        }
    }
    if report.images.len() == MAX_IMAGES {
        report
            .problems
            .push(format!("more than {MAX_IMAGES} images; the walk stopped"));
    }
    report.has_efi = report
        .images
        .iter()
        .any(|image| image.code_type == CodeType::Efi);
    report
}

#[derive(Debug, thiserror::Error)]
pub enum RomError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} has no header to strip: its first image starts at byte 0", .0.display())]
    NothingToStrip(PathBuf),
    #[error("{} holds no option ROM image to strip to", .0.display())]
    NoImage(PathBuf),
    #[error("refusing to overwrite {} with its own stripped copy; give another OUT", .0.display())]
    SameFile(PathBuf),
}

/// A read-only map of a ROM file.
pub struct MappedRom {
    map: Option<memmap2::Mmap>,
}

impl MappedRom {
    pub fn open(path: &Path) -> Result<Self, RomError> {
        let read_error = |source| RomError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let len = file.metadata().map_err(read_error)?.len();
        if len == 0 {
            return Ok(MappedRom { map: None });
        }
        Ok(MappedRom {
            map: Some(map_read_only(&file).map_err(read_error)?),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

fn map_read_only(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and private to this process; a ROM file changed by another
    // process while vmrun reads it can only change the bytes the bounds-checked parser sees.
    unsafe { memmap2::Mmap::map(file) }
}

pub fn inspect(path: &Path) -> Result<RomReport, RomError> {
    Ok(parse(MappedRom::open(path)?.bytes()))
}

/// Writes `out` as a copy of `path` that starts at its first image; `path` is never changed.
pub fn strip(path: &Path, out: &Path) -> Result<RomReport, RomError> {
    let same = match (std::fs::canonicalize(path), std::fs::canonicalize(out)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(RomError::SameFile(out.to_path_buf()));
    }
    let rom = MappedRom::open(path)?;
    let report = parse(rom.bytes());
    if report.images.is_empty() {
        return Err(RomError::NoImage(path.to_path_buf()));
    }
    if report.header_bytes == 0 {
        return Err(RomError::NothingToStrip(path.to_path_buf()));
    }
    let stripped = &rom.bytes()[report.header_bytes..];
    std::fs::write(out, stripped).map_err(|source| RomError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(parse(stripped))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
