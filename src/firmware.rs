//! Finding OVMF: QEMU's firmware descriptors (docs/interop/firmware.json), read-only.
//!
//! Descriptor directories, highest priority first: `$XDG_CONFIG_HOME/qemu/firmware`
//! (`~/.config/qemu/firmware`), `/etc/qemu/firmware`, `/usr/share/qemu/firmware`. A file
//! overrides files of the same name in lower-priority directories; an empty file hides them.
//! The survivors are tried in file-name order. When none matches, the descriptors vmrun ships
//! in `ovmf-templates/` (Arch and Fedora file layouts) are tried.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }

    pub fn from_extension(path: &Path) -> Self {
        if path.extension().is_some_and(|ext| ext == "qcow2") {
            ImageFormat::Qcow2
        } else {
            ImageFormat::Raw
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirmwareImage {
    pub path: PathBuf,
    pub format: ImageFormat,
}

/// The firmware a VM will boot: CODE (read-only) and the template its own VARS copy starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvedFirmware {
    pub code: FirmwareImage,
    pub vars_template: FirmwareImage,
    pub secure_boot: bool,
    pub requires_smm: bool,
    /// Where the choice came from: a descriptor file, `ovmf-templates/NAME`, or `profile`.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("no OVMF firmware {wanted} was found.\n{}\nInstall OVMF (Debian/Ubuntu: `apt install ovmf`; Arch: `pacman -S edk2-ovmf`; Fedora: `dnf install edk2-ovmf`) or set [firmware] code and vars_template", considered_lines(.considered))]
    NotFound {
        wanted: String,
        considered: Vec<(String, String)>,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0)]
    Mismatch(String),
}

fn considered_lines(considered: &[(String, String)]) -> String {
    if considered.is_empty() {
        return "No firmware descriptor was found in any directory.".to_string();
    }
    considered
        .iter()
        .map(|(name, reason)| format!("  {name}: {reason}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "interface-types", default)]
    interface_types: Vec<String>,
    mapping: Mapping,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "device")]
enum Mapping {
    #[serde(rename = "flash")]
    Flash {
        #[serde(default)]
        mode: Option<String>,
        executable: Option<DescriptorImage>,
        #[serde(rename = "nvram-template")]
        nvram_template: Option<DescriptorImage>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct DescriptorImage {
    filename: PathBuf,
    #[serde(default = "raw_format")]
    format: ImageFormat,
}

fn raw_format() -> ImageFormat {
    ImageFormat::Raw
}

#[derive(Debug, Deserialize)]
struct Target {
    architecture: String,
    #[serde(default)]
    machines: Vec<String>,
}

/// What the profile asks of the firmware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareQuery {
    pub machine_type: String,
    pub secure_boot: bool,
}

/// The descriptor directories, highest priority first.
pub fn default_descriptor_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    if let Some(config_home) = config_home {
        dirs.push(config_home.join("qemu/firmware"));
    }
    dirs.push(PathBuf::from("/etc/qemu/firmware"));
    dirs.push(PathBuf::from("/usr/share/qemu/firmware"));
    dirs
}

/// The descriptors vmrun ships, for hosts whose QEMU package installs none.
pub const BUNDLED_DESCRIPTORS: &[(&str, &str)] = &[
    (
        "50-fedora-edk2-x86_64-secure-4m-qcow2.json",
        include_str!("../ovmf-templates/50-fedora-edk2-x86_64-secure-4m-qcow2.json"),
    ),
    (
        "60-arch-edk2-x86_64-4m.json",
        include_str!("../ovmf-templates/60-arch-edk2-x86_64-4m.json"),
    ),
    (
        "60-fedora-edk2-x86_64-4m-qcow2.json",
        include_str!("../ovmf-templates/60-fedora-edk2-x86_64-4m-qcow2.json"),
    ),
];

/// The effective descriptor files after the spec's override and masking rules, in the order
/// they are tried.
pub fn effective_descriptors(dirs_high_first: &[PathBuf]) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    // Walk from lowest to highest priority so that higher directories overwrite.
    for dir in dirs_high_first.iter().rev() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                by_name.insert(name, entry.path());
            }
        }
    }
    by_name
        .into_values()
        .filter(|path| {
            std::fs::metadata(path)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        })
        .collect()
}

