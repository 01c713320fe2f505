//! AMD's VFCT ("VBIOS Fetch Table") ACPI table: where the firmware of an AMD APU (or a laptop's
//! AMD GPU without a ROM chip of its own) leaves the GPU's video BIOS for the OS, since no card
//! ROM holds it. Linux exposes the table as `/sys/firmware/acpi/tables/VFCT` (root only).
//!
//! Layout (AMD's `UEFI_ACPI_VFCT` as amdgpu reads it, little-endian, packed): the 36-byte ACPI
//! header (`VFCT`, total length at 4, checksum at 9), a 16-byte table UUID at 0x24, the offset
//! of the first image at 0x34, the offset of the GOP library blocks at 0x38, 16 reserved bytes;
//! then from that offset one block per image: a 28-byte header (PCI bus, device and function as
//! u32 each, vendor, device, subsystem vendor and subsystem as u16 each, a u32 revision and the
//! u32 length of the image), followed by the image itself, the next block right after it. The
//! kernel skips blocks of length 0 and refuses a block that would end past the table's length;
//! so does this parser.

use serde::Serialize;

/// The ACPI header, then the VFCT's own fields: where the first image block may start.
pub const VFCT_HEADER_BYTES: usize = 0x4c;
/// One image block's header.
pub const IMAGE_HEADER_BYTES: usize = 28;
/// More images than a machine has GPUs; a crafted table cannot make the walk long.
const MAX_IMAGES: usize = 64;

/// One video BIOS the table holds, for the GPU at `bus:device.function` (domain 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VfctImage {
    pub bus: u32,
    pub device: u32,
    pub function: u32,
    /// `1002`, in hex as `lspci -n` prints it.
    pub vendor_id: String,
    pub device_id: String,
    pub subsystem_vendor_id: String,
    pub subsystem_id: String,
    pub revision: u32,
    /// Where the image starts in the table.
    pub offset: usize,
    pub length: usize,
    #[serde(skip)]
    pub data: Vec<u8>,
}

impl VfctImage {
    /// `c1:00.0`, as the table gives it (it has no PCI domain).
    pub fn address(&self) -> String {
        format!("{:02x}:{:02x}.{:x}", self.bus, self.device, self.function)
    }
}

/// What the table holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Vfct {
    /// The table's length from its header.
    pub length: usize,
    /// Whether the table's bytes sum to zero, as every ACPI table's must.
    pub checksum_ok: bool,
    pub oem_id: String,
    pub images: Vec<VfctImage>,
    /// Image blocks of length 0, which the kernel skips too.
    pub empty_blocks: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VfctError {
    #[error(
        "the table is {0} bytes, shorter than the VFCT header ({VFCT_HEADER_BYTES} bytes): it \
         is cut off or not a VFCT table"
    )]
    TooShort(usize),
    #[error("the table's signature is `{0}`, not `VFCT`")]
    NotVfct(String),
    #[error(
        "the table's header says {length} bytes but only {read} could be read: the table is \
         truncated"
    )]
    Truncated { length: usize, read: usize },
    #[error(
        "the first image's offset, {0:#x}, points into the table's header: the table is damaged"
    )]
    BadOffset(usize),
    #[error(
        "the image header at {at:#x} needs {IMAGE_HEADER_BYTES} bytes but the table ends at \
         {length:#x}: the table is truncated"
    )]
    HeaderTruncated { at: usize, length: usize },
    #[error(
        "the image of {address} at {at:#x} is {image} bytes but the table ends {left} bytes \
         after its start: the table is truncated"
    )]
    ImageTruncated {
        address: String,
        at: usize,
        image: usize,
        left: usize,
    },
    #[error("the table holds more than {MAX_IMAGES} images: it is damaged")]
    TooManyImages,
    #[error("the table holds no video BIOS image (every image block is empty)")]
    NoImage,
}

fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([data[at], data[at + 1]])
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Reads a VFCT table held in memory (the file's bytes). Every read is bounds-checked first.
pub fn parse(table: &[u8]) -> Result<Vfct, VfctError> {
    if table.len() < VFCT_HEADER_BYTES {
        return Err(VfctError::TooShort(table.len()));
    }
    if &table[0..4] != b"VFCT" {
        return Err(VfctError::NotVfct(
            String::from_utf8_lossy(&table[0..4]).into_owned(),
        ));
    }
    let length = u32_at(table, 4) as usize;
    if length < VFCT_HEADER_BYTES {
        return Err(VfctError::TooShort(length));
    }
    if length > table.len() {
        return Err(VfctError::Truncated {
            length,
            read: table.len(),
        });
    }
    let table = &table[..length];
    let checksum_ok = table.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) == 0;
    let oem_id = String::from_utf8_lossy(&table[10..16])
        .trim_end_matches(['\0', ' '])
        .to_string();
    let mut offset = u32_at(table, 0x34) as usize;
    if offset < VFCT_HEADER_BYTES {
        return Err(VfctError::BadOffset(offset));
    }
    let mut images = Vec::new();
    let mut empty_blocks = 0;
    while offset < length {
        if images.len() + empty_blocks >= MAX_IMAGES {
            return Err(VfctError::TooManyImages);
        }
        let at = offset;
        let Some(start) = at.checked_add(IMAGE_HEADER_BYTES).filter(|s| *s <= length) else {
            return Err(VfctError::HeaderTruncated { at, length });
        };
        let image_length = u32_at(table, at + 24) as usize;
        let address = format!(
            "{:02x}:{:02x}.{:x}",
            u32_at(table, at),
            u32_at(table, at + 4),
            u32_at(table, at + 8)
        );
        let Some(end) = start.checked_add(image_length).filter(|e| *e <= length) else {
            return Err(VfctError::ImageTruncated {
                address,
                at: start,
                image: image_length,
                left: length - start,
            });
        };
        if image_length == 0 {
            empty_blocks += 1;
        } else {
            images.push(VfctImage {
                bus: u32_at(table, at),
                device: u32_at(table, at + 4),
                function: u32_at(table, at + 8),
                vendor_id: format!("{:04x}", u16_at(table, at + 12)),
                device_id: format!("{:04x}", u16_at(table, at + 14)),
                subsystem_vendor_id: format!("{:04x}", u16_at(table, at + 16)),
                subsystem_id: format!("{:04x}", u16_at(table, at + 18)),
                revision: u32_at(table, at + 20),
                offset: start,
                length: image_length,
                data: table[start..end].to_vec(),
            });
        }
        offset = end;
    }
    if images.is_empty() {
        return Err(VfctError::NoImage);
    }
    Ok(Vfct {
        length,
        checksum_ok,
        oem_id,
        images,
        empty_blocks,
    })
}

/// One image for `build`: PCI bus, device, function, vendor, device, the image's bytes.
pub type BuildImage<'a> = (u32, u32, u32, u16, u16, &'a [u8]);

