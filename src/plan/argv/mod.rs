//! The `qemu-system-x86_64` argv: a pure function of the validated model, the resolved firmware
//! and the VM's paths. QEMU is executed directly with this vector, never through a shell.

mod devices;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::firmware::ResolvedFirmware;
use crate::model::*;

use super::paths::VmPaths;
use super::Resolved;
use devices::{
    audio, disks, display, input, looking_glass, mediated, network, passthrough, pflash,
    remote_input, usb,
};

/// What boots the guest, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootFirmware {
    SeaBios,
    Ovmf(ResolvedFirmware),
}

/// QEMU's option parser ends a value at `,`; a literal comma is written twice.
pub fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

fn escape_path(path: &Path) -> String {
    escape(&path.to_string_lossy())
}

/// One QEMU option value assembled from `key=value` parts, the first part being the driver or
/// a bare value.
struct Opts(Vec<String>);

impl Opts {
    fn new(head: impl Into<String>) -> Self {
        Opts(vec![head.into()])
    }

    fn set(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.0.push(format!("{key}={}", value.as_ref()));
        self
    }

    fn set_if(self, condition: bool, key: &str, value: impl AsRef<str>) -> Self {
        if condition {
            self.set(key, value)
        } else {
            self
        }
    }

    fn flag(mut self, bare: &str) -> Self {
        self.0.push(bare.to_string());
        self
    }

    fn build(self) -> String {
        self.0.join(",")
    }
}

struct Argv(Vec<String>);

impl Argv {
    fn push(&mut self, option: &str, value: impl Into<String>) {
        self.0.push(option.to_string());
        self.0.push(value.into());
    }
}

/// The tap device vmrun makes for a bridged VM: derived from the VM's name alone (at most 15
/// bytes, as interface names must be), so that the argv and the host step agree and a crashed
/// run's tap is found again.
pub fn tap_name(vm: &crate::model::VmName) -> String {
    // FNV-1a: stable across builds, unlike the standard library's hasher.
    let hash = vm.as_str().bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    format!("vmrun{hash:08x}")
}

/// The file descriptor QEMU finds the supervisor's listening QMP socket on.
pub const QMP_FD: i32 = 3;
/// The file descriptor of the second monitor's listening socket (`status`, `stop`, `qmp`).
pub const CTL_FD: i32 = 4;
/// The first descriptor of the files vmrun opens for QEMU.
const FIRST_PASSED_FD: i32 = 5;

/// How vmrun opens a file it hands to QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenAs {
    Read,
    ReadWrite,
    /// Created or emptied, written only (the serial console's log).
    Create,
    /// A connection to a Unix socket another program listens on (swtpm).
    Connect,
}

/// A file vmrun opens as root and QEMU receives on `fd`: QEMU, running unprivileged, needs no
/// access to the file's path, and nothing about the file's owner or mode changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PassedFile {
    pub fd: i32,
    pub path: PathBuf,
    pub open: OpenAs,
}

/// QEMU's argv and the files it is given with it.
pub struct QemuCommand {
    pub argv: Vec<String>,
    pub files: Vec<PassedFile>,
}

