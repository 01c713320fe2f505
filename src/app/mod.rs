//! The application layer: one recipe for every command. The CLI parses arguments and renders
//! results; everything between (profile → model → firmware → plan + host steps → preflight →
//! host session → run and supervise → teardown, and `recover`) happens here, once.

pub mod detach;
pub mod logs;
pub mod usb;

use std::path::{Path, PathBuf};

use crate::check::{self, Depth, Finding, Status};
use crate::exit::ExitCode;
use crate::host::context::{HostContext, Timing, VmIdentity};
use crate::host::journal::JournalError;
use crate::host::runner::SystemRunner;
use crate::host::session::HostSession;
use crate::host::steps::{self, HostStep};
use crate::host::{RealSysfs, Sysroot};
use crate::log::Log;
use crate::model::{self, VmConfig, VmName};
use crate::plan::{
    self, BaseDirs, BootFirmware, HostFacts, Plan, PlanError, QemuUserFact, VmPaths,
};
use crate::profile::{self, Diagnostic, ProfileError, ProfileSource, SearchPath};
use crate::run::{self, control, state, Outcome, RunError, RunOptions, SignalWatch};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Usage(String),
    /// The host is not ready (preflight) or a VM's QEMU is still around: nothing was changed.
    #[error("{0}")]
    NotReady(String),
    #[error("host preparation failed: {0}")]
    HostPreparation(String),
    #[error("{0}")]
    Host(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Detach(#[from] detach::DetachError),
}

impl AppError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            AppError::Profile(_) | AppError::Usage(_) => ExitCode::Usage,
            AppError::NotReady(_) => ExitCode::CheckFailed,
            AppError::Run(error) => error.exit_code(),
            AppError::Control(control::ControlError::NotRunning(_)) => ExitCode::NotRunning,
            AppError::Plan(_)
            | AppError::HostPreparation(_)
            | AppError::Host(_)
            | AppError::Journal(_)
            | AppError::Control(_)
            | AppError::Io(_)
            | AppError::Detach(_) => ExitCode::Failure,
        }
    }
}

/// A profile read and validated, with the warnings validation produced.
pub struct Loaded {
    pub config: VmConfig,
    pub warnings: Vec<Diagnostic>,
}

/// Everything a VM needs, decided before anything happens: what `show` prints, what `check`
/// judges and what `run` carries out.
pub struct Recipe {
    pub config: VmConfig,
    pub warnings: Vec<Diagnostic>,
    pub firmware: BootFirmware,
    pub plan: Plan,
    pub host_steps: Vec<HostStep>,
    /// The host as the plan saw it: the preflight judges the same facts instead of reading
    /// the topology and the running VMs a second time on the start path.
    pub facts: HostFacts,
}

/// A VM addressed by name or by profile, as `status`, `stop`, `qmp` and `recover` take it.
pub struct Target {
    pub name: String,
    pub paths: VmPaths,
    /// The profile, when the word named one.
    pub profile: Option<PathBuf>,
}

/// `check`'s answer.
pub struct CheckReport {
    pub name: Option<String>,
    pub findings: Vec<Finding>,
    pub code: ExitCode,
}

/// What `recover` did.
pub enum Recovered {
    Nothing,
    Restored { changes: usize },
}

/// Where things are: resolved once from the command line and the environment.
pub struct App {
    pub base: BaseDirs,
    pub search: SearchPath,
    pub sysroot: Sysroot,
    pub descriptor_dirs: Vec<PathBuf>,
    pub timing: Timing,
    sysfs: RealSysfs,
    runner: SystemRunner,
}

impl App {
    pub fn new(
        base: BaseDirs,
        search: SearchPath,
        sysroot: Sysroot,
        descriptor_dirs: Vec<PathBuf>,
    ) -> Self {
        App {
            base,
            search,
            sysfs: RealSysfs {
                root: sysroot.clone(),
            },
            sysroot,
            descriptor_dirs,
            timing: Timing::default(),
            runner: SystemRunner,
        }
    }

