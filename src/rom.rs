//! PCI option ROMs (a GPU's VBIOS): walk the images of a ROM file and say what they are.
//!
//! A PCI image starts with `55 AA`; the word at +0x18 points to the PCI data structure (`PCIR`,
//! or NVIDIA's `NPDS`, same layout) with vendor, device, class, image length in 512-byte units,
//! code type and the last-image flag. NVIDIA ROMs may follow it with an `NPDE` extension (16-byte
//! aligned) whose length and last flag take precedence, and chain NVIDIA-only images the firmware
//! never runs: `56 4E` ("VN") extended images and `77 BB` slots, with the same pointer and data
//! structure (`NPDS`, or `RGIS` in a `77 BB` slot). The walk follows that chain as nouveau does,
//! except that an NBSI image (type 0x70) is last only when it says so: Maxwell laptop ROMs put
//! their EFI images after it. EFI images carry their subsystem and machine type in the image
//! header. Every read is bounds-checked: the parser returns a report with problems, never
//! panics, and stops when an image would not move forward.

pub mod vfct;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::fsutil::OutputError;

/// More images than any real ROM has; a crafted file cannot make the walk long.
const MAX_IMAGES: usize = 64;

/// Images start at multiples of this from the start of the ROM.
const IMAGE_ALIGNMENT: usize = 512;

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
            // Vendor code types are written in hex where they are documented (NVIDIA's 0x70, 0xe0).
            CodeType::Other(n) => write!(f, "0x{n:02x}"),
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

/// Who reads an image, from the two bytes it starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// `55 AA`: a PCI expansion ROM image, which the firmware (SeaBIOS, OVMF) can run.
    Pci,
    /// `56 4E` ("VN"): NVIDIA's extended image, read by NVIDIA's driver and GPU only.
    NvidiaExtended,
    /// `77 BB`: an NVIDIA image slot (seen holding no code, only 0xff: room for a UEFI image).
    NvidiaReserved,
}

impl ImageKind {
    fn at(data: &[u8], start: usize) -> Option<Self> {
        match data.get(start..start.checked_add(2)?)? {
            [0x55, 0xAA] => Some(ImageKind::Pci),
            [0x56, 0x4E] => Some(ImageKind::NvidiaExtended),
            [0x77, 0xBB] => Some(ImageKind::NvidiaReserved),
            _ => None,
        }
    }

    fn signature(self) -> &'static str {
        match self {
            ImageKind::Pci => "55aa",
            ImageKind::NvidiaExtended => "564e",
            ImageKind::NvidiaReserved => "77bb",
        }
    }
}

/// Whether an image's bytes sum to zero, judged only where that is the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    Ok,
    Bad,
    /// The rule belongs to legacy x86 images: EFI images, Open Firmware images and NVIDIA's
    /// extended images do not keep it (every factory RX 580 EFI image sums to non-zero).
    NotChecked,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Checksum::Ok => "ok",
            Checksum::Bad => "BAD",
            Checksum::NotChecked => "not checked",
        })
    }
}

