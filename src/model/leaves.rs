//! Typed leaves of the profile: each parses from the text a user writes and, when it cannot,
//! says which part is wrong and what would be valid.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A PCI function address `DDDD:BB:SS.F`; the short form `BB:SS.F` means domain 0000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
}

impl PciAddress {
    /// The slot this function belongs to: functions of one slot share a guest slot.
    pub fn slot_key(&self) -> (u16, u8, u8) {
        (self.domain, self.bus, self.slot)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

fn parse_hex_part(text: &str, part: &str, max: u32, digits: usize) -> Result<u32, String> {
    if text.is_empty() || text.len() > digits || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{part} `{text}` is not a hexadecimal number of at most {digits} digits"
        ));
    }
    let value = u32::from_str_radix(text, 16).map_err(|e| format!("{part} `{text}`: {e}"))?;
    if value > max {
        return Err(format!(
            "{part} `{text}` is out of range (0 to {max:x} hexadecimal)"
        ));
    }
    Ok(value)
}

impl FromStr for PciAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "write `0000:01:00.0` (domain:bus:slot.function) or `01:00.0`";
        let (rest, function) = text
            .rsplit_once('.')
            .ok_or_else(|| format!("`{text}` has no `.function` part; {FORM}"))?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, slot) = match parts.as_slice() {
            [bus, slot] => ("0000", *bus, *slot),
            [domain, bus, slot] => (*domain, *bus, *slot),
            _ => return Err(format!("`{text}` is not a PCI address; {FORM}")),
        };
        let with_context = |e: String| format!("{e} in `{text}`; {FORM}");
        Ok(PciAddress {
            domain: parse_hex_part(domain, "domain", 0xffff, 4).map_err(with_context)? as u16,
            bus: parse_hex_part(bus, "bus", 0xff, 2).map_err(with_context)? as u8,
            slot: parse_hex_part(slot, "slot", 0x1f, 2).map_err(with_context)? as u8,
            function: parse_hex_part(function, "function", 7, 1).map_err(with_context)? as u8,
        })
    }
}

/// Leaves appear in `show --json` (host steps) the way a profile spells them.
macro_rules! serialize_as_text {
    ($($leaf:ty),*) => {$(
        impl serde::Serialize for $leaf {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}

serialize_as_text!(PciAddress, ByteSize, UsbDevice);

/// A number of bytes written with a binary suffix: `512M`, `16G`, `1T`, `4096` (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The shortest exact spelling QEMU accepts (`16G`, `540672`...).
    pub fn qemu_spelling(self) -> String {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "T"),
            (1 << 30, "G"),
            (1 << 20, "M"),
            (1 << 10, "K"),
        ];
        for (unit, suffix) in UNITS {
            if self.0 >= unit && self.0 % unit == 0 {
                return format!("{}{suffix}", self.0 / unit);
            }
        }
        self.0.to_string()
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qemu_spelling())
    }
}

/// The one way a profile writes a size: a whole number and a unit, `K`, `M`, `G` or `T`
/// (powers of 1024, as QEMU writes them): `"512M"`, `"16G"`. Nothing else is taken silently:
/// `16GB` could mean 10^9 or 2^30, `16` could be bytes or MiB (QEMU's `-m` reads MiB), so a
/// size written another way is refused with the spelling that means what it most likely meant.
impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORM: &str =
            "a size is a whole number and a unit, K, M, G or T (powers of 1024), e.g. `16G`";
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let shift = match unit {
            "K" => Some(10),
            "M" => Some(20),
            "G" => Some(30),
            "T" => Some(40),
            _ => None,
        };
        if let (false, Some(shift)) = (digits.is_empty(), shift) {
            let number: u64 = digits
                .parse()
                .map_err(|_| format!("`{text}` is too large; {FORM}"))?;
            return number
                .checked_mul(1 << shift)
                .map(ByteSize)
                .ok_or_else(|| format!("`{text}` is too large; {FORM}"));
        }
        let trimmed = text.trim();
        if trimmed.chars().all(|c| c.is_ascii_digit()) && !trimmed.is_empty() {
            return Err(format!(
                "`{text}` has no unit; {FORM}: write `{trimmed}M` for MiB or `{trimmed}G` for GiB"
            ));
        }
        match ByteSize::parse_lenient(trimmed) {
            Some(meant) if meant.0 > 0 => Err(format!(
                "`{text}` is not how vmrun writes sizes; {FORM}: write `{meant}`"
            )),
            _ => Err(format!("`{text}` is not a size; {FORM}")),
        }
    }
}