    /// From `--state-dir`/`--runtime-dir` (or their variables), `VMRUN_PROFILE_PATH`,
    /// `VMRUN_SYSROOT` and QEMU's firmware descriptor directories.
    pub fn from_env(state_dir: Option<PathBuf>, runtime_dir: Option<PathBuf>) -> Self {
        Self::new(
            BaseDirs::resolve(state_dir, runtime_dir),
            SearchPath::from_env(),
            Sysroot::from_env(),
            crate::firmware::default_descriptor_dirs(),
        )
    }

    pub fn load(&self, profile: &str) -> Result<Loaded, ProfileError> {
        let path = self.search.resolve(profile)?;
        let source = ProfileSource::read(&path)?;
        let raw = model::parse(&source).map_err(ProfileError::Invalid)?;
        let (config, warnings) = model::validate(&source, &raw).map_err(ProfileError::Invalid)?;
        Ok(Loaded { config, warnings })
    }

    pub fn facts(&self, config: &VmConfig) -> HostFacts {
        // Only `vcpus = "auto"` and the hugepages' NUMA node look at the topology: reading it
        // is ten sysfs files per CPU, milliseconds on a large host, on every start.
        let wants_topology =
            config.pinning.as_ref().is_some_and(|p| p.auto) || config.machine.hugepages.is_some();
        let (topology, topology_problem) = if wants_topology {
            match crate::host::topology::read_topology(&self.sysroot) {
                Ok(topology) => (Some(topology), None),
                Err(error) => (None, Some(error.to_string())),
            }
        } else {
            (None, Some("not needed by this profile".to_string()))
        };
        let smbios_from_host = config.smbios.as_ref().is_some_and(|s| s.from_host);
        let requested_user = match config.audio.as_ref().map(|a| &a.backend) {
            Some(
                model::AudioBackend::PulseAudio { user, .. }
                | model::AudioBackend::PipeWire { user, .. },
            ) => Some(user.as_deref()),
            _ => None,
        };
        let qemu_program = crate::host::find_program(&config.qemu.binary);
        // Asked once per QEMU build: the cache answers every later command.
        let (qemu_caps, qemu_caps_problem) = match &qemu_program {
            Some(program) => match crate::qemu_caps::capabilities(
                program,
                &crate::qemu_caps::default_cache_dir(),
            ) {
                Ok(caps) => (Some(caps), None),
                Err(error) => (None, Some(error.to_string())),
            },
            None => (None, None),
        };
        HostFacts {
            online_cpus: crate::host::online_cpus(&self.sysroot),
            dmi: if smbios_from_host {
                crate::host::dmi(&self.sysroot)
            } else {
                Default::default()
            },
            vhost_net: crate::host::vhost_net(&self.sysroot),
            desktop_user: requested_user.and_then(crate::host::desktop_user),
            topology,
            topology_problem,
            running_realtime: self.running_realtime(),
            qemu_program,
            qemu_caps,
            qemu_caps_problem,
            qemu_user: match crate::host::identity::qemu_identity(config, &self.sysroot, |var| {
                std::env::var(var).ok()
            }) {
                Ok(Some(identity)) => QemuUserFact::User(identity),
                Ok(None) => QemuUserFact::Root,
                Err(problem) => QemuUserFact::Problem(problem),
            },
        }
    }