/// Written flattened into its image, as two JSON fields: `checksum` ("ok", "bad",
/// "not_checked") and the older `checksum_ok` (true, false, or null where nothing was checked).
impl Serialize for Checksum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (name, verdict) = match self {
            Checksum::Ok => ("ok", Some(true)),
            Checksum::Bad => ("bad", Some(false)),
            Checksum::NotChecked => ("not_checked", None),
        };
        let mut fields = serializer.serialize_struct("Checksum", 2)?;
        fields.serialize_field("checksum", name)?;
        fields.serialize_field("checksum_ok", &verdict)?;
        fields.end()
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
    /// The two bytes the image starts with, in hex: `55aa`, `564e` or `77bb`.
    pub signature: &'static str,
    pub kind: ImageKind,
    pub code_type: CodeType,
    pub vendor_id: String,
    pub device_id: String,
    pub class: String,
    /// Bytes, from NPDE when present, else from the PCI data structure.
    pub length: usize,
    pub last: bool,
    #[serde(flatten)]
    pub checksum: Checksum,
    /// `checksum` for output with two states only: false just when it is `Bad`.
    #[serde(skip)]
    pub checksum_ok: bool,
    /// `PCIR`, `NPDS` or `RGIS`.
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
    /// A PCI EFI image, one OVMF can run (an NVIDIA `77 BB` slot of EFI type holds no code).
    pub has_efi: bool,
    /// Bytes before the first image (a dump tool's header), 0 when the ROM starts at once.
    pub header_bytes: usize,
    /// What is wrong with the file, in words a user can act on.
    pub problems: Vec<String>,
    /// What the walk saw that is not wrong, such as the padding and data after the last image.
    pub info: Vec<String>,
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
/// The data structure of the `77 BB` slots NVIDIA ROMs keep (nouveau reads it like PCIR).
const RGIS: &[u8; 4] = b"RGIS";
const NPDE: &[u8; 4] = b"NPDE";
const EFI_SIGNATURE: u32 = 0x0EF1;

/// An image that starts at `start`: its kind, and where its data structure is and what it is.
struct ImageHeader {
    kind: ImageKind,
    structure_at: usize,
    structure: [u8; 4],
}

fn image_header(data: &[u8], start: usize) -> Option<ImageHeader> {
    let kind = ImageKind::at(data, start)?;
    let pointer = usize::from(u16_at(data, start.checked_add(0x18)?)?);
    let at = start.checked_add(pointer)?;
    let structure: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    [PCIR, NPDS, RGIS]
        .contains(&&structure)
        .then_some(ImageHeader {
            kind,
            structure_at: at,
            structure,
        })
}

/// A ROM must open with a PCI image; NVIDIA's own images only ever follow one.
fn starts_rom(data: &[u8], start: usize) -> bool {
    image_header(data, start).is_some_and(|header| {
        header.kind == ImageKind::Pci && [PCIR, NPDS].contains(&&header.structure)
    })
}