impl ByteSize {
    /// A size as QEMU and other tools spell it: optional spaces, any case, `KB`/`KiB`/`B`
    /// suffixes, a fraction (`1.5G`), a bare number of bytes. For reading other programs'
    /// values (libvirt import) and for suggesting the profile's spelling of a size.
    pub fn parse_lenient(text: &str) -> Option<ByteSize> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let unit = unit
            .strip_suffix("ib")
            .or_else(|| unit.strip_suffix('b'))
            .unwrap_or(&unit);
        let shift: u32 = match unit {
            "" => 0,
            "k" => 10,
            "m" => 20,
            "g" => 30,
            "t" => 40,
            _ => return None,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u64 = whole.parse().ok()?;
        let mut bytes = whole.checked_mul(1u64 << shift)?;
        if !fraction.is_empty() {
            let digits: u32 = fraction.len().try_into().ok()?;
            let numerator: u64 = fraction.parse().ok()?;
            let denominator = 10u64.checked_pow(digits)?;
            bytes = bytes.checked_add(
                u64::try_from(u128::from(numerator) * (1u128 << shift) / u128::from(denominator))
                    .ok()?,
            )?;
        }
        Some(ByteSize(bytes))
    }
}

/// A set of host CPUs in the syntax `taskset -c` takes: `0-3,8,10-11`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CpuSet(BTreeSet<usize>);

/// Host CPU numbers beyond this are certainly typos (Linux's NR_CPUS maximum is 8192).
pub const MAX_HOST_CPU: usize = 8191;

impl CpuSet {
    pub fn from_cpus(cpus: impl IntoIterator<Item = usize>) -> Self {
        CpuSet(cpus.into_iter().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Compact list form, `0-3,8`, as the kernel prints it in /proc and sysfs.
    pub fn to_list_string(&self) -> String {
        let mut parts = Vec::new();
        let mut cpus = self.0.iter().copied().peekable();
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end += 1;
                cpus.next();
            }
            parts.push(if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
        }
        parts.join(",")
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list_string())
    }
}

impl CpuSet {
    /// The hexadecimal mask the kernel's cpumask files take (`/proc/irq/default_smp_affinity`,
    /// the workqueue cpumask): 32-bit groups, most significant first, separated by commas.
    pub fn to_mask_string(&self) -> String {
        let highest = self.0.iter().next_back().copied().unwrap_or(0);
        let mut groups = vec![0u32; highest / 32 + 1];
        for cpu in &self.0 {
            groups[cpu / 32] |= 1 << (cpu % 32);
        }
        groups
            .iter()
            .rev()
            .enumerate()
            .map(|(i, g)| {
                if i == 0 {
                    format!("{g:x}")
                } else {
                    format!("{g:08x}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// As the kernel prints it: `"0-3,8"`.
impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_list_string())
    }
}

impl FromStr for CpuSet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "write CPU numbers and ranges as `taskset -c` takes them, e.g. `0-3,8`";
        let mut cpus = BTreeSet::new();
        if text.trim().is_empty() {
            return Err(format!("the CPU list is empty; {FORM}"));
        }
        let parse_cpu = |part: &str| -> Result<usize, String> {
            let cpu: usize = part
                .trim()
                .parse()
                .map_err(|_| format!("`{part}` is not a CPU number in `{text}`; {FORM}"))?;
            if cpu > MAX_HOST_CPU {
                return Err(format!(
                    "CPU {cpu} in `{text}` is beyond any host (at most {MAX_HOST_CPU})"
                ));
            }
            Ok(cpu)
        };
        for item in text.split(',') {
            match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (parse_cpu(first)?, parse_cpu(last)?);
                    if first > last {
                        return Err(format!(
                            "the range `{item}` in `{text}` runs backwards; write `{last}-{first}`"
                        ));
                    }
                    cpus.extend(first..=last);
                }
                None => {
                    cpus.insert(parse_cpu(item)?);
                }
            }
        }
        Ok(CpuSet(cpus))
    }
}