    /// Every VM running under this runtime directory that has real-time vCPUs.
    fn running_realtime(&self) -> Vec<(String, model::CpuSet)> {
        let Ok(entries) = std::fs::read_dir(&self.base.runtime) else {
            return Vec::new();
        };
        let mut found: Vec<(String, model::CpuSet)> = entries
            .filter_map(|entry| {
                let vm: VmName = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let run = state::running(&VmPaths::new(&self.base, &vm).ok()?)?;
                (!run.realtime_cpus.is_empty())
                    .then(|| (run.name, model::CpuSet::from_cpus(run.realtime_cpus)))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// The host's CPU topology, for `vmrun topology`.
    pub fn topology(&self) -> Result<plan::topology::HostTopology, AppError> {
        crate::host::topology::read_topology(&self.sysroot)
            .map_err(|e| AppError::Host(e.to_string()))
    }

    pub fn recipe(&self, loaded: Loaded) -> Result<Recipe, AppError> {
        let facts = self.facts(&loaded.config);
        let config = plan::resolve(loaded.config, &facts)?;
        let firmware =
            plan::resolve_firmware(&config, &self.descriptor_dirs).map_err(PlanError::from)?;
        let plan = Plan::new(&config, &firmware, &self.base, &facts)?;
        Ok(Recipe {
            host_steps: steps::plan(&config, &plan.paths),
            config,
            warnings: loaded.warnings,
            firmware,
            plan,
            facts,
        })
    }

    pub fn host(&self, vm: VmIdentity) -> HostContext<'_> {
        HostContext {
            root: self.sysroot.clone(),
            sysfs: &self.sysfs,
            runner: &self.runner,
            timing: self.timing,
            vm,
        }
    }

    fn identity(config: &VmConfig) -> VmIdentity {
        VmIdentity {
            name: config.name.to_string(),
            profile: config.profile_path.clone(),
        }
    }

    /// Every finding about this host for a valid profile: host, steps, firmware, plan.
    fn findings(&self, loaded: &Loaded, depth: Depth) -> Vec<Finding> {
        let facts = self.facts(&loaded.config);
        let config = match plan::resolve(loaded.config.clone(), &facts) {
            Ok(config) => config,
            Err(error) => return vec![Finding::fail("pinning", error.to_string())],
        };
        let config = &config;
        let host = self.host(Self::identity(config));
        let paths = match VmPaths::new(&self.base, &config.name) {
            Ok(paths) => paths,
            Err(error) => return vec![Finding::fail("paths", error.to_string())],
        };
        let host_steps = steps::plan(config, &paths);
        let mut findings = check::host_findings(config, &host_steps, &host, &facts, depth);
        match plan::resolve_firmware(config, &self.descriptor_dirs) {
            Err(error) => findings.push(Finding::fail("firmware", error.to_string())),
            Ok(firmware) => match Plan::new(config, &firmware, &self.base, &facts) {
                Ok(plan) => findings.extend(check::plan_findings(&firmware, &plan, depth)),
                Err(error) => findings.push(Finding::fail("paths", error.to_string())),
            },
        }
        findings
    }

    /// `vmrun check`: validation, then every read-only finding, QEMU's accelerator probe
    /// included.
    pub fn check(&self, profile: &str) -> Result<CheckReport, AppError> {
        let loaded = match self.load(profile) {
            Err(ProfileError::Invalid(diagnostics)) => {
                let findings = diagnostics
                    .iter()
                    .map(|diagnostic| match diagnostic.severity {
                        profile::Severity::Error => {
                            Finding::fail("profile", diagnostic.to_string())
                        }
                        profile::Severity::Warning => {
                            Finding::warn("profile", diagnostic.to_string())
                        }
                    })
                    .collect();
                return Ok(CheckReport {
                    name: None,
                    findings,
                    code: ExitCode::Usage,
                });
            }
            Err(other) => return Err(other.into()),
            Ok(loaded) => loaded,
        };
        let mut findings = vec![Finding::pass(
            "profile",
            format!("{} is valid", loaded.config.profile_path.display()),
        )];
        findings.extend(loaded.warnings.iter().map(check::diagnostic_finding));
        findings.extend(self.findings(&loaded, Depth::Check));
        let failed = findings.iter().any(|f| f.status == Status::Fail);
        Ok(CheckReport {
            name: Some(loaded.config.name.to_string()),
            findings,
            code: if failed {
                ExitCode::CheckFailed
            } else {
                ExitCode::Ok
            },
        })
    }

    /// Validation and the host checks `run` cannot do without; every failure is named.
    pub fn preflight(&self, recipe: &Recipe) -> Result<(), AppError> {
        let host = self.host(Self::identity(&recipe.config));
        let mut findings: Vec<Finding> = recipe
            .warnings
            .iter()
            .filter(|w| w.kind == profile::Kind::MissingFile)
            .map(check::diagnostic_finding)
            .collect();
        findings.extend(check::host_findings(
            &recipe.config,
            &recipe.host_steps,
            &host,
            &recipe.facts,
            Depth::Run,
        ));
        findings.extend(check::plan_findings(
            &recipe.firmware,
            &recipe.plan,
            Depth::Run,
        ));
        let failures: Vec<String> = findings
            .iter()
            .filter(|f| f.status == Status::Fail)
            .map(|f| format!("  {}: {}", f.check, f.message))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(AppError::NotReady(format!(
                "not starting {}; the host is not ready:\n{}",
                recipe.config.name,
                failures.join("\n")
            )))
        }
    }

    /// The host session of a recipe: its steps over this host, journaled in its state dir.
    pub fn session(&self, recipe: &Recipe) -> HostSession<'_> {
        HostSession::new(
            self.host(Self::identity(&recipe.config)),
            recipe.host_steps.clone(),
            &recipe.plan.paths.journal,
        )
    }

