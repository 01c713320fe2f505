//! Stage 2: the validated VM model. Everything here is typed and checked; later stages never
//! re-check what a user wrote.

pub mod leaves;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

pub use leaves::{ByteSize, CpuSet, MacAddress, PciAddress, Resolution, UsbId, VmName};
pub use validate::validate;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub name: VmName,
    pub profile_path: PathBuf,
    pub machine: Machine,
    pub cpu: Cpu,
    pub pinning: Option<Pinning>,
    pub firmware: Firmware,
    pub disks: Vec<Disk>,
    pub network: Network,
    pub pci: Vec<PciDevice>,
    pub usb: Vec<UsbId>,
    pub input: Input,
    pub display: Display,
    pub serial: SerialConsole,
    pub looking_glass: Option<LookingGlass>,
    pub single_gpu: Option<SingleGpu>,
    pub hooks: Hooks,
    pub shutdown: Shutdown,
    pub qemu: Qemu,
}

impl VmConfig {
    pub fn vcpu_count(&self) -> u32 {
        self.cpu.topology.vcpus()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugePageSize {
    TwoMiB,
    OneGiB,
}

impl HugePageSize {
    pub fn bytes(self) -> u64 {
        match self {
            HugePageSize::TwoMiB => 2 * ByteSize::MIB,
            HugePageSize::OneGiB => ByteSize::GIB,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub memory: ByteSize,
    pub hugepages: Option<HugePageSize>,
    /// `q35` or a versioned `pc-q35-X.Y`.
    pub machine_type: String,
    pub accel: Accel,
    /// Number of QEMU iothreads; virtio disks are spread over them.
    pub iothreads: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

impl Topology {
    pub fn vcpus(self) -> u32 {
        self.sockets * self.cores * self.threads
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub topology: Topology,
    pub model: String,
    pub hide_hypervisor: bool,
    pub hv_vendor_id: Option<String>,
    /// QEMU `-cpu` properties for the chosen Hyper-V enlightenments, e.g. `hv-spinlocks=0x1fff`.
    pub hyperv: Vec<String>,
    /// CPU properties switched on or off, as QEMU `-cpu` takes them: `topoext=on`.
    pub features: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    RoundRobin,
    Fifo,
    Other,
}

impl Scheduler {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::Fifo => "fifo",
            Scheduler::Other => "other",
        }
    }

    pub fn is_realtime(self) -> bool {
        !matches!(self, Scheduler::Other)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pinning {
    /// `vcpus[i]` is the host CPU of vCPU i.
    pub vcpus: Vec<usize>,
    /// QEMU's other threads; `None` means every online host CPU not in `vcpus`.
    pub emulator: Option<CpuSet>,
    pub iothreads: Option<CpuSet>,
    pub scheduler: Scheduler,
    /// 0 for `other`, 1..=99 for the real-time policies.
    pub priority: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    Ovmf {
        secure_boot: bool,
        /// Explicit files from the profile; `None` means: found through QEMU's descriptors.
        files: Option<FirmwareFiles>,
    },
    SeaBios,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareFiles {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Sata,
    Nvme,
    Scsi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Disk,
    Cdrom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// QEMU's default: host page cache, guest flushes honoured.
    Writeback,
    /// O_DIRECT: bypasses the host page cache.
    None,
    /// Ignores guest flushes: fast, loses data on a host crash.
    Unsafe,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub bus: DiskBus,
    pub media: Media,
    pub readonly: bool,
    pub cache: CacheMode,
    pub discard: bool,
    pub boot_order: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    User,
    Bridge(String),
    Tap(String),
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicModel {
    Virtio,
    E1000e,
    Rtl8139,
}

impl NicModel {
    pub fn qemu_device(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub mode: NetworkMode,
    pub mac: MacAddress,
    pub model: NicModel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    pub address: PciAddress,
    pub romfile: Option<PathBuf>,
    /// The guest's primary display adapter (gets `x-vga=on` under SeaBIOS).
    pub vga: bool,
    pub rombar: Option<bool>,
    /// QEMU's `bootindex`, shared with the disks' boot orders.
    pub boot_order: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Input {
    pub evdev: Vec<PathBuf>,
    pub grab_toggle: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgaModel {
    None,
    Std,
    Virtio,
    Qxl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gui {
    None,
    Gtk,
    Sdl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Display {
    pub vga: VgaModel,
    pub gui: Gui,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialConsole {
    None,
    /// The guest's first serial port is written to `console.log` in the VM's state directory.
    Log,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookingGlass {
    pub size: ByteSize,
    pub path: PathBuf,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: u32,
}

impl LookingGlass {
    /// A kvmfr device is a character device that the kvmfr module creates; vmrun never
    /// creates or removes it.
    pub fn is_kvmfr(&self) -> bool {
        self.path.starts_with("/dev/kvmfr") || self.path.to_string_lossy().starts_with("/dev/kvmfr")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SingleGpu {
    pub display_manager: String,
    pub modules: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Hooks {
    pub pre_start: Vec<Vec<String>>,
    pub post_stop: Vec<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shutdown {
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    pub binary: String,
    pub extra_args: Vec<String>,
}
