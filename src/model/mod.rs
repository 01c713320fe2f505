//! Stage 2: the VM model. A profile's text is parsed into `RawProfile` (what it says, with
//! positions) and validated into `VmConfig` (what it means: typed and checked; later stages
//! never re-check what a user wrote). Each section is one module holding its raw keys, its
//! typed values and the rules between them, so a new key is written in one place.

pub mod audio;
pub mod boot;
pub mod clock;
pub mod cpu;
pub mod disk;
pub mod display;
pub mod holders;
pub mod hooks;
pub mod input;
pub mod isolation;
pub mod keys;
pub mod leaves;
pub mod looking_glass;
pub mod machine;
pub mod network;
pub mod parse;
pub mod pci;
pub mod pinning;
pub mod qemu;
pub mod shutdown;
pub mod single_gpu;
pub mod smbios;
pub mod tpm;
pub mod usb;
mod validator;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::profile::{Diagnostic, Diagnostics, ProfileSource, Severity};
use validator::{Text, Validator};

pub use audio::{Audio, AudioBackend, AudioDevice};
pub use boot::{Firmware, FirmwareFiles};
pub use clock::{Clock, ClockBase, LostTicks};
pub use cpu::{Cpu, Topology};
pub use disk::{CacheMode, Disk, DiskBus, DiskFormat, Media};
pub use display::{Display, Gui, Listen, Remote, RemoteProtocol, SerialConsole, VgaModel};
pub use holders::Holders;
pub use hooks::Hooks;
pub use input::Input;
pub use isolation::{HostCpus, Isolation};
pub use leaves::{
    ByteSize, CpuSet, MacAddress, PciAddress, Resolution, UsbDevice, UsbId, UsbPort, VmName,
};
pub use looking_glass::LookingGlass;
pub use machine::{Accel, HugePageSize, Machine};
pub use network::{Network, NetworkMode, NicModel};
pub use parse::parse;
pub use pci::{PciDevice, SriovVf};
pub use pinning::{Pinning, Scheduler};
pub use qemu::{Qemu, QemuIdentity, QemuUser};
pub use shutdown::Shutdown;
pub use single_gpu::SingleGpu;
pub use smbios::{Smbios, SmbiosField, SMBIOS_FIELDS};
pub use tpm::{Tpm, TpmVersion};

/// The profile exactly as written: every leaf keeps its position in the file so that
/// validation can point at it. Leaves are kept as the TOML types a user writes (strings,
/// integers), and turned into typed values by the sections' rules, which report every problem
/// at once.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawProfile {
    pub name: Option<Text>,
    pub machine: Option<Spanned<machine::RawMachine>>,
    pub cpu: Option<Spanned<cpu::RawCpu>>,
    pub pinning: Option<Spanned<pinning::RawPinning>>,
    pub isolation: Option<Spanned<isolation::RawIsolation>>,
    pub firmware: Option<Spanned<boot::RawFirmware>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk: Vec<Spanned<disk::RawDisk>>,
    pub network: Option<Spanned<network::RawNetwork>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pci: Vec<Spanned<pci::RawPci>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usb: Vec<Spanned<usb::RawUsb>>,
    pub input: Option<Spanned<input::RawInput>>,
    pub display: Option<Spanned<display::RawDisplay>>,
    pub console: Option<Spanned<display::RawConsole>>,
    pub looking_glass: Option<Spanned<looking_glass::RawLookingGlass>>,
    pub single_gpu: Option<Spanned<single_gpu::RawSingleGpu>>,
    pub holders: Option<Spanned<holders::RawHolders>>,
    pub hooks: Option<Spanned<hooks::RawHooks>>,
    pub shutdown: Option<Spanned<shutdown::RawShutdown>>,
    pub qemu: Option<Spanned<qemu::RawQemu>>,
    pub tpm: Option<Spanned<tpm::RawTpm>>,
    pub smbios: Option<Spanned<smbios::RawSmbios>>,
    pub audio: Option<Spanned<audio::RawAudio>>,
    pub clock: Option<Spanned<clock::RawClock>>,
}