/// Where the first real image starts: a `55 AA` whose pointer leads to a PCI data structure.
fn find_first_image(data: &[u8]) -> Option<usize> {
    (0..data.len().saturating_sub(1)).find(|&offset| {
        data[offset] == 0x55 && data[offset + 1] == 0xAA && starts_rom(data, offset)
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

fn first_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(4)
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_padding(byte: u8) -> bool {
    byte == 0xff || byte == 0x00
}

/// What the bytes from `start` to the end of the file hold, for a user who wonders what they are;
/// `rom_start` is where the first image starts.
fn describe_bytes(data: &[u8], rom_start: usize, start: usize) -> String {
    let rest = data.get(start..).unwrap_or(&[]);
    if rest.is_empty() {
        return "nothing".to_string();
    }
    let Some(first_data) = rest.iter().position(|&byte| !is_padding(byte)) else {
        let ff = rest.iter().filter(|&&byte| byte == 0xff).count();
        return match (ff, rest.len() - ff) {
            (_, 0) => "0xff padding".to_string(),
            (0, _) => "0x00 padding".to_string(),
            _ => "0xff and 0x00 padding".to_string(),
        };
    };
    let data_at = start + first_data;
    let mut words = if first_data == 0 {
        format!("data ({}...)", first_bytes(rest))
    } else {
        format!(
            "padding, then data from 0x{data_at:x} ({}...)",
            first_bytes(&rest[first_data..])
        )
    };
    // Only at image alignment, as firmware and rom-parser look, so code bytes are not taken
    // for a signature.
    let misaligned = (data_at - rom_start) % IMAGE_ALIGNMENT;
    let aligned_from = data_at + (IMAGE_ALIGNMENT - misaligned) % IMAGE_ALIGNMENT;
    if let Some(image) = (aligned_from..data.len())
        .step_by(IMAGE_ALIGNMENT)
        .find(|&offset| starts_rom(data, offset))
    {
        words.push_str(&format!(
            ", with an option ROM image at 0x{image:x} that no image before it leads to"
        ));
    }
    words
}

/// Walks every image of a ROM held in memory.
pub fn parse(data: &[u8]) -> RomReport {
    let mut report = RomReport {
        images: Vec::new(),
        has_efi: false,
        header_bytes: 0,
        problems: Vec::new(),
        info: Vec::new(),
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
    if !walk_chain(data, first, &mut report) {
        report
            .problems
            .push(format!("more than {MAX_IMAGES} images; the walk stopped"));
    }
    report.has_efi = report
        .images
        .iter()
        .any(|image| image.kind == ImageKind::Pci && image.code_type == CodeType::Efi);
    report
}

/// Follows the chain from the image at `first`, adding images, problems and information to
/// `report`; false when it gave up after `MAX_IMAGES` images.
fn walk_chain(data: &[u8], first: usize, report: &mut RomReport) -> bool {
    let mut offset = first;
    for _ in 0..MAX_IMAGES {
        let Some(header) = image_header(data, offset) else {
            report.problems.push(format!(
                "the image before 0x{offset:x} is not marked last, but no image starts at \
                 0x{offset:x}: it holds {}",
                describe_bytes(data, first, offset)
            ));
            return true;
        };
        let image = read_image(data, first, offset, &header, &mut report.problems);
        let (length, last, truncated) = (image.length, image.last, image.truncated);
        let end = offset.saturating_add(length);
        report.images.push(image);
        if truncated {
            report.problems.push(format!(
                "the image at 0x{offset:x} claims {length} bytes but the file ends after {} (truncated dump)",
                data.len() - offset
            ));
            return true;
        }
        if length == 0 {
            report.problems.push(format!(
                "the image at 0x{offset:x} has length 0; the walk stops there"
            ));
            return true;
        }
        if last {
            if end < data.len() {
                report.info.push(format!(
                    "{} bytes after the last image (0x{end:x} to the end of the file) are no \
                     image: {}",
                    data.len() - end,
                    describe_bytes(data, first, end)
                ));
            }
            return true;
        }
        if end >= data.len() {
            report.problems.push(format!(
                "the image at 0x{offset:x} is not marked last but the file ends after it"
            ));
            return true;
        }
        offset = end;
    }
    false
}

/// One image at `offset` whose header was found; `rom_start` is where the first image starts.
fn read_image(
    data: &[u8],
    rom_start: usize,
    offset: usize,
    header: &ImageHeader,
    problems: &mut Vec<String>,
) -> RomImage {
    let structure = header.structure_at;
    let read16 = |at: usize| u16_at(data, structure + at).unwrap_or(0);
    let class_bytes = data
        .get(structure + 0x0d..structure + 0x10)
        .unwrap_or(&[0, 0, 0]);
    let structure_length = usize::from(read16(0x0a));
    let mut length = usize::from(read16(0x10)) * 512;
    let code_byte = data.get(structure + 0x14).copied().unwrap_or(0);
    let mut last = data
        .get(structure + 0x15)
        .is_some_and(|indicator| indicator & 0x80 != 0);
    // 16-byte aligned as the card sees it: relative to where the ROM starts, not the file.
    let npde_at = rom_start + ((structure - rom_start + structure_length.max(0x18) + 0x0f) & !0x0f);
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
    let efi = (header.kind == ImageKind::Pci && code_type == CodeType::Efi).then(|| {
        if u32_at(data, offset + 0x04) != Some(EFI_SIGNATURE) {
            problems.push(format!(
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
    let checksum = if header.kind == ImageKind::Pci && code_type == CodeType::X86 {
        // An image cut short or of no length cannot keep the rule either.
        match data.get(offset..end) {
            Some(bytes)
                if length > 0 && bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0 =>
            {
                Checksum::Ok
            }
            _ => Checksum::Bad,
        }
    } else {
        Checksum::NotChecked
    };
    if checksum == Checksum::Bad && !truncated && length > 0 {
        problems.push(format!(
            "the x86 image at 0x{offset:x} has a bad checksum (a corrupt or modified dump)"
        ));
    }
    let vendor = read16(0x04);
    let device = read16(0x06);
    RomImage {
        offset,
        signature: header.kind.signature(),
        kind: header.kind,
        code_type,
        vendor_id: format!("{vendor:04x}"),
        device_id: format!("{device:04x}"),
        class: format!(
            "{:02x}{:02x}{:02x}",
            class_bytes[2], class_bytes[1], class_bytes[0]
        ),
        length,
        last,
        checksum,
        checksum_ok: checksum != Checksum::Bad,
        data_structure: String::from_utf8_lossy(&header.structure).into_owned(),
        npde,
        efi,
        truncated,
        vendor,
        device,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RomError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a regular file; give the path of a ROM file", .0.display())]
    NotRegular(PathBuf),
    #[error("{} is {len} bytes; a ROM file is at most {MAX_ROM_BYTES} bytes", .path.display())]
    TooLarge { path: PathBuf, len: u64 },
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
    #[error("{} exists; give --force to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("{} is a symbolic link; vmrun does not write through one: give the file's own path", .0.display())]
    Symlink(PathBuf),
    #[error(
        "{} does not exist: this machine's firmware gives no VFCT table, which AMD APUs (and \
         laptops' AMD GPUs without a ROM of their own) have; a card with a ROM of its own is \
         read with `vmrun rom dump ADDR OUT`", .0.display()
    )]
    NoVfct(PathBuf),
    #[error("cannot read {}: {source}; the ACPI tables are readable by root only: run vmrun as root", .path.display())]
    VfctDenied {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Vfct {
        path: PathBuf,
        source: vfct::VfctError,
    },
}

/// The largest ROM file read: PCI expansion ROM BARs are at most 16 MiB; four times that
/// leaves room for dumps with headers and bounds the memory a wrong path can take.
pub const MAX_ROM_BYTES: u64 = 64 << 20;

/// A ROM file read into memory. Not mapped: a file truncated while it is read would make a
/// mapped page fault (SIGBUS); a read just ends early. Regular files only: a FIFO or a device
/// named by mistake would block or never end.
pub struct RomBytes {
    data: Vec<u8>,
}

impl RomBytes {
    pub fn open(path: &Path) -> Result<Self, RomError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let read_error = |source| RomError::Read {
            path: path.to_path_buf(),
            source,
        };
        // O_NONBLOCK: opening a FIFO for reading would wait for a writer.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(read_error)?;
        let meta = file.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(RomError::NotRegular(path.to_path_buf()));
        }
        if meta.len() > MAX_ROM_BYTES {
            return Err(RomError::TooLarge {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_ROM_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(read_error)?;
        if data.len() as u64 > MAX_ROM_BYTES {
            return Err(RomError::TooLarge {
                path: path.to_path_buf(),
                len: data.len() as u64,
            });
        }
        Ok(RomBytes { data })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

pub fn inspect(path: &Path) -> Result<RomReport, RomError> {
    Ok(parse(RomBytes::open(path)?.bytes()))
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
    let rom = RomBytes::open(path)?;
    let report = parse(rom.bytes());
    if report.images.is_empty() {
        return Err(RomError::NoImage(path.to_path_buf()));
    }
    if report.header_bytes == 0 {
        return Err(RomError::NothingToStrip(path.to_path_buf()));
    }
    let stripped = &rom.bytes()[report.header_bytes..];
    // OUT is a file the user named: overwritten as before, but never through a link.
    write_rom_file(out, stripped, true)?;
    Ok(parse(stripped))
}

/// Writes `data` to a ROM file vmrun creates, never through a symbolic link: without `force`
/// it must not exist at all (`O_EXCL`, which also refuses a dangling link), with `force` an
/// existing file is truncated but a link is refused (`O_NOFOLLOW`). Mode 0644 (QEMU, running
/// as another user, reads `romfile` itself) whatever the umask.
pub fn write_rom_file(path: &Path, data: &[u8], force: bool) -> Result<(), RomError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let write_error = |source| RomError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match crate::fsutil::open_output(path, force, 0o644) {
        Ok(file) => file,
        Err(OutputError::Exists) => return Err(RomError::Exists(path.to_path_buf())),
        Err(OutputError::Symlink) => return Err(RomError::Symlink(path.to_path_buf())),
        Err(OutputError::Io(error)) => return Err(write_error(error)),
    };
    if !file.metadata().map_err(write_error)?.is_file() {
        return Err(RomError::NotRegular(path.to_path_buf()));
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(write_error)?;
    file.write_all(data).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

/// Where `vmrun rom --from-acpi --output FILE` writes the table's images: FILE for one; with
/// several, one file per GPU named by its PCI address before the extension
/// (`apu.rom` -> `apu-c1-00.0.rom`), so each `[[pci]] romfile` names its own. An address the
/// table gives more than once also gets each such image's index in the table
/// (`apu-c1-00.0-2.rom`): the same name would make the second image overwrite the first.
pub fn acpi_rom_paths(output: &Path, images: &[vfct::VfctImage]) -> Vec<PathBuf> {
    if images.len() == 1 {
        return vec![output.to_path_buf()];
    }
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = output
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let addresses: Vec<String> = images.iter().map(vfct::VfctImage::address).collect();
    addresses
        .iter()
        .enumerate()
        .map(|(index, address)| {
            let repeated = addresses.iter().filter(|other| *other == address).count() > 1;
            let suffix = if repeated {
                format!("-{index}")
            } else {
                String::new()
            };
            output.with_file_name(format!(
                "{stem}-{}{suffix}{extension}",
                address.replace(':', "-")
            ))
        })
        .collect()
}

/// The host path of the VFCT table.
pub const VFCT_PATH: &str = "/sys/firmware/acpi/tables/VFCT";

/// Reads and parses the VFCT table at `path` (the host root's `VFCT_PATH`).
pub fn read_vfct(path: &Path) -> Result<vfct::Vfct, RomError> {
    let bytes = match RomBytes::open(path) {
        Ok(bytes) => bytes,
        Err(RomError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(RomError::NoVfct(path.to_path_buf()))
        }
        Err(RomError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            return Err(RomError::VfctDenied {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(other) => return Err(other),
    };
    vfct::parse(bytes.bytes()).map_err(|source| RomError::Vfct {
        path: path.to_path_buf(),
        source,
    })
}

/// One image of the VFCT table: what the table says, what the walker makes of it, and whether
/// it is for the GPU the table names.
#[derive(Clone, Debug, Serialize)]
pub struct AcpiImage {
    #[serde(flatten)]
    pub image: vfct::VfctImage,
    pub report: RomReport,
    /// The walker's first image carries the vendor:device the table names.
    pub ids_match: bool,
    pub ok: bool,
}

impl AcpiImage {
    pub fn check(image: vfct::VfctImage) -> Self {
        let report = parse(&image.data);
        let ids = (
            u16::from_str_radix(&image.vendor_id, 16).unwrap_or(0),
            u16::from_str_radix(&image.device_id, 16).unwrap_or(0),
        );
        let ids_match = report.is_for(ids.0, ids.1);
        // A header before the first image would have to be stripped first to be a `romfile`.
        let ok = !report.images.is_empty()
            && report.problems.is_empty()
            && report.header_bytes == 0
            && ids_match;
        AcpiImage {
            image,
            report,
            ids_match,
            ok,
        }
    }
}

#[cfg(test)]
mod tests;