/// The argv as a script would write it for a QEMU that opens its files itself: no `-add-fd`,
/// and each `/dev/fdset/N` replaced by the path of that set's file (commas doubled). For
/// comparing vmrun's QEMU with other ways of starting it (libvirt's argv, a bare script).
pub fn argv_with_paths(argv: &[String], files: &[PassedFile]) -> Vec<String> {
    let mut path_of_set = BTreeMap::new();
    let mut resolved = Vec::new();
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        if word != "-add-fd" {
            resolved.push(word.clone());
            continue;
        }
        let Some(opts) = words.next() else { break };
        let field = |key: &str| opts.split(',').find_map(|part| part.strip_prefix(key));
        let file = field("fd=")
            .and_then(|fd| fd.parse::<i32>().ok())
            .and_then(|fd| files.iter().find(|file| file.fd == fd));
        if let (Some(set), Some(file)) = (field("set="), file) {
            path_of_set.insert(format!("/dev/fdset/{set}"), escape_path(&file.path));
        }
    }
    resolved
        .into_iter()
        .map(|word| {
            word.split(',')
                .map(|part| match part.split_once('=') {
                    Some((key, value)) if path_of_set.contains_key(value) => {
                        format!("{key}={}", path_of_set[value])
                    }
                    _ => part.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Hands out descriptor numbers and fd sets in argv order, so the same model always gives
/// the same argv.
struct PassedFiles {
    files: Vec<PassedFile>,
    sets: u32,
}

impl PassedFiles {
    fn fd(&mut self, path: &Path, open: OpenAs) -> i32 {
        let fd = FIRST_PASSED_FD + self.files.len() as i32;
        self.files.push(PassedFile {
            fd,
            path: path.to_path_buf(),
            open,
        });
        fd
    }

    /// An fd set QEMU opens as `/dev/fdset/N`, one descriptor per access mode: QEMU picks the
    /// one whose mode matches what it opens the file for.
    fn fdset(&mut self, argv: &mut Argv, path: &Path, modes: &[OpenAs], label: &str) -> String {
        self.sets += 1;
        let set = self.sets;
        for open in modes {
            let fd = self.fd(path, *open);
            let mode = match open {
                OpenAs::Read => "ro",
                _ => "rw",
            };
            argv.push(
                "-add-fd",
                Opts::new(format!("fd={fd}"))
                    .set("set", set.to_string())
                    .set("opaque", format!("{label}-{mode}"))
                    .build(),
            );
        }
        format!("/dev/fdset/{set}")
    }

    /// A file QEMU reads and (unless `read_only`) writes.
    fn image(&mut self, argv: &mut Argv, path: &Path, read_only: bool, label: &str) -> String {
        let modes: &[OpenAs] = if read_only {
            &[OpenAs::Read]
        } else {
            &[OpenAs::ReadWrite, OpenAs::Read]
        };
        self.fdset(argv, path, modes, label)
    }
}

pub fn build(
    config: &VmConfig,
    firmware: &BootFirmware,
    paths: &VmPaths,
    resolved: &Resolved,
) -> QemuCommand {
    let mut argv = Argv(vec![config.qemu.binary.clone()]);
    let mut files = PassedFiles {
        files: Vec::new(),
        sets: 0,
    };
    argv.push(
        "-name",
        Opts::new(format!("guest={}", config.name))
            .set("debug-threads", "on")
            .build(),
    );
    machine(&mut argv, config, firmware);
    clock_and_power(&mut argv, config);
    smbios(&mut argv, resolved);
    cpu(&mut argv, config);
    memory(&mut argv, config);
    let topology = config.cpu.topology;
    argv.push(
        "-smp",
        Opts::new(topology.vcpus().to_string())
            .set("sockets", topology.sockets.to_string())
            .set("cores", topology.cores.to_string())
            .set("threads", topology.threads.to_string())
            .build(),
    );
    argv.0.push("-nodefaults".into());
    argv.0.push("-no-user-config".into());
    // vCPUs must not run a single instruction before vmrun has pinned them.
    argv.0.push("-S".into());
    // A guest's panic notifier (Linux's pvpanic driver, Windows' bugcheck) reaches vmrun as
    // GUEST_PANICKED instead of a hung or silently rebooting guest.
    argv.push("-device", "pvpanic");
    // The monitors are sockets vmrun binds and listens on before QEMU starts, handed over as
    // file descriptors (as libvirt does): vmrun connects at once, without polling for a path,
    // and a stale socket file is never mistaken for a live one.
    for (id, fd) in [("qmp", QMP_FD), ("qmp-ctl", CTL_FD)] {
        argv.push(
            "-chardev",
            Opts::new("socket")
                .set("id", id)
                .set("fd", fd.to_string())
                .set("server", "on")
                .set("wait", "off")
                .build(),
        );
        argv.push("-mon", format!("chardev={id},mode=control"));
    }
    display(&mut argv, config, paths);
    if let BootFirmware::Ovmf(resolved) = firmware {
        pflash(&mut argv, &mut files, resolved, paths);
    }
    tpm(&mut argv, &mut files, config, paths);
    for index in 0..config.machine.iothreads {
        argv.push("-object", format!("iothread,id=iothread{index}"));
    }
    disks(&mut argv, &mut files, config);
    network(&mut argv, config, resolved.vhost_net);
    passthrough(&mut argv, config, firmware);
    mediated(&mut argv, config);
    usb(&mut argv, config);
    remote_input(&mut argv, config);
    audio(&mut argv, config, resolved);
    input(&mut argv, config);
    looking_glass(&mut argv, config);
    if config.serial == SerialConsole::Log {
        // A socket QEMU listens on for `vmrun console` (one client at a time; QEMU listens
        // again when it leaves), with every byte the guest writes also in console.log,
        // connected or not. QEMU creates the socket in the one directory it owns.
        let console = files.fdset(&mut argv, &paths.console_log, &[OpenAs::Create], "console");
        argv.push(
            "-chardev",
            Opts::new("socket")
                .set("id", "console")
                .set("path", escape_path(&paths.console_socket))
                .set("server", "on")
                .set("wait", "off")
                .set("logfile", console)
                .build(),
        );
        argv.push("-device", "isa-serial,chardev=console");
    }
    if config.qemu.sandbox {
        // QEMU may not start programs, change its privileges, or use obsolete or
        // resource-control system calls: what vmrun needs done (a bridge's tap, pinning,
        // priorities) vmrun does itself.
        argv.push(
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        );
    }
    argv.0.extend(config.qemu.extra_args.iter().cloned());
    QemuCommand {
        argv: argv.0,
        files: files.files,
    }
}

fn machine(argv: &mut Argv, config: &VmConfig, firmware: &BootFirmware) {
    let ovmf = match firmware {
        BootFirmware::Ovmf(resolved) => Some(resolved),
        BootFirmware::SeaBios => None,
    };
    let smm = ovmf.is_some_and(|f| f.requires_smm || f.secure_boot);
    let opts = Opts::new(config.machine.machine_type.clone())
        .set_if(smm, "smm", "on")
        .set_if(ovmf.is_some(), "pflash0", "ovmf-code")
        .set_if(ovmf.is_some(), "pflash1", "ovmf-vars")
        .set_if(config.machine.hugepages.is_some(), "memory-backend", "ram")
        .set_if(config.clock.is_some_and(|c| !c.hpet), "hpet", "off");
    argv.push("-machine", opts.build());
    argv.push(
        "-accel",
        match config.machine.accel {
            Accel::Kvm => "kvm".to_string(),
            Accel::Tcg => "tcg,thread=multi".to_string(),
        },
    );
    if ovmf.is_some_and(|f| f.secure_boot) {
        // Without this, the guest OS could write the secure-boot variables around the firmware.
        argv.push("-global", "driver=cfi.pflash01,property=secure,value=on");
    }
}

fn clock_and_power(argv: &mut Argv, config: &VmConfig) {
    if let Some(clock) = &config.clock {
        argv.push(
            "-rtc",
            Opts::new(format!("base={}", clock.base.as_str()))
                .set_if(clock.rtc_driftfix, "driftfix", "slew")
                .build(),
        );
        // Only KVM's in-kernel PIT has the property; TCG's i8254 would make QEMU warn.
        if config.machine.accel == Accel::Kvm {
            argv.push(
                "-global",
                format!("kvm-pit.lost_tick_policy={}", clock.pit_lost_ticks.as_str()),
            );
        }
    }
    if !config.machine.suspend {
        argv.push("-global", "ICH9-LPC.disable_s3=1");
        argv.push("-global", "ICH9-LPC.disable_s4=1");
    }
}

fn smbios(argv: &mut Argv, resolved: &Resolved) {
    for table in 0..=3u8 {
        let mut opts = Opts::new(format!("type={table}"));
        let mut any = false;
        for value in resolved.smbios.iter().filter(|v| v.table == table) {
            opts = opts.set(value.qemu, escape(&value.value));
            any = true;
        }
        if any {
            argv.push("-smbios", opts.build());
        }
    }
}

fn tpm(argv: &mut Argv, files: &mut PassedFiles, config: &VmConfig, paths: &VmPaths) {
    if config.tpm.is_none() {
        return;
    }
    // Connected by vmrun: QEMU needs no way into the runtime directory to reach swtpm.
    let fd = files.fd(&paths.swtpm_socket, OpenAs::Connect);
    argv.push(
        "-chardev",
        Opts::new("socket")
            .set("id", "tpm-chr")
            .set("fd", fd.to_string())
            .build(),
    );
    argv.push("-tpmdev", "emulator,id=tpm0,chardev=tpm-chr");
    argv.push("-device", "tpm-crb,tpmdev=tpm0,id=tpm0-dev");
}

fn cpu(argv: &mut Argv, config: &VmConfig) {
    let mut opts =
        Opts::new(config.cpu.model.clone()).set_if(config.cpu.hide_hypervisor, "kvm", "off");
    for feature in &config.cpu.features {
        opts = opts.flag(feature);
    }
    for feature in &config.cpu.hyperv {
        opts = opts.flag(feature);
    }
    if let (Some(vendor), false) = (&config.cpu.hv_vendor_id, config.cpu.hyperv.is_empty()) {
        opts = opts.set("hv-vendor-id", escape(vendor));
    }
    argv.push("-cpu", opts.build());
}

fn memory(argv: &mut Argv, config: &VmConfig) {
    let size = config.machine.memory.qemu_spelling();
    argv.push("-m", size.clone());
    if let Some(pages) = config.machine.hugepages {
        // memfd with an explicit page size needs no hugetlbfs mount of the right size.
        argv.push(
            "-object",
            Opts::new("memory-backend-memfd")
                .set("id", "ram")
                .set("size", size)
                .set("hugetlb", "on")
                .set("hugetlbsize", ByteSize(pages.bytes()).qemu_spelling())
                .set("prealloc", "on")
                // The pages were reserved on that node: take them from there only.
                .set_if(
                    config.machine.numa_node.is_some(),
                    "host-nodes",
                    config.machine.numa_node.unwrap_or(0).to_string(),
                )
                .set_if(config.machine.numa_node.is_some(), "policy", "bind")
                .build(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_are_doubled() {
        assert_eq!(escape("/a,b/c,,d"), "/a,,b/c,,,,d");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn fd_sets_read_back_as_the_paths_of_their_files() {
        let mut argv = Argv(vec!["qemu".into()]);
        let mut files = PassedFiles {
            files: Vec::new(),
            sets: 0,
        };
        let disk = files.image(&mut argv, Path::new("/vm/a,b.raw"), false, "disk0");
        argv.push(
            "-blockdev",
            format!("driver=file,filename={disk},read-only=off"),
        );
        let iso = files.image(&mut argv, Path::new("/iso/x.iso"), true, "disk1");
        argv.push("-blockdev", format!("driver=file,filename={iso}"));
        assert_eq!(
            files.files.iter().map(|f| f.fd).collect::<Vec<_>>(),
            [5, 6, 7]
        );
        assert_eq!(
            argv_with_paths(&argv.0, &files.files),
            [
                "qemu",
                "-blockdev",
                "driver=file,filename=/vm/a,,b.raw,read-only=off",
                "-blockdev",
                "driver=file,filename=/iso/x.iso",
            ]
        );
    }
}