    /// Runs the VM until it ends, with the host prepared before and given back after, on
    /// every path. Teardown has happened when this returns.
    pub fn run(
        &self,
        recipe: &Recipe,
        options: RunOptions,
        log: &Log,
    ) -> Result<Outcome, AppError> {
        let paths = &recipe.plan.paths;
        run::create_private_dir(&paths.runtime_dir)?;
        run::create_private_dir(&paths.state_dir)?;
        log.attach_file(&paths.log);
        let lock =
            state::VmLock::acquire(paths, recipe.config.name.as_str()).map_err(RunError::from)?;
        log.info(&format!(
            "starting {} ({}, accelerator {})",
            recipe.config.name,
            recipe.plan.profile.display(),
            recipe.plan.accel
        ));
        let result = self.run_locked(recipe, options, log);
        let (code, outcome) = match &result {
            Ok(outcome) => (outcome.exit_code(), outcome.describe()),
            Err(error) => (error.exit_code(), error.to_string()),
        };
        let _ = state::write_json(
            &paths.last_run,
            &state::LastRun {
                exit_code: code.code(),
                outcome: outcome.clone(),
                finished_unix: state::unix_now(),
            },
        );
        log.info(&format!("finished: {outcome} (exit code {})", code.code()));
        lock.release();
        result
    }

    fn run_locked(
        &self,
        recipe: &Recipe,
        options: RunOptions,
        log: &Log,
    ) -> Result<Outcome, AppError> {
        let paths = &recipe.plan.paths;
        // A vmrun that died leaves its state file; its QEMU must be gone before the host is
        // touched.
        if let Some(pid) = state::orphaned_qemu(paths) {
            return Err(AppError::Host(format!(
                "QEMU pid {pid} of this VM still runs without its vmrun; stop it (kill {pid}) first"
            )));
        }
        // Left over from a vmrun that died: the lock is ours, so nothing else uses them.
        state::remove_runtime_files(paths);
        if let (BootFirmware::Ovmf(resolved), Some(vars)) = (&recipe.firmware, &recipe.plan.vars) {
            run::ensure_vars_copy(resolved, vars, log)?;
        }
        // Signals are caught from here on: a Ctrl-C during preparation stops the VM once it
        // runs instead of killing vmrun half-way through a host change.
        let mut signals = SignalWatch::new()?;
        let session = self.session(recipe);
        session.prepare(log).map_err(AppError::HostPreparation)?;
        log.phase("host steps");
        let host = self.host(Self::identity(&recipe.config));
        let started_hooks = recipe.host_steps.iter().find_map(|step| match step {
            HostStep::StartedHooks(hooks) => Some(hooks),
            _ => None,
        });
        let running_hooks = std::cell::RefCell::new(None);
        let inhibitor = std::cell::RefCell::new(None);
        let mut options = options;
        let told = options.on_ready.take();
        options.on_ready = Some(Box::new(|state: &state::RunState| {
            // The waiting parent of --detach first: nothing below adds to the start.
            if let Some(told) = told {
                told(state);
            }
            *inhibitor.borrow_mut() = crate::host::inhibit::SleepInhibitor::hold(
                recipe.config.name.as_str(),
                &self.sysroot,
                log,
            );
            if let Some(hooks) = started_hooks {
                *running_hooks.borrow_mut() =
                    Some(hooks.start(&host, state.qemu_pid, &paths.hooks_log, log));
            }
        }));
        let result = run::run_qemu(&recipe.config, &recipe.plan, &mut signals, options, log);
        drop(inhibitor);
        // Before the host is given back: a Looking Glass client must let go of the shared
        // memory file before it is removed.
        if let Some(running) = running_hooks.into_inner() {
            running.end(log);
        }
        session.restore(log);
        state::remove_runtime_files(paths);
        log.phase("host restored");
        Ok(result?)
    }