/// Builds a VFCT table around `images`, as a firmware would: for tests, and to say in code
/// what `parse` reads.
pub fn build(images: &[BuildImage]) -> Vec<u8> {
    let mut table = vec![0u8; VFCT_HEADER_BYTES];
    table[0..4].copy_from_slice(b"VFCT");
    table[8] = 1;
    table[10..16].copy_from_slice(b"AMD   ");
    table[16..24].copy_from_slice(b"VMRUNTST");
    table[0x34..0x38].copy_from_slice(&(VFCT_HEADER_BYTES as u32).to_le_bytes());
    for (bus, device, function, vendor, device_id, image) in images {
        for word in [bus, device, function] {
            table.extend_from_slice(&word.to_le_bytes());
        }
        for half in [vendor, device_id, vendor, &0x0001] {
            table.extend_from_slice(&half.to_le_bytes());
        }
        table.extend_from_slice(&0u32.to_le_bytes());
        table.extend_from_slice(&(image.len() as u32).to_le_bytes());
        table.extend_from_slice(image);
    }
    let length = table.len() as u32;
    table[4..8].copy_from_slice(&length.to_le_bytes());
    let sum = table.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte));
    table[9] = 0u8.wrapping_sub(sum);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_read_with_their_addresses_and_ids() {
        let table = build(&[
            (0xc1, 0, 0, 0x1002, 0x1681, &[0x55, 0xaa, 1, 2]),
            (3, 0, 0, 0x1002, 0x73bf, &[0x55, 0xaa, 9]),
        ]);
        let vfct = parse(&table).unwrap();
        assert!(vfct.checksum_ok);
        assert_eq!(vfct.oem_id, "AMD");
        assert_eq!(vfct.images.len(), 2);
        let first = &vfct.images[0];
        assert_eq!(first.address(), "c1:00.0");
        assert_eq!(
            (first.vendor_id.as_str(), first.device_id.as_str()),
            ("1002", "1681")
        );
        assert_eq!(first.offset, VFCT_HEADER_BYTES + IMAGE_HEADER_BYTES);
        assert_eq!(first.data, [0x55, 0xaa, 1, 2]);
        assert_eq!(vfct.images[1].address(), "03:00.0");
        assert_eq!(vfct.images[1].data, [0x55, 0xaa, 9]);
    }

    #[test]
    fn a_damaged_checksum_is_reported_not_refused() {
        let mut table = build(&[(0, 1, 0, 0x1002, 0x15d8, &[1, 2, 3])]);
        table[9] = table[9].wrapping_add(1);
        assert!(!parse(&table).unwrap().checksum_ok);
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let table = build(&[(0, 1, 0, 0x1002, 0x15d8, &[7u8; 100])]);
        for cut in 0..table.len() {
            assert!(parse(&table[..cut]).is_err(), "cut at {cut}");
        }
        // The header's length itself short of the image: the image runs past the table's end.
        let mut short = table.clone();
        short[4..8].copy_from_slice(&((table.len() - 1) as u32).to_le_bytes());
        assert!(matches!(
            parse(&short),
            Err(VfctError::ImageTruncated {
                image: 100,
                left: 99,
                ..
            })
        ));
        let mut header_cut = table.clone();
        header_cut[4..8].copy_from_slice(&((VFCT_HEADER_BYTES + 10) as u32).to_le_bytes());
        assert!(matches!(
            parse(&header_cut),
            Err(VfctError::HeaderTruncated { .. })
        ));
        assert!(matches!(
            parse(&table[..table.len() - 1]),
            Err(VfctError::Truncated { .. })
        ));
    }

    #[test]
    fn empty_blocks_are_skipped_and_a_table_of_only_those_has_no_image() {
        let table = build(&[(0, 1, 0, 0x1002, 0x15d8, &[]), (0, 2, 0, 0x1002, 1, &[5])]);
        let vfct = parse(&table).unwrap();
        assert_eq!((vfct.images.len(), vfct.empty_blocks), (1, 1));
        assert_eq!(
            parse(&build(&[(0, 1, 0, 0x1002, 0x15d8, &[])])),
            Err(VfctError::NoImage)
        );
    }

    #[test]
    fn other_tables_and_bad_offsets_are_refused() {
        let mut table = build(&[(0, 1, 0, 0x1002, 0x15d8, &[1])]);
        let mut other = table.clone();
        other[0..4].copy_from_slice(b"FACP");
        assert_eq!(parse(&other), Err(VfctError::NotVfct("FACP".into())));
        table[0x34..0x38].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(parse(&table), Err(VfctError::BadOffset(4)));
        // Huge lengths and offsets do not overflow.
        let mut huge = build(&[(0, 1, 0, 0x1002, 0x15d8, &[1])]);
        let at = VFCT_HEADER_BYTES + 24;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse(&huge),
            Err(VfctError::ImageTruncated { .. })
        ));
    }
}
