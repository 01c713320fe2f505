//! Preparing the host before QEMU starts, and giving it back exactly afterwards.
//!
//! Order: pre_start hooks; for a single-GPU session the display manager, the bound
//! vtconsoles, the EFI/simple framebuffer and the GPU modules; vfio-pci loaded; every passed
//! device moved to vfio-pci through `driver_override` (as libvirt's managed mode does);
//! hugepages; the Looking Glass file. Each change is journaled before it is made, and undone in
//! reverse order by `restore`, by a failed `prepare`, and by `vmrun recover` after a crash.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::journal::{Journal, JournalError, Undo};
use super::runner::{CommandOutput, CommandRunner, RunnerError};
use super::{pci, SysfsIo, Sysroot};
use crate::log::Log;
use crate::model::{ByteSize, VmConfig};

#[derive(Debug, thiserror::Error)]
pub enum PrepError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("`{command}` failed: {detail}")]
    CommandFailed { command: String, detail: String },
    #[error("module {module} is still in use after {attempts} attempts to unload it{holders}")]
    ModuleInUse {
        module: String,
        attempts: u32,
        holders: String,
    },
    #[error("{address} did not move to {driver} within {waited:?}{hint}")]
    BindTimeout {
        address: String,
        driver: String,
        waited: Duration,
        hint: &'static str,
    },
    #[error("{0}")]
    Other(String),
}

/// How long to wait for the kernel; tests shorten it.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub bind_timeout: Duration,
    pub module_attempts: u32,
    pub module_retry_delay: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            bind_timeout: Duration::from_secs(5),
            module_attempts: 10,
            module_retry_delay: Duration::from_millis(300),
        }
    }
}

const FRAMEBUFFER_DRIVERS: &[&str] = &["efi-framebuffer", "simple-framebuffer", "vesa-framebuffer"];

pub struct HostPrep<'a> {
    config: &'a VmConfig,
    root: Sysroot,
    sysfs: &'a dyn SysfsIo,
    runner: &'a dyn CommandRunner,
    journal: Journal,
    timing: Timing,
}

fn command_text(argv: &[String]) -> String {
    argv.join(" ")
}

fn normalize_module(name: &str) -> String {
    name.replace('-', "_")
}

impl<'a> HostPrep<'a> {
    pub fn new(
        config: &'a VmConfig,
        root: Sysroot,
        sysfs: &'a dyn SysfsIo,
        runner: &'a dyn CommandRunner,
        journal_path: &Path,
    ) -> Self {
        HostPrep {
            config,
            root,
            sysfs,
            runner,
            journal: Journal::at(journal_path),
            timing: Timing::default(),
        }
    }

    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    fn read(&self, path: &str) -> Option<String> {
        self.sysfs
            .read(path)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
    }

    fn write(&self, path: &str, value: &str) -> Result<(), PrepError> {
        self.sysfs
            .write(path, value.as_bytes())
            .map_err(|source| PrepError::Io {
                path: path.to_string(),
                source,
            })
    }