    /// A VM by profile (its declared name) or by name: the same paths either way.
    pub fn target(&self, name_or_profile: &str) -> Result<Target, AppError> {
        let profile = self
            .search
            .resolve(name_or_profile)
            .ok()
            .filter(|path| path.is_file());
        let name = profile
            .as_deref()
            .and_then(vm_name_of)
            .unwrap_or_else(|| name_or_profile.to_string());
        let vm: VmName = name.parse().map_err(|e: String| {
            AppError::Usage(format!(
                "`{name_or_profile}` is neither a profile nor a VM name: {e}"
            ))
        })?;
        let paths = VmPaths::new(&self.base, &vm).map_err(PlanError::from)?;
        Ok(Target {
            name,
            paths,
            profile: profile.map(|path| std::path::absolute(&path).unwrap_or(path)),
        })
    }

    /// Undoes what a run left in the VM's journal, by VM name or profile; the journal holds
    /// everything needed, so the profile is not read.
    pub fn recover(&self, name_or_profile: &str, log: &Log) -> Result<Recovered, AppError> {
        let target = self.target(name_or_profile)?;
        let paths = &target.paths;
        if target.profile.is_none() && !paths.state_dir.is_dir() {
            return Err(AppError::Usage(format!(
                "`{name_or_profile}` is neither a profile on the search path nor a VM that ran here \
                 (no {})",
                paths.state_dir.display()
            )));
        }
        std::fs::create_dir_all(&paths.runtime_dir)?;
        std::fs::create_dir_all(&paths.state_dir)?;
        let lock = state::VmLock::acquire(paths, &target.name).map_err(RunError::from)?;
        if let Some(pid) = state::orphaned_qemu(paths) {
            lock.release();
            return Err(AppError::NotReady(format!(
                "QEMU pid {pid} of {} still runs; stop it first (kill {pid})",
                target.name
            )));
        }
        log.attach_file(&paths.log);
        let session = HostSession::new(
            self.host(VmIdentity {
                name: target.name.clone(),
                profile: target.profile.clone().unwrap_or_default(),
            }),
            Vec::new(),
            &paths.journal,
        );
        let result = match session.leftovers() {
            Err(error) => Err(error.into()),
            Ok(leftovers) if leftovers.is_empty() => {
                log.info(&format!("{}: nothing to recover", target.name));
                Ok(Recovered::Nothing)
            }
            Ok(leftovers) => {
                log.info(&format!(
                    "{}: undoing {} host change(s) a previous run left",
                    target.name,
                    leftovers.len()
                ));
                session
                    .undo_all(log)
                    .map(|()| Recovered::Restored {
                        changes: leftovers.len(),
                    })
                    .map_err(|left| {
                        AppError::Host(format!("still not restored: {}", left.join("; ")))
                    })
            }
        };
        state::remove_runtime_files(paths);
        lock.release();
        result
    }

    pub fn status(&self, name_or_profile: &str) -> Result<control::Status, AppError> {
        let target = self.target(name_or_profile)?;
        Ok(control::status(&target.paths, &target.name))
    }
}

/// One profile on the search path, for `list`.
#[derive(serde::Serialize)]
pub struct ListEntry {
    pub name: String,
    pub path: PathBuf,
    pub shadows: Vec<PathBuf>,
    pub running: bool,
    pub pid: Option<u32>,
}

impl App {
    /// Every profile on the search path, with whether its VM runs.
    pub fn list(&self) -> Vec<ListEntry> {
        self.search
            .entries()
            .into_iter()
            .map(|entry| {
                let name = vm_name_of(&entry.path).unwrap_or_else(|| entry.name.clone());
                let running = name
                    .parse::<VmName>()
                    .ok()
                    .and_then(|vm| VmPaths::new(&self.base, &vm).ok())
                    .and_then(|paths| state::running(&paths));
                ListEntry {
                    name,
                    path: entry.path,
                    shadows: entry.shadows,
                    running: running.is_some(),
                    pid: running.map(|r| r.qemu_pid),
                }
            })
            .collect()
    }