/// A USB device as `vendor:product`, four hexadecimal digits each (as `lsusb` prints them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UsbId {
    pub vendor: u16,
    pub product: u16,
}

impl fmt::Display for UsbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.product)
    }
}

impl FromStr for UsbId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "write `vendor:product` as lsusb prints it, e.g. `046d:c52b`";
        let (vendor, product) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}` has no `:`; {FORM}"))?;
        let field = |part: &str, name: &str| -> Result<u16, String> {
            if part.len() != 4 || !part.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "the {name} id `{part}` in `{text}` is not 4 hexadecimal digits; {FORM}"
                ));
            }
            u16::from_str_radix(part, 16).map_err(|e| format!("{name} id `{part}`: {e}"))
        };
        Ok(UsbId {
            vendor: field(vendor, "vendor")?,
            product: field(product, "product")?,
        })
    }
}

/// A host USB port path as sysfs names it (`1-4.2`: bus 1, port 4 of the root hub, port 2 of
/// the hub there): the port a device is plugged into, which tells two identical devices apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UsbPort {
    pub bus: u8,
    /// Port numbers from the root hub down, at most 7 (USB's tiers).
    pub ports: Vec<u8>,
}

impl UsbPort {
    /// The ports as QEMU's `hostport` and sysfs' `devpath` spell them: `4.2`.
    pub fn path(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u8::to_string).collect();
        ports.join(".")
    }
}

impl fmt::Display for UsbPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.bus, self.path())
    }
}

impl FromStr for UsbPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORM: &str =
            "write `BUS-PORT[.PORT...]` as sysfs names it (/sys/bus/usb/devices), e.g. `1-4.2`";
        let (bus, path) = text
            .split_once('-')
            .ok_or_else(|| format!("`{text}` has no `-`; {FORM}"))?;
        let number = |part: &str, what: &str| -> Result<u8, String> {
            match part.parse::<u8>() {
                Ok(n) if n > 0 && part.chars().all(|c| c.is_ascii_digit()) => Ok(n),
                _ => Err(format!(
                    "the {what} `{part}` in `{text}` is not a number from 1 to 255; {FORM}"
                )),
            }
        };
        let bus = number(bus, "bus")?;
        let ports = path
            .split('.')
            .map(|part| number(part, "port"))
            .collect::<Result<Vec<u8>, String>>()?;
        if ports.len() > 7 {
            return Err(format!(
                "`{text}` has {} ports; USB has at most 7 tiers; {FORM}",
                ports.len()
            ));
        }
        Ok(UsbPort { bus, ports })
    }
}

/// A host USB device as the command line and `[[usb]]` name it: by `vendor:product`, or by the
/// port it is plugged into.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UsbDevice {
    Id(UsbId),
    Port(UsbPort),
}

impl UsbDevice {
    /// What a valid one looks like, for error messages.
    pub const FORMS: &'static str = "give VENDOR:PRODUCT as lsusb prints it (e.g. `046d:c52b`) \
         or the host port as sysfs names it, BUS-PORT[.PORT...] (e.g. `1-4.2`)";
}

impl fmt::Display for UsbDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsbDevice::Id(id) => id.fmt(f),
            UsbDevice::Port(port) => port.fmt(f),
        }
    }
}

impl FromStr for UsbDevice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = if text.contains(':') {
            text.parse().map(UsbDevice::Id)
        } else if text.contains('-') {
            text.parse().map(UsbDevice::Port)
        } else {
            Err(format!("`{text}` is neither"))
        };
        parsed.map_err(|_| format!("`{text}` is not a USB device: {}", UsbDevice::FORMS))
    }
}

/// An Ethernet MAC address for the guest NIC; multicast addresses are refused because no NIC
/// can own one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// A stable address in QEMU's 52:54:00 range derived from the VM name, so that a profile
    /// without `mac` keeps its DHCP lease and its guest's idea of the NIC across runs.
    pub fn derived_from_name(name: &str) -> Self {
        // FNV-1a: tiny, stable across Rust versions (unlike std's hasher), good enough spread.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in name.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        let [_, a, b, c] = hash.to_be_bytes();
        MacAddress([0x52, 0x54, 0x00, a, b, c])
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "write six hexadecimal pairs separated by `:`, e.g. `52:54:00:3a:1b:7c`";
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("`{text}` has {} parts, not 6; {FORM}", parts.len()));
        }
        let mut bytes = [0u8; 6];
        for (byte, part) in bytes.iter_mut().zip(&parts) {
            if part.len() != 2 || !part.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "`{part}` in `{text}` is not two hexadecimal digits; {FORM}"
                ));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|e| format!("`{part}`: {e}"))?;
        }
        if bytes[0] & 1 == 1 {
            return Err(format!(
                "`{text}` is a multicast address (lowest bit of the first byte set); \
                 a NIC needs a unicast one such as 52:54:00:xx:xx:xx"
            ));
        }
        Ok(MacAddress(bytes))
    }
}

/// A VM name: it becomes part of file paths, socket paths and QEMU's `-name`, so it is
/// limited to characters that are safe in all three.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmName(String);

impl VmName {
    /// Stands in for an invalid name while validation goes on to report every other problem;
    /// a profile with an invalid name never becomes a `VmConfig`.
    pub(crate) fn placeholder() -> Self {
        VmName("invalid".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for VmName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "use letters, digits, `-`, `_` and `.`, at most 64 characters, \
                            not starting with `.` or `-`";
        if text.is_empty() {
            return Err(format!("the name is empty; {FORM}"));
        }
        if text.len() > 64 {
            return Err(format!("`{text}` is longer than 64 characters; {FORM}"));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!("`{text}` contains `{bad}`; {FORM}"));
        }
        if text.starts_with('.') || text.starts_with('-') {
            // `.`/`..` escape the state directory; a leading `-` reads as an option to tools.
            return Err(format!("`{text}` starts with `{}`; {FORM}", &text[..1]));
        }
        Ok(VmName(text.to_string()))
    }
}

/// A screen resolution `WIDTHxHEIGHT`, used to size the Looking Glass frame buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

impl Resolution {
    /// Looking Glass' documented sizing: two frames of 32-bit pixels plus 10 MiB,
    /// rounded up to the next power of two (the ivshmem BAR must be one).
    pub fn looking_glass_size(self) -> ByteSize {
        let frames = u64::from(self.width) * u64::from(self.height) * 4 * 2;
        let needed = frames + 10 * ByteSize::MIB;
        ByteSize(needed.next_power_of_two())
    }
}

impl FromStr for Resolution {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "write `WIDTHxHEIGHT`, e.g. `2560x1440`";
        let (width, height) = text
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("`{text}` has no `x`; {FORM}"))?;
        let side = |part: &str| -> Result<u32, String> {
            match part.trim().parse::<u32>() {
                Ok(value) if (1..=16384).contains(&value) => Ok(value),
                _ => Err(format!(
                    "`{part}` in `{text}` is not a number of pixels from 1 to 16384; {FORM}"
                )),
            }
        };
        Ok(Resolution {
            width: side(width)?,
            height: side(height)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_address_short_and_long_forms_are_the_same_device() {
        let short: PciAddress = "01:00.0".parse().unwrap();
        let long: PciAddress = "0000:01:00.0".parse().unwrap();
        assert_eq!(short, long);
        assert_eq!(long.to_string(), "0000:01:00.0");
        let other: PciAddress = "ABCD:ff:1f.7".parse().unwrap();
        assert_eq!(other.to_string(), "abcd:ff:1f.7");
    }

    #[test]
    fn pci_address_errors_name_the_part() {
        let err = "0000:01:20.0".parse::<PciAddress>().unwrap_err();
        assert!(err.contains("slot `20`"), "{err}");
        let err = "0000:01:00.8".parse::<PciAddress>().unwrap_err();
        assert!(err.contains("function `8`"), "{err}");
        let err = "10000:01:00.0".parse::<PciAddress>().unwrap_err();
        assert!(err.contains("domain `10000`"), "{err}");
        let err = "0000:100:00.0".parse::<PciAddress>().unwrap_err();
        assert!(err.contains("bus `100`"), "{err}");
        let err = "01:00".parse::<PciAddress>().unwrap_err();
        assert!(err.contains("no `.function`"), "{err}");
        let err = "1:2:3:4.0".parse::<PciAddress>().unwrap_err();
        assert!(err.contains("not a PCI address"), "{err}");
    }

    #[test]
    fn byte_sizes_use_powers_of_1024() {
        assert_eq!("16G".parse::<ByteSize>().unwrap().bytes(), 16 << 30);
        assert_eq!("512M".parse::<ByteSize>().unwrap().bytes(), 512 << 20);
        assert_eq!("1T".parse::<ByteSize>().unwrap().bytes(), 1 << 40);
        assert_eq!("64K".parse::<ByteSize>().unwrap().bytes(), 64 << 10);
        assert!("16Q"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("not a size"));
        assert!("G".parse::<ByteSize>().is_err());
        assert!("99999999999999999999G"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("too large"));
        assert!("20000000T"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("too large"));
        assert_eq!(ByteSize(16 << 30).qemu_spelling(), "16G");
        assert_eq!(ByteSize(540672).qemu_spelling(), "528K");
        assert_eq!(ByteSize(1000).qemu_spelling(), "1000");
    }

    /// One grammar: every other spelling is refused with the one that means the same.
    #[test]
    fn other_size_spellings_are_refused_with_the_right_one() {
        for (written, write) in [
            ("16GB", "write `16G`"),
            ("16 GiB", "write `16G`"),
            ("16g", "write `16G`"),
            ("2MiB", "write `2M`"),
            ("1.5G", "write `1536M`"),
            ("4096", "write `4096M` for MiB or `4096G` for GiB"),
            (" 16G", "write `16G`"),
        ] {
            let error = written.parse::<ByteSize>().unwrap_err();
            assert!(error.contains(write), "{written}: {error}");
            assert!(error.contains("K, M, G or T"), "{written}: {error}");
        }
        assert_eq!(
            ByteSize::parse_lenient("33554432"),
            Some(ByteSize(32 << 20))
        );
        assert_eq!(ByteSize::parse_lenient("32m"), Some(ByteSize(32 << 20)));
    }

    #[test]
    fn cpu_sets_become_the_kernels_hex_masks() {
        let mask = |text: &str| text.parse::<CpuSet>().unwrap().to_mask_string();
        assert_eq!(mask("0-1"), "3");
        assert_eq!(mask("0,8-15"), "ff01");
        assert_eq!(mask("0-9,20-29"), "3ff003ff");
        assert_eq!(mask("0,33"), "2,00000001");
        assert_eq!(mask("32-39"), "ff,00000000");
    }

    #[test]
    fn cpu_sets_parse_taskset_syntax() {
        let set: CpuSet = "0-3,8,10-11".parse().unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(set.to_list_string(), "0-3,8,10-11");
        assert!("3-1".parse::<CpuSet>().unwrap_err().contains("backwards"));
        assert!("0,a".parse::<CpuSet>().unwrap_err().contains("`a`"));
        assert!("".parse::<CpuSet>().unwrap_err().contains("empty"));
        assert!("0-9000".parse::<CpuSet>().unwrap_err().contains("9000"));
    }

    #[test]
    fn usb_devices_are_ids_or_port_paths() {
        assert_eq!(
            "1-4.2".parse::<UsbDevice>().unwrap(),
            UsbDevice::Port(UsbPort {
                bus: 1,
                ports: vec![4, 2]
            })
        );
        assert_eq!("3-10".parse::<UsbPort>().unwrap().path(), "10");
        assert_eq!(
            "046d:c52b".parse::<UsbDevice>().unwrap().to_string(),
            "046d:c52b"
        );
        for bad in [
            "1-",
            "0-1",
            "1-4.0",
            "x-1",
            "1-1.1.1.1.1.1.1.1",
            "046d",
            "1-4:1.0",
            "",
        ] {
            let error = bad.parse::<UsbDevice>().unwrap_err();
            assert!(
                error.contains("e.g. `046d:c52b`") && error.contains("e.g. `1-4.2`"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn usb_ids_need_four_hex_digits_each() {
        let id: UsbId = "046d:C52B".parse().unwrap();
        assert_eq!(id.to_string(), "046d:c52b");
        assert!("46d:c52b"
            .parse::<UsbId>()
            .unwrap_err()
            .contains("vendor id `46d`"));
        assert!("046d:c52g"
            .parse::<UsbId>()
            .unwrap_err()
            .contains("product id"));
        assert!("046dc52b".parse::<UsbId>().is_err());
    }

    #[test]
    fn mac_addresses_must_be_unicast() {
        let mac: MacAddress = "52:54:00:3A:1b:7c".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:3a:1b:7c");
        assert!("01:00:5e:00:00:01"
            .parse::<MacAddress>()
            .unwrap_err()
            .contains("multicast"));
        assert!("52:54:00:3a:1b"
            .parse::<MacAddress>()
            .unwrap_err()
            .contains("5 parts"));
        assert!("52:54:00:3a:1b:zz".parse::<MacAddress>().is_err());
        let derived = MacAddress::derived_from_name("win10");
        assert_eq!(derived, MacAddress::derived_from_name("win10"));
        assert_ne!(derived, MacAddress::derived_from_name("win11"));
        assert_eq!(&derived.0[..3], &[0x52, 0x54, 0x00]);
    }

    #[test]
    fn vm_names_are_safe_in_paths() {
        assert!("win10".parse::<VmName>().is_ok());
        assert!("my_vm-2.0".parse::<VmName>().is_ok());
        assert!("a/b".parse::<VmName>().unwrap_err().contains("`/`"));
        assert!(".."
            .parse::<VmName>()
            .unwrap_err()
            .contains("starts with `.`"));
        assert!("-x".parse::<VmName>().is_err());
        assert!("".parse::<VmName>().is_err());
        assert!("a b".parse::<VmName>().is_err());
        assert!("x".repeat(65).parse::<VmName>().is_err());
    }

    #[test]
    fn looking_glass_size_follows_the_documented_formula() {
        let size = |text: &str| text.parse::<Resolution>().unwrap().looking_glass_size();
        assert_eq!(size("1920x1080"), ByteSize(32 << 20));
        assert_eq!(size("2560x1440"), ByteSize(64 << 20));
        assert_eq!(size("3840x2160"), ByteSize(128 << 20));
        assert!("1920*1080".parse::<Resolution>().is_err());
        assert!("0x1080".parse::<Resolution>().is_err());
    }
}