    fn wait_until(&self, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + self.timing.bind_timeout;
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs a program with the VM's name and the sysroot in its environment, plus `extra`.
    fn run_with_env(
        &self,
        argv: &[String],
        extra: &[(&str, &str)],
        log: &Log,
    ) -> Result<CommandOutput, PrepError> {
        log.debug(&format!("running {}", command_text(argv)));
        let root = self.root.path("/").to_string_lossy().into_owned();
        let mut env = vec![
            ("VMRUN_VM", self.config.name.as_str()),
            ("VMRUN_SYSROOT", root.as_str()),
        ];
        env.extend_from_slice(extra);
        Ok(self.runner.run(argv, &env)?)
    }

    fn run(&self, argv: &[String], log: &Log) -> Result<CommandOutput, PrepError> {
        self.run_with_env(argv, &[], log)
    }

    fn run_checked(&self, argv: &[String], log: &Log) -> Result<CommandOutput, PrepError> {
        let output = self.run(argv, log)?;
        if output.success {
            Ok(output)
        } else {
            Err(PrepError::CommandFailed {
                command: command_text(argv),
                detail: output.stderr.trim().to_string(),
            })
        }
    }

    fn module_loaded(&self, module: &str) -> bool {
        let wanted = normalize_module(module);
        std::fs::read_to_string(self.root.path("/proc/modules"))
            .unwrap_or_default()
            .lines()
            .any(|line| line.split_whitespace().next() == Some(wanted.as_str()))
    }

    fn driver_dir_exists(&self, driver: &str) -> bool {
        self.root
            .path(&format!("/sys/bus/pci/drivers/{driver}"))
            .is_dir()
    }

    /// Journals `undo`, then makes the change.
    fn change(
        &self,
        undo: Undo,
        make: impl FnOnce() -> Result<(), PrepError>,
    ) -> Result<(), PrepError> {
        self.journal.append(&undo)?;
        make()
    }

    /// Everything `prepare` does, in order; stops at the first failure.
    pub fn apply(&self, log: &Log) -> Result<(), PrepError> {
        let config = self.config;
        if !config.hooks.post_stop.is_empty() {
            self.journal.append(&Undo::RunPostStop {
                commands: config.hooks.post_stop.clone(),
            })?;
        }
        for argv in &config.hooks.pre_start {
            log.info(&format!("pre_start hook: {}", command_text(argv)));
            let output = self.run_with_phase(argv, "pre_start", log)?;
            if !output.success {
                return Err(PrepError::CommandFailed {
                    command: format!("pre_start hook {}", command_text(argv)),
                    detail: format!("exit code {:?}: {}", output.code, output.stderr.trim()),
                });
            }
        }
        if let Some(single) = &config.single_gpu {
            self.stop_display_manager(&single.display_manager, log)?;
            self.unbind_consoles(log)?;
            for module in &single.modules {
                self.unload_module(module, log)?;
            }
        }
        if !config.pci.is_empty() {
            self.load_vfio(log)?;
            for device in &config.pci {
                self.bind_vfio(&device.address.to_string(), log)?;
            }
        }
        self.reserve_hugepages(log)?;
        self.create_looking_glass_file(log)?;
        Ok(())
    }

    /// A hook: also told its phase and the profile it belongs to.
    fn run_with_phase(
        &self,
        argv: &[String],
        phase: &str,
        log: &Log,
    ) -> Result<CommandOutput, PrepError> {
        let profile = self.config.profile_path.to_string_lossy().into_owned();
        self.run_with_env(
            argv,
            &[("VMRUN_PHASE", phase), ("VMRUN_PROFILE", profile.as_str())],
            log,
        )
    }

    fn stop_display_manager(&self, unit: &str, log: &Log) -> Result<(), PrepError> {
        let state = self.run(&super::runner::argv(&["systemctl", "is-active", unit]), log)?;
        if state.stdout.trim() != "active" {
            log.info(&format!("{unit} is not active; leaving it"));
            return Ok(());
        }
        log.info(&format!("stopping {unit}"));
        self.change(Undo::StartUnit { unit: unit.into() }, || {
            self.run_checked(&super::runner::argv(&["systemctl", "stop", unit]), log)
                .map(|_| ())
        })
    }

    fn unbind_consoles(&self, log: &Log) -> Result<(), PrepError> {
        let mut consoles: Vec<String> = std::fs::read_dir(self.root.path("/sys/class/vtconsole"))
            .map(|list| {
                list.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        consoles.sort();
        for name in consoles {
            let path = format!("/sys/class/vtconsole/{name}/bind");
            if self.read(&path).as_deref() == Some("1") {
                log.info(&format!("unbinding {name}"));
                self.change(Undo::BindVtconsole { name: name.clone() }, || {
                    self.write(&path, "0")
                })?;
            }
        }
        for driver in FRAMEBUFFER_DRIVERS {
            let dir = self
                .root
                .path(&format!("/sys/bus/platform/drivers/{driver}"));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut devices: Vec<String> = entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_type().is_ok_and(|t| t.is_symlink())
                        && e.file_name().to_string_lossy().contains('.')
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            devices.sort();
            for device in devices {
                log.info(&format!("unbinding {device} from {driver}"));
                let link = self
                    .root
                    .path(&format!("/sys/bus/platform/devices/{device}/driver"));
                self.change(
                    Undo::BindPlatform {
                        driver: driver.to_string(),
                        device: device.clone(),
                    },
                    || {
                        self.write(
                            &format!("/sys/bus/platform/drivers/{driver}/unbind"),
                            &device,
                        )?;
                        if self.wait_until(|| link.symlink_metadata().is_err()) {
                            Ok(())
                        } else {
                            Err(PrepError::Other(format!(
                                "{device} stayed bound to {driver}"
                            )))
                        }
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Processes holding a GPU device node, from /proc/*/fd.
    fn gpu_holders(&self) -> Vec<String> {
        let mut holders = Vec::new();
        let Ok(processes) = std::fs::read_dir(self.root.path("/proc")) else {
            return holders;
        };
        for process in processes.filter_map(Result::ok) {
            let pid = process.file_name().to_string_lossy().into_owned();
            if !pid.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
                continue;
            };
            for fd in fds.filter_map(Result::ok) {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let target = target.to_string_lossy().into_owned();
                if ["/dev/dri/", "/dev/nvidia", "/dev/fb"]
                    .iter()
                    .any(|p| target.starts_with(p))
                {
                    let comm =
                        std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
                    holders.push(format!("{} (pid {pid}) holds {target}", comm.trim()));
                    break;
                }
            }
        }
        holders.sort();
        holders
    }

    fn unload_module(&self, module: &str, log: &Log) -> Result<(), PrepError> {
        if !self.module_loaded(module) {
            log.info(&format!("module {module} is not loaded"));
            return Ok(());
        }
        log.info(&format!("unloading module {module}"));
        self.change(
            Undo::LoadModule {
                module: module.into(),
            },
            || {
                if self.remove_module(module, log)? {
                    return Ok(());
                }
                let holders = self.gpu_holders();
                Err(PrepError::ModuleInUse {
                    module: module.into(),
                    attempts: self.timing.module_attempts,
                    holders: if holders.is_empty() {
                        String::new()
                    } else {
                        format!("; still using the GPU: {}", holders.join(", "))
                    },
                })
            },
        )
    }

    /// `modprobe -r`, retried: a module's last users (a process that just exited, a device
    /// just unbound) let go of it asynchronously. `Ok(false)` when it stayed in use.
    fn remove_module(&self, module: &str, log: &Log) -> Result<bool, PrepError> {
        let argv = super::runner::argv(&["modprobe", "-r", module]);
        for attempt in 1..=self.timing.module_attempts {
            let output = self.run(&argv, log)?;
            if output.success || !self.module_loaded(module) {
                return Ok(true);
            }
            log.debug(&format!("attempt {attempt}: {}", output.stderr.trim()));
            std::thread::sleep(self.timing.module_retry_delay);
        }
        Ok(false)
    }

    fn load_vfio(&self, log: &Log) -> Result<(), PrepError> {
        if self.driver_dir_exists("vfio-pci") {
            return Ok(());
        }
        log.info("loading module vfio-pci");
        self.change(
            Undo::UnloadModule {
                module: "vfio-pci".into(),
            },
            || {
                self.run_checked(&super::runner::argv(&["modprobe", "vfio-pci"]), log)?;
                if self.wait_until(|| self.driver_dir_exists("vfio-pci")) {
                    Ok(())
                } else {
                    Err(PrepError::Other(
                        "modprobe vfio-pci succeeded but no vfio-pci driver appeared".into(),
                    ))
                }
            },
        )
    }

    fn bind_vfio(&self, address: &str, log: &Log) -> Result<(), PrepError> {
        let driver = pci::driver_of(&self.root, address);
        if driver.as_deref() == Some("vfio-pci") {
            log.info(&format!("{address} is already on vfio-pci"));
            return Ok(());
        }
        let driver_override = pci::driver_override_of(&self.root, address);
        log.info(&format!(
            "binding {address} to vfio-pci (was {})",
            driver.as_deref().unwrap_or("unbound")
        ));
        self.change(
            Undo::RestorePciDriver {
                address: address.into(),
                driver: driver.clone(),
                driver_override,
            },
            || {
                self.write(
                    &format!("/sys/bus/pci/devices/{address}/driver_override"),
                    "vfio-pci",
                )?;
                if let Some(current) = &driver {
                    self.unbind(address, current)?;
                }
                self.write("/sys/bus/pci/drivers_probe", address)?;
                if self.wait_until(|| {
                    pci::driver_of(&self.root, address).as_deref() == Some("vfio-pci")
                }) {
                    Ok(())
                } else {
                    Err(PrepError::BindTimeout {
                        address: address.into(),
                        driver: "vfio-pci".into(),
                        waited: self.timing.bind_timeout,
                        hint: "; is the vfio-pci module usable (dmesg may say why)?",
                    })
                }
            },
        )
    }

    fn unbind(&self, address: &str, driver: &str) -> Result<(), PrepError> {
        self.write(&format!("/sys/bus/pci/drivers/{driver}/unbind"), address)?;
        if self.wait_until(|| pci::driver_of(&self.root, address).as_deref() != Some(driver)) {
            Ok(())
        } else {
            Err(PrepError::Other(format!(
                "{address} stayed on {driver} after unbind"
            )))
        }
    }

    fn reserve_hugepages(&self, log: &Log) -> Result<(), PrepError> {
        let Some(pages) = self.config.machine.hugepages else {
            return Ok(());
        };
        let size_kib = pages.bytes() / 1024;
        let dir = format!("/sys/kernel/mm/hugepages/hugepages-{size_kib}kB");
        let needed = self.config.machine.memory.bytes() / pages.bytes();
        let number = |name: &str| -> u64 {
            self.read(&format!("{dir}/{name}"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let free = number("free_hugepages");
        if free >= needed {
            log.info(&format!(
                "{free} free {} pages, {needed} needed",
                ByteSize(pages.bytes())
            ));
            return Ok(());
        }
        let total = number("nr_hugepages");
        let wanted = total + (needed - free);
        log.info(&format!(
            "allocating {} more {} pages ({total} → {wanted})",
            needed - free,
            ByteSize(pages.bytes())
        ));
        let attribute = format!("{dir}/nr_hugepages");
        self.change(
            Undo::SetHugepages {
                attribute: attribute.clone(),
                count: total,
            },
            || {
                self.write(&attribute, &wanted.to_string())?;
                if self.wait_until(|| number("free_hugepages") >= needed) {
                    Ok(())
                } else {
                    Err(PrepError::Other(format!(
                        "only {} of {needed} {} pages are free after asking for {wanted}: memory is too fragmented; \
                         reserve them at boot (hugepages= on the kernel command line) or use smaller pages",
                        number("free_hugepages"),
                        ByteSize(pages.bytes())
                    )))
                }
            },
        )
    }

    fn create_looking_glass_file(&self, log: &Log) -> Result<(), PrepError> {
        let Some(lg) = &self.config.looking_glass else {
            return Ok(());
        };
        if lg.is_kvmfr() {
            return Ok(());
        }
        let path = self.root.path(&lg.path.to_string_lossy());
        if path.exists() {
            log.info(&format!("using the existing {}", lg.path.display()));
            return Ok(());
        }
        log.info(&format!(
            "creating {} (mode {:o})",
            lg.path.display(),
            lg.mode
        ));
        self.change(
            Undo::RemoveFile {
                path: lg.path.clone(),
            },
            || {
                let io = |source| PrepError::Io {
                    path: lg.path.display().to_string(),
                    source,
                };
                use std::os::unix::fs::PermissionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(lg.mode))
                    .map_err(io)?;
                let uid = lg.owner.as_deref().map(resolve_user).transpose()?;
                let gid = lg.group.as_deref().map(resolve_group).transpose()?;
                if uid.is_some() || gid.is_some() {
                    nix::unistd::chown(&path, uid, gid).map_err(|errno| io(errno.into()))?;
                }
                Ok(())
            },
        )
    }

    /// Replays the journal in reverse. Entries that could not be undone stay in the journal.
    pub fn undo_all(&self, log: &Log) -> Result<(), Vec<String>> {
        let entries = match self.journal.entries() {
            Ok(entries) => entries,
            Err(error) => return Err(vec![error.to_string()]),
        };
        if entries.is_empty() {
            let _ = self.journal.replace(&[]);
            return Ok(());
        }
        let mut failed: Vec<(Undo, String)> = Vec::new();
        for entry in entries.iter().rev() {
            if let Err(error) = self.undo(entry, log) {
                log.error(&format!("could not undo {entry:?}: {error}"));
                failed.push((entry.clone(), error.to_string()));
            }
        }
        // Devices whose driver module came back only at the end: check they are home.
        for entry in &entries {
            if let Undo::RestorePciDriver {
                address,
                driver: Some(driver),
                ..
            } = entry
            {
                if failed.iter().any(|(e, _)| e == entry) {
                    continue;
                }
                // A probe can only help once the driver is registered again (its module was
                // reloaded above) and the device has not been claimed by it yet.
                if self.driver_dir_exists(driver)
                    && pci::driver_of(&self.root, address).as_deref() != Some(driver.as_str())
                {
                    let _ = self.write("/sys/bus/pci/drivers_probe", address);
                }
                if !self.wait_until(|| {
                    pci::driver_of(&self.root, address).as_deref() == Some(driver.as_str())
                }) {
                    let now =
                        pci::driver_of(&self.root, address).unwrap_or_else(|| "no driver".into());
                    failed.push((
                        entry.clone(),
                        format!("{address} is not back on {driver} (now: {now})"),
                    ));
                }
            }
        }
        let remaining: Vec<Undo> = entries
            .iter()
            .filter(|e| failed.iter().any(|(f, _)| f == *e))
            .cloned()
            .collect();
        if let Err(error) = self.journal.replace(&remaining) {
            failed.push((
                Undo::RemoveFile {
                    path: self.journal.path().to_path_buf(),
                },
                error.to_string(),
            ));
        }
        if failed.is_empty() {
            log.info("host restored");
            Ok(())
        } else {
            Err(failed.into_iter().map(|(_, message)| message).collect())
        }
    }

    fn undo(&self, entry: &Undo, log: &Log) -> Result<(), PrepError> {
        match entry {
            Undo::RunPostStop { commands } => {
                for argv in commands {
                    log.info(&format!("post_stop hook: {}", command_text(argv)));
                    let output = self.run_with_phase(argv, "post_stop", log)?;
                    if !output.success {
                        return Err(PrepError::CommandFailed {
                            command: format!("post_stop hook {}", command_text(argv)),
                            detail: output.stderr.trim().to_string(),
                        });
                    }
                }
                Ok(())
            }
            Undo::StartUnit { unit } => {
                log.info(&format!("starting {unit}"));
                self.run_checked(&super::runner::argv(&["systemctl", "start", unit]), log)
                    .map(|_| ())
            }
            Undo::BindVtconsole { name } => {
                log.info(&format!("rebinding {name}"));
                self.write(&format!("/sys/class/vtconsole/{name}/bind"), "1")
            }
            Undo::BindPlatform { driver, device } => {
                let link = self
                    .root
                    .path(&format!("/sys/bus/platform/devices/{device}/driver"));
                if link.symlink_metadata().is_ok() {
                    return Ok(());
                }
                log.info(&format!("rebinding {device} to {driver}"));
                self.write(&format!("/sys/bus/platform/drivers/{driver}/bind"), device)?;
                if self.wait_until(|| link.symlink_metadata().is_ok()) {
                    Ok(())
                } else {
                    Err(PrepError::Other(format!(
                        "{device} did not bind to {driver}"
                    )))
                }
            }
            Undo::LoadModule { module } => {
                if self.module_loaded(module) {
                    return Ok(());
                }
                log.info(&format!("loading module {module}"));
                self.run_checked(&super::runner::argv(&["modprobe", module]), log)
                    .map(|_| ())
            }
            Undo::UnloadModule { module } => {
                if !self.module_loaded(module) {
                    return Ok(());
                }
                log.info(&format!("unloading module {module}"));
                if self.remove_module(module, log)? {
                    Ok(())
                } else {
                    Err(PrepError::ModuleInUse {
                        module: module.clone(),
                        attempts: self.timing.module_attempts,
                        holders: String::new(),
                    })
                }
            }
            Undo::RestorePciDriver {
                address,
                driver,
                driver_override,
            } => {
                let current = pci::driver_of(&self.root, address);
                log.info(&format!(
                    "returning {address} to {} (now {})",
                    driver.as_deref().unwrap_or("no driver"),
                    current.as_deref().unwrap_or("unbound")
                ));
                self.write(
                    &format!("/sys/bus/pci/devices/{address}/driver_override"),
                    driver_override.as_deref().unwrap_or("\n"),
                )?;
                if current.is_some() && current != *driver {
                    self.unbind(address, current.as_deref().unwrap_or_default())?;
                }
                match driver {
                    // Its module may still be unloaded (single GPU): loading it later binds it.
                    Some(original)
                        if current.as_deref() != Some(original)
                            && self.driver_dir_exists(original) =>
                    {
                        self.write("/sys/bus/pci/drivers_probe", address)?;
                        if self.wait_until(|| {
                            pci::driver_of(&self.root, address).as_deref()
                                == Some(original.as_str())
                        }) {
                            Ok(())
                        } else {
                            Err(PrepError::BindTimeout {
                                address: address.clone(),
                                driver: original.clone(),
                                waited: self.timing.bind_timeout,
                                hint: "",
                            })
                        }
                    }
                    _ => Ok(()),
                }
            }
            Undo::SetHugepages { attribute, count } => {
                log.info(&format!("returning {attribute} to {count}"));
                self.write(attribute, &count.to_string())
            }
            Undo::RemoveFile { path } => {
                let real: PathBuf = self.root.path(&path.to_string_lossy());
                match std::fs::remove_file(&real) {
                    Ok(()) => {
                        log.info(&format!("removed {}", path.display()));
                        Ok(())
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(PrepError::Io {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
        }
    }
}

fn resolve_user(name: &str) -> Result<nix::unistd::Uid, PrepError> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(nix::unistd::Uid::from_raw(id));
    }
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|user| user.uid)
        .ok_or_else(|| {
            PrepError::Other(format!(
                "looking_glass.owner: no user `{name}` on this host"
            ))
        })
}

fn resolve_group(name: &str) -> Result<nix::unistd::Gid, PrepError> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(id));
    }
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|group| group.gid)
        .ok_or_else(|| {
            PrepError::Other(format!(
                "looking_glass.group: no group `{name}` on this host"
            ))
        })
}

impl crate::run::HostSession for HostPrep<'_> {
    fn prepare(&mut self, log: &Log) -> Result<(), String> {
        if self
            .journal
            .entries()
            .map(|e| !e.is_empty())
            .unwrap_or(true)
        {
            log.warn("a previous run of this VM left host changes behind (vmrun was killed?); undoing them first");
            self.undo_all(log).map_err(|left| {
                format!(
                    "the host changes of a previous run could not be undone: {}; fix that, then run `vmrun recover {}`",
                    left.join("; "),
                    self.config.name
                )
            })?;
        }
        match self.apply(log) {
            Ok(()) => Ok(()),
            Err(error) => {
                log.error(&format!(
                    "host preparation failed: {error}; undoing what was changed"
                ));
                match self.undo_all(log) {
                    Ok(()) => Err(error.to_string()),
                    Err(left) => Err(format!(
                        "{error}; and the host could not be fully restored: {}; fix that, then run `vmrun recover {}`",
                        left.join("; "),
                        self.config.name
                    )),
                }
            }
        }
    }

    fn restore(&mut self, log: &Log) {
        if let Err(left) = self.undo_all(log) {
            log.error(&format!(
                "the host could not be fully restored: {}; fix that, then run `vmrun recover {}`",
                left.join("; "),
                self.config.name
            ));
        }
    }
}