/// The keys a table accepts, read from its `Deserialize` impl so they never drift from the
/// struct: used to say what would be valid next to an unknown key.
pub fn keys_of_table(path: &[String]) -> &'static [&'static str] {
    let section = path.first().map(String::as_str).unwrap_or("");
    match (path.len(), section) {
        (0, _) => parse::field_names::<RawProfile>(),
        (_, "machine") => parse::field_names::<machine::RawMachine>(),
        (_, "cpu") => parse::field_names::<cpu::RawCpu>(),
        (_, "pinning") => parse::field_names::<pinning::RawPinning>(),
        (_, "isolation") => parse::field_names::<isolation::RawIsolation>(),
        (_, "firmware") => parse::field_names::<boot::RawFirmware>(),
        (_, "disk") => parse::field_names::<disk::RawDisk>(),
        (_, "network") => parse::field_names::<network::RawNetwork>(),
        (_, "pci") => parse::field_names::<pci::RawPci>(),
        (_, "usb") => parse::field_names::<usb::RawUsb>(),
        (_, "input") => parse::field_names::<input::RawInput>(),
        (_, "display") => parse::field_names::<display::RawDisplay>(),
        (_, "console") => parse::field_names::<display::RawConsole>(),
        (_, "looking_glass") => parse::field_names::<looking_glass::RawLookingGlass>(),
        (_, "single_gpu") => parse::field_names::<single_gpu::RawSingleGpu>(),
        (_, "holders") => parse::field_names::<holders::RawHolders>(),
        (_, "hooks") => parse::field_names::<hooks::RawHooks>(),
        (_, "shutdown") => parse::field_names::<shutdown::RawShutdown>(),
        (_, "qemu") => parse::field_names::<qemu::RawQemu>(),
        (_, "tpm") => parse::field_names::<tpm::RawTpm>(),
        (_, "smbios") => parse::field_names::<smbios::RawSmbios>(),
        (_, "audio") => parse::field_names::<audio::RawAudio>(),
        (_, "clock") => parse::field_names::<clock::RawClock>(),
        _ => &[],
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub name: VmName,
    pub profile_path: PathBuf,
    pub machine: Machine,
    pub cpu: Cpu,
    pub pinning: Option<Pinning>,
    pub isolation: Option<Isolation>,
    pub firmware: Firmware,
    pub disks: Vec<Disk>,
    pub network: Network,
    pub pci: Vec<PciDevice>,
    pub usb: Vec<UsbDevice>,
    pub input: Input,
    pub display: Display,
    pub serial: SerialConsole,
    pub looking_glass: Option<LookingGlass>,
    pub single_gpu: Option<SingleGpu>,
    pub holders: Holders,
    pub hooks: Hooks,
    pub shutdown: Shutdown,
    pub qemu: Qemu,
    pub tpm: Option<Tpm>,
    pub smbios: Option<Smbios>,
    pub audio: Option<Audio>,
    pub clock: Option<Clock>,
}

impl VmConfig {
    pub fn vcpu_count(&self) -> u32 {
        self.cpu.topology.vcpus()
    }
}

/// Reads and validates a profile: every problem of the file at once, those of its TOML shape
/// (unknown keys, wrong types, tables written the wrong way) and those of its values, in line
/// order. A value problem that only follows from a key already reported (a vCPU list checked
/// against a `cores` that could not be read) is left out: fixing that key settles it or brings
/// it back.
pub fn load(source: &ProfileSource) -> Result<(VmConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let reading = parse::read(source);
    let Some(raw) = reading.raw else {
        return Err(reading.problems);
    };
    let validated = validate(source, &raw);
    if reading.problems.is_empty() {
        return validated;
    }
    let reported: Vec<&str> = reading
        .problems
        .iter()
        .map(|d| d.key.as_str())
        .chain(reading.left_out.iter().map(String::as_str))
        .collect();
    let follows = |diagnostic: &Diagnostic| {
        reported.iter().any(|key| {
            !key.is_empty()
                && (diagnostic.key == *key
                    || diagnostic.key.starts_with(&format!("{key}."))
                    || diagnostic.key.starts_with(&format!("{key}["))
                    || (key.contains('.') && diagnostic.message.contains(key)))
        })
    };
    let more = match validated {
        Ok((_, warnings)) => warnings,
        Err(diagnostics) => diagnostics,
    };
    let mut problems = reading.problems.clone();
    problems.extend(more.into_iter().filter(|d| !follows(d)));
    problems.sort_by_key(|d| d.line.unwrap_or(0));
    Err(problems)
}

/// Validates a parsed profile. `Ok` carries the model and its warnings. Files the profile
/// names but this host lacks are reported as `Kind::MissingFile` warnings: the profile itself is
/// fine (and `show` works), while `check` and `run` fail on them.
pub fn validate(
    source: &ProfileSource,
    raw: &RawProfile,
) -> Result<(VmConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut v = Validator {
        diags: Diagnostics::new(&source.path, &source.text),
        base_dir: source.base_dir(),
    };
    let config = v.profile(source, raw);
    if v.diags.has_errors() {
        Err(v.diags.into_vec())
    } else {
        Ok((config, v.diags.into_vec()))
    }
}

impl Validator {
    fn profile(&mut self, source: &ProfileSource, raw: &RawProfile) -> VmConfig {
        let name = self.name(source, raw);
        let machine = self.machine(raw);
        let cpu = self.cpu(raw, machine.accel);
        let pinning = self.pinning(raw, &cpu, &machine);
        let isolation = self.isolation(raw, pinning.as_ref());
        let firmware = self.firmware(raw);
        let disks = self.disks(raw);
        let network = self.network(raw, &name);
        let pci = self.pci(raw, &firmware, &disks);
        let usb = self.usb(raw);
        let input = self.input(raw);
        let display = self.display(raw, &pci);
        let serial = self.console(raw);
        let looking_glass = self.looking_glass(raw);
        let single_gpu = self.single_gpu(raw, &pci);
        let holders = self.holders(raw, &pci);
        let hooks = self.hooks(raw);
        let shutdown = self.shutdown(raw);
        let qemu = self.qemu(raw);
        let tpm = self.tpm(raw);
        let smbios = self.smbios(raw);
        let audio = self.audio(raw);
        let clock = self.clock(raw);
        VmConfig {
            name,
            profile_path: source.path.clone(),
            machine,
            cpu,
            pinning,
            isolation,
            firmware,
            disks,
            network,
            pci,
            usb,
            input,
            display,
            serial,
            looking_glass,
            single_gpu,
            holders,
            hooks,
            shutdown,
            qemu,
            tpm,
            smbios,
            audio,
            clock,
        }
    }

    fn name(&mut self, source: &ProfileSource, raw: &RawProfile) -> VmName {
        let fallback = VmName::placeholder;
        match &raw.name {
            Some(name) => self.parse(name, "name").unwrap_or_else(fallback),
            None => match source.stem().parse() {
                Ok(name) => name,
                Err(message) => {
                    self.diags.push(
                        Severity::Error,
                        Some(0..0),
                        "name",
                        format!("the file name gives no valid VM name ({message}); set `name`"),
                    );
                    fallback()
                }
            },
        }
    }
}
