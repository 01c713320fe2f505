//! Device names from the PCI ID database (hwdata's `pci.ids`, what `lspci` reads), found
//! through the host root. Only the vendor, device and class names are kept: one pass over the
//! file (about 1.3 MB) when a command shows devices, nothing when the file is missing (the
//! numbers are shown alone then).

use std::collections::HashMap;

use super::Sysroot;

/// Where distributions install the database: Debian's `pci.ids` package (and pciutils) use
/// the first, Fedora's and Arch's hwdata the second.
pub const DATABASE_PATHS: &[&str] = &[
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

#[derive(Debug, Default)]
pub struct PciNames {
    vendors: HashMap<u16, String>,
    devices: HashMap<(u16, u16), String>,
    /// By class and subclass (`0x0300`).
    subclasses: HashMap<u16, String>,
    classes: HashMap<u8, String>,
}

impl PciNames {
    /// The database of the host at `root`, or an empty one (every lookup None) without it.
    pub fn load(root: &Sysroot) -> Self {
        DATABASE_PATHS
            .iter()
            .find_map(|path| std::fs::read(root.path(path)).ok())
            .map(|bytes| Self::parse(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.vendors.is_empty() && self.classes.is_empty()
    }

    /// The format: `VVVV  Vendor`, `\tDDDD  Device`, `\t\tSSSS SSSS  Subsystem`, then after
    /// `C CC  Class` lines, `\tSS  Subclass` and `\t\tPP  Prog-if`. `#` starts a comment.
    pub fn parse(text: &str) -> Self {
        let mut names = PciNames::default();
        enum Section {
            Vendor(u16),
            Class(u8),
            None,
        }
        let mut section = Section::None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let depth = line.bytes().take_while(|b| *b == b'\t').count();
            let body = &line[depth..];
            let Some((id, name)) = body.split_once(' ') else {
                continue;
            };
            let name = name.trim().to_string();
            match depth {
                0 => {
                    if id == "C" {
                        let (code, name) = name.split_once(' ').unwrap_or((name.as_str(), ""));
                        section = match u8::from_str_radix(code, 16) {
                            Ok(code) => {
                                names.classes.insert(code, name.trim().to_string());
                                Section::Class(code)
                            }
                            Err(_) => Section::None,
                        };
                    } else if id.len() == 4 {
                        section = match u16::from_str_radix(id, 16) {
                            Ok(vendor) => {
                                names.vendors.insert(vendor, name);
                                Section::Vendor(vendor)
                            }
                            // Other top-level lists (`X` device types, `L` languages...).
                            Err(_) => Section::None,
                        };
                    } else {
                        section = Section::None;
                    }
                }
                1 => match section {
                    Section::Vendor(vendor) => {
                        if let Ok(device) = u16::from_str_radix(id, 16) {
                            names.devices.insert((vendor, device), name);
                        }
                    }
                    Section::Class(class) => {
                        if let Ok(sub) = u8::from_str_radix(id, 16) {
                            names
                                .subclasses
                                .insert(u16::from(class) << 8 | u16::from(sub), name);
                        }
                    }
                    Section::None => {}
                },
                _ => {}
            }
        }
        names
    }

    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(String::as_str)
    }

    /// `NVIDIA Corporation TU116 [GeForce GTX 1660 SUPER]`, as lspci names a device.
    pub fn device(&self, vendor: u16, device: u16) -> Option<String> {
        let vendor_name = self.vendor(vendor)?;
        Some(match self.devices.get(&(vendor, device)) {
            Some(device) => format!("{vendor_name} {device}"),
            None => format!("{vendor_name} Device {device:04x}"),
        })
    }

    /// `VGA compatible controller` for class code 0x030000 (the 24-bit value sysfs shows).
    pub fn class(&self, class_code: u32) -> Option<&str> {
        let subclass = (class_code >> 8) as u16;
        self.subclasses
            .get(&subclass)
            .or_else(|| self.classes.get(&((class_code >> 16) as u8)))
            .map(String::as_str)
    }

    /// `VGA compatible controller: NVIDIA Corporation GP106 [GeForce GTX 1060 3GB]`, or what
    /// is known of it; None when the database knows neither.
    pub fn describe(&self, class_code: u32, vendor_device: &str) -> Option<String> {
        let device = parse_ids(vendor_device).and_then(|(v, d)| self.device(v, d));
        match (self.class(class_code), device) {
            (Some(class), Some(device)) => Some(format!("{class}: {device}")),
            (Some(class), None) => Some(class.to_string()),
            (None, Some(device)) => Some(device),
            (None, None) => None,
        }
    }
}

/// `10de:1c02` as two numbers.
pub fn parse_ids(vendor_device: &str) -> Option<(u16, u16)> {
    let (vendor, device) = vendor_device.split_once(':')?;
    Some((
        u16::from_str_radix(vendor, 16).ok()?,
        u16::from_str_radix(device, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
10de  NVIDIA Corporation
\t1c02  GP106 [GeForce GTX 1060 3GB]
\t\t1043 85ac  GeForce GTX 1060 3GB
\t2184  TU116 [GeForce GTX 1660]
1002  Advanced Micro Devices, Inc. [AMD/ATI]
C 03  Display controller
\t00  VGA compatible controller
\t\t00  VGA controller
\t02  3D controller
C 04  Multimedia controller
\t03  Audio device
";

    #[test]
    fn names_devices_and_classes_as_lspci_does() {
        let names = PciNames::parse(SAMPLE);
        assert_eq!(
            names.describe(0x030000, "10de:1c02").as_deref(),
            Some("VGA compatible controller: NVIDIA Corporation GP106 [GeForce GTX 1060 3GB]")
        );
        assert_eq!(
            names.describe(0x040300, "1002:aae0").as_deref(),
            Some("Audio device: Advanced Micro Devices, Inc. [AMD/ATI] Device aae0")
        );
        // A subclass the database lacks falls back to the class's name.
        assert_eq!(names.class(0x038000), Some("Display controller"));
        assert_eq!(names.describe(0x0c0330, "8086:a36d"), None);
        assert!(PciNames::parse("").is_empty());
    }
}