/// QEMU's `q35` alias stands for the newest `pc-q35-X.Y`; descriptors list globs like `pc-q35-*`.
fn machine_matches(pattern: &str, machine_type: &str) -> bool {
    let concrete = if machine_type == "q35" {
        "pc-q35-99.99"
    } else {
        machine_type
    };
    glob_matches(pattern.as_bytes(), concrete.as_bytes())
}

fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_matches(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_matches(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob_matches(rest, &text[1..]),
    }
}

fn has(features: &[String], feature: &str) -> bool {
    features.iter().any(|f| f == feature)
}

/// Checks one descriptor against the query; `Err` says why it does not fit.
fn evaluate(
    descriptor: &Descriptor,
    query: &FirmwareQuery,
    source: &str,
) -> Result<ResolvedFirmware, String> {
    if !descriptor.interface_types.iter().any(|t| t == "uefi") {
        return Err("not UEFI".to_string());
    }
    let Mapping::Flash {
        mode,
        executable,
        nvram_template,
    } = &descriptor.mapping
    else {
        return Err("not a flash (pflash) firmware".to_string());
    };
    if mode.as_deref().is_some_and(|m| m != "split") {
        return Err(format!(
            "flash mode `{}`; vmrun needs split CODE + VARS",
            mode.as_deref().unwrap_or_default()
        ));
    }
    let (Some(code), Some(vars)) = (executable, nvram_template) else {
        return Err("has no executable or no nvram-template".to_string());
    };
    let fits_machine = descriptor.targets.iter().any(|target| {
        target.architecture == "x86_64"
            && target
                .machines
                .iter()
                .any(|pattern| machine_matches(pattern, &query.machine_type))
    });
    if !fits_machine {
        return Err(format!(
            "no x86_64 target for machine `{}`",
            query.machine_type
        ));
    }
    let features = &descriptor.features;
    for confidential in ["amd-sev-es", "amd-sev-snp", "intel-tdx"] {
        if has(features, confidential) && !has(features, "amd-sev") {
            return Err(format!("built for {confidential} guests"));
        }
    }
    let secure = has(features, "secure-boot");
    let enrolled = has(features, "enrolled-keys");
    if query.secure_boot && !(secure && enrolled) {
        return Err(
            "no secure boot with enrolled keys (secure_boot = true needs both)".to_string(),
        );
    }
    if !query.secure_boot && enrolled {
        return Err("enforces secure boot (enrolled keys); secure_boot = false".to_string());
    }
    for image in [code, vars] {
        if !image.filename.is_file() {
            return Err(format!("{} does not exist", image.filename.display()));
        }
    }
    Ok(ResolvedFirmware {
        code: FirmwareImage {
            path: code.filename.clone(),
            format: code.format,
        },
        vars_template: FirmwareImage {
            path: vars.filename.clone(),
            format: vars.format,
        },
        secure_boot: secure && enrolled,
        requires_smm: has(features, "requires-smm"),
        source: source.to_string(),
    })
}