    /// This host's IOMMU groups; empty when the IOMMU is off.
    pub fn iommu_groups(
        &self,
    ) -> std::collections::BTreeMap<u32, Vec<crate::host::pci::PciDeviceInfo>> {
        crate::host::pci::iommu_groups(&self.sysroot)
    }

    /// A device's vendor and device ids.
    pub fn device_ids(
        &self,
        address: model::PciAddress,
    ) -> Result<(u16, u16), crate::host::HostError> {
        crate::host::pci_ids(&self.sysfs, address)
    }

    /// A device's option ROM, read through sysfs.
    pub fn dump_rom(&self, address: model::PciAddress) -> Result<Vec<u8>, crate::host::HostError> {
        crate::host::read_rom(&self.sysfs, address)
    }
}

/// What `vmrun import libvirt` made of a domain.
pub struct ImportedProfile {
    pub profile: String,
    pub notes: Vec<crate::libvirt::Note>,
}

impl App {
    /// A libvirt domain as profile text, checked to validate as the profile `output` (or
    /// `NAME.toml` here; relative paths in it resolve next to that file), with what could not
    /// be carried over.
    pub fn import_libvirt(
        &self,
        xml: &str,
        output: Option<PathBuf>,
    ) -> Result<ImportedProfile, AppError> {
        let imported = crate::libvirt::import(xml).map_err(|e| AppError::Usage(e.to_string()))?;
        let source = ProfileSource {
            path: output.unwrap_or_else(|| PathBuf::from(format!("{}.toml", imported.name))),
            text: imported.profile.clone(),
        };
        if let Err(diagnostics) =
            model::parse(&source).and_then(|raw| model::validate(&source, &raw).map(|_| ()))
        {
            let errors: Vec<String> = diagnostics
                .iter()
                .filter(|d| d.severity == profile::Severity::Error)
                .map(ToString::to_string)
                .collect();
            if !errors.is_empty() {
                return Err(AppError::Host(format!(
                    "the translated profile does not validate (please report this with the XML):\n{}",
                    errors.join("\n")
                )));
            }
        }
        Ok(ImportedProfile {
            profile: imported.profile,
            notes: imported.notes,
        })
    }

    /// A profile as a libvirt domain for the same VM, and the profile's warnings.
    pub fn export_libvirt(&self, profile: &str) -> Result<(String, Vec<Diagnostic>), AppError> {
        let loaded = self.load(profile)?;
        let written = loaded.config.clone();
        let recipe = self.recipe(loaded)?;
        let xml = crate::libvirt::export(&crate::libvirt::ExportInput {
            config: &recipe.config,
            profile: &written,
            firmware: &recipe.firmware,
            paths: &recipe.plan.paths,
            emulator: absolute_program(&recipe.config.qemu.binary),
        });
        Ok((xml, recipe.warnings))
    }
}

/// libvirt wants the emulator as an absolute path; QEMU's own lookup is PATH.
fn absolute_program(binary: &str) -> PathBuf {
    crate::host::find_program(binary).unwrap_or_else(|| Path::new("/usr/bin").join(binary))
}

/// The VM name a profile declares (its `name`, else its file stem), without full validation.
pub fn vm_name_of(path: &Path) -> Option<String> {
    let source = ProfileSource::read(path).ok()?;
    let raw = model::parse(&source).ok()?;
    Some(
        raw.name
            .map(|n| n.into_inner())
            .unwrap_or_else(|| source.stem()),
    )
}

impl App {
    /// The words a profile argument takes: each profile's name on the search path (for shell
    /// completion).
    pub fn profile_names(&self) -> Vec<String> {
        self.search
            .entries()
            .into_iter()
            .map(|entry| entry.name)
            .collect()
    }

    /// The VMs running now, found by their runtime directories (for shell completion and
    /// `vmrun usb`'s udev use): started from any path, named or not on the search path.
    pub fn running_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.base.runtime) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| {
                name.parse::<VmName>()
                    .ok()
                    .and_then(|vm| VmPaths::new(&self.base, &vm).ok())
                    .and_then(|paths| state::running(&paths))
                    .is_some()
            })
            .collect();
        names.sort();
        names
    }
}