/// Picks the firmware for `query`: descriptors from `dirs_high_first`, then the bundled ones.
/// Without secure boot, a descriptor without the secure-boot feature is preferred.
pub fn select(
    query: &FirmwareQuery,
    dirs_high_first: &[PathBuf],
) -> Result<ResolvedFirmware, FirmwareError> {
    let mut considered: Vec<(String, String)> = Vec::new();
    let mut candidates: Vec<ResolvedFirmware> = Vec::new();
    let consider = |name: String,
                    text: Result<String, String>,
                    candidates: &mut Vec<ResolvedFirmware>,
                    considered: &mut Vec<(String, String)>| {
        let outcome = text.and_then(|text| {
            serde_json::from_str::<Descriptor>(&text)
                .map_err(|e| format!("not a valid descriptor: {e}"))
        });
        match outcome.and_then(|descriptor| evaluate(&descriptor, query, &name)) {
            Ok(found) => candidates.push(found),
            Err(reason) => considered.push((name, reason)),
        }
    };
    for path in effective_descriptors(dirs_high_first) {
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string());
        consider(
            path.display().to_string(),
            text,
            &mut candidates,
            &mut considered,
        );
    }
    if candidates.is_empty() {
        for (name, text) in BUNDLED_DESCRIPTORS {
            consider(
                format!("ovmf-templates/{name}"),
                Ok(text.to_string()),
                &mut candidates,
                &mut considered,
            );
        }
    }
    // Among fitting descriptors keep file-name order, but without secure boot prefer the
    // plain build: secure-boot CODE needs SMM, which is slower and not what was asked.
    let chosen = candidates
        .iter()
        .find(|c| query.secure_boot || !c.requires_smm)
        .or_else(|| candidates.first())
        .cloned();
    chosen.ok_or_else(|| FirmwareError::NotFound {
        wanted: if query.secure_boot {
            "with secure boot and enrolled keys".to_string()
        } else {
            "for x86_64 q35".to_string()
        },
        considered,
    })
}

/// The size a flash image presents to the guest: the file size for raw images, the virtual
/// size from the header for qcow2.
pub fn flash_size(image: &FirmwareImage) -> Result<u64, FirmwareError> {
    let read_error = |source| FirmwareError::Read {
        path: image.path.clone(),
        source,
    };
    match image.format {
        ImageFormat::Raw => Ok(std::fs::metadata(&image.path).map_err(read_error)?.len()),
        ImageFormat::Qcow2 => {
            let mut header = [0u8; 32];
            std::fs::File::open(&image.path)
                .and_then(|mut file| file.read_exact(&mut header))
                .map_err(read_error)?;
            if &header[..4] != b"QFI\xfb" {
                return Err(FirmwareError::Mismatch(format!(
                    "{} is declared qcow2 but has no qcow2 header",
                    image.path.display()
                )));
            }
            let mut size = [0u8; 8];
            size.copy_from_slice(&header[24..32]);
            Ok(u64::from_be_bytes(size))
        }
    }
}

/// OVMF is built for a flash of 1, 2 or 4 MiB that CODE and VARS split between them; a VARS
/// from another build makes the firmware lose every NVRAM write (boot entries, secure-boot
/// keys) without an error.
pub fn check_pairing(code: &FirmwareImage, vars: &FirmwareImage) -> Result<(), FirmwareError> {
    let code_size = flash_size(code)?;
    let vars_size = flash_size(vars)?;
    const MIB: u64 = 1024 * 1024;
    let total = code_size + vars_size;
    if [MIB, 2 * MIB, 4 * MIB].contains(&total) {
        return Ok(());
    }
    let build = [MIB, 2 * MIB, 4 * MIB]
        .into_iter()
        .find(|flash| code_size < *flash && flash - code_size <= MIB / 2 + MIB / 16);
    let expected = match build {
        Some(flash) => format!(
            "a CODE of {code_size} bytes is from a {} MiB build and pairs with a VARS of {} bytes",
            flash / MIB,
            flash - code_size
        ),
        None => format!("a CODE of {code_size} bytes matches no known OVMF build"),
    };
    Err(FirmwareError::Mismatch(format!(
        "firmware CODE {} and VARS {} come from different builds: {expected}, but the VARS is \
         {vars_size} bytes (OVMF would silently lose every NVRAM write); use the VARS file shipped \
         next to that CODE (e.g. OVMF_VARS_4M.fd with OVMF_CODE_4M.fd)",
        code.path.display(),
        vars.path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_machine_patterns() {
        assert!(machine_matches("pc-q35-*", "q35"));
        assert!(machine_matches("pc-q35-*", "pc-q35-7.2"));
        assert!(!machine_matches("pc-i440fx-*", "q35"));
        assert!(glob_matches(b"a?c", b"abc"));
        assert!(!glob_matches(b"a?c", b"ac"));
    }
}
