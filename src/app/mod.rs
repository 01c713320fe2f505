//! The application layer: one recipe for every command. The CLI parses arguments and renders
//! results; everything between (profile → model → firmware → plan + host steps → preflight →
//! host session → run and supervise → teardown, and `recover`) happens here, once.

mod catalog;
pub mod console;
pub mod detach;
pub mod logs;
pub mod new;
mod resolve;
pub mod usb;
pub mod view;

pub use catalog::{vm_name_of, ImportedProfile, ListEntry};
use resolve::resolve_profile;

use std::path::PathBuf;

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
    /// The guest ended (or `recover` ran) but a passed device did not answer: it stays off
    /// its host driver and its journal entry is kept.
    #[error("{0}")]
    DeviceStuck(String),
}

impl AppError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            AppError::Profile(_) | AppError::Usage(_) => ExitCode::Usage,
            AppError::NotReady(_) => ExitCode::CheckFailed,
            AppError::Run(error) => error.exit_code(),
            AppError::Control(control::ControlError::NotRunning(_)) => ExitCode::NotRunning,
            AppError::DeviceStuck(_) => ExitCode::DeviceStuck,
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
    /// The text it was read from: what the host makes of the profile is located in it too.
    pub source: ProfileSource,
}

/// Everything a VM needs, decided before anything happens: what `show` prints, what `check`
/// judges and what `run` carries out.
pub struct Recipe<'a> {
    /// The VM resolved against this host (it reads as the resolved model; the model as the
    /// profile wrote it is `config.written()`).
    pub config: plan::ResolvedVm,
    pub warnings: Vec<Diagnostic>,
    pub firmware: BootFirmware,
    pub plan: Plan,
    pub host_steps: Vec<HostStep>,
    /// The host as the plan saw it: the preflight judges the same facts instead of reading
    /// the topology and the running VMs a second time on the start path.
    pub facts: HostFacts,
    /// The host as this command works on it: the preflight, the session and the steps'
    /// processes beside QEMU all use this one.
    pub host: HostContext<'a>,
}

/// The recipe up to the host steps: what `check` judges even when the firmware is missing.
struct Draft<'a> {
    config: plan::ResolvedVm,
    warnings: Vec<Diagnostic>,
    host_steps: Vec<HostStep>,
    facts: HostFacts,
    host: HostContext<'a>,
    /// How many of `warnings` the profile itself gave (the rest came from resolution).
    loaded_warnings: usize,
}

/// A stage of the recipe that failed, named as `check` reports it.
struct Failed {
    check: &'static str,
    error: AppError,
}

impl Failed {
    fn at(check: &'static str) -> impl FnOnce(PlanError) -> Failed {
        move |error| Failed {
            check,
            error: error.into(),
        }
    }

    /// One failed finding, or one per problem when the host showed the profile wrong.
    fn findings(self) -> Vec<Finding> {
        match self.error {
            AppError::Profile(ProfileError::Invalid(diagnostics)) => diagnostics
                .iter()
                .map(|d| Finding::fail("profile", d.to_string()))
                .collect(),
            error => vec![Finding::fail(self.check, error.to_string())],
        }
    }
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
        let (config, warnings) = model::load(&source).map_err(ProfileError::Invalid)?;
        Ok(Loaded {
            config,
            warnings,
            source,
        })
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
            sriov: config
                .pci
                .iter()
                .filter_map(|device| device.sriov.as_ref())
                .map(|vf| {
                    // The plan keeps the reason as words: it is shown at the profile's key.
                    let capability = crate::host::sriov::capability(&self.sysroot, vf.pf)
                        .map_err(|error| error.to_string());
                    (vf.pf, capability)
                })
                .collect(),
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
        self.running_vms()
            .into_iter()
            .filter(|run| !run.realtime_cpus.is_empty())
            .map(|run| (run.name, model::CpuSet::from_cpus(run.realtime_cpus)))
            .collect()
    }

    /// The run state of the VM called `name`, if it runs.
    fn running_vm(&self, name: &str) -> Option<state::RunState> {
        let vm: VmName = name.parse().ok()?;
        state::running(&VmPaths::new(&self.base, &vm).ok()?)
    }

    /// Every VM running now, found by its runtime directory (started from any path, named
    /// or not on the search path), by name.
    fn running_vms(&self) -> Vec<state::RunState> {
        let Ok(entries) = std::fs::read_dir(&self.base.runtime) else {
            return Vec::new();
        };
        let mut found: Vec<state::RunState> = entries
            .filter_map(|entry| self.running_vm(entry.ok()?.file_name().to_str()?))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }

    /// The host's CPU topology, for `vmrun topology`.
    pub fn topology(&self) -> Result<plan::topology::HostTopology, AppError> {
        crate::host::topology::read_topology(&self.sysroot)
            .map_err(|e| AppError::Host(e.to_string()))
    }

    /// The one recipe: host facts → resolution → host steps → firmware → plan. `show`, `run`,
    /// `check` and `export` all take it from here.
    pub fn recipe(&self, loaded: Loaded) -> Result<Recipe<'_>, AppError> {
        let draft = self.draft(loaded).map_err(|failed| failed.error)?;
        self.finish(draft).map_err(|failed| failed.error)
    }

    fn draft(&self, loaded: Loaded) -> Result<Draft<'_>, Failed> {
        let facts = self.facts(&loaded.config);
        let loaded_warnings = loaded.warnings.len();
        let (config, resolved_warnings) = resolve_profile(&loaded.source, loaded.config, &facts)
            .map_err(|error| Failed {
                check: "pinning",
                error,
            })?;
        let mut warnings = loaded.warnings;
        warnings.extend(resolved_warnings);
        let paths = VmPaths::new(&self.base, &config.name)
            .map_err(|error| Failed::at("paths")(error.into()))?;
        Ok(Draft {
            host_steps: steps::plan(&config, &paths),
            host: self.host(Self::identity(&config)),
            config,
            warnings,
            loaded_warnings,
            facts,
        })
    }

    fn finish<'a>(&self, draft: Draft<'a>) -> Result<Recipe<'a>, Failed> {
        let firmware = plan::resolve_firmware(&draft.config, &self.descriptor_dirs)
            .map_err(|error| Failed::at("firmware")(error.into()))?;
        let plan = Plan::new(&draft.config, &firmware, &self.base, &draft.facts)
            .map_err(Failed::at("paths"))?;
        Ok(Recipe {
            config: draft.config,
            warnings: draft.warnings,
            firmware,
            plan,
            host_steps: draft.host_steps,
            facts: draft.facts,
            host: draft.host,
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

    /// Every finding about this host for a valid profile: the recipe, then what its host half
    /// and its plan say. A stage that fails is one failed finding (a profile problem found
    /// only against the host, one per problem); what came before it is still judged (a
    /// missing firmware still shows the host's state).
    fn findings(&self, loaded: Loaded, depth: Depth) -> Vec<Finding> {
        let draft = match self.draft(loaded) {
            Ok(draft) => draft,
            Err(failed) => return failed.findings(),
        };
        // What resolution against the host warned of; the profile's own warnings are the
        // caller's to show.
        let mut findings: Vec<Finding> = draft.warnings[draft.loaded_warnings..]
            .iter()
            .map(check::diagnostic_finding)
            .collect();
        findings.extend(Self::host_findings(&draft, depth));
        match self.finish(draft) {
            Ok(recipe) => findings.extend(Self::plan_findings(&recipe, depth)),
            Err(failed) => findings.extend(failed.findings()),
        }
        findings
    }

    fn host_findings(draft: &Draft, depth: Depth) -> Vec<Finding> {
        check::host_findings(
            &draft.config,
            &draft.host_steps,
            &draft.host,
            &draft.facts,
            depth,
        )
    }

    fn plan_findings(recipe: &Recipe, depth: Depth) -> Vec<Finding> {
        check::plan_findings(&recipe.firmware, &recipe.plan, depth)
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
        let name = loaded.config.name.to_string();
        findings.extend(self.findings(loaded, Depth::Check));
        let failed = findings.iter().any(|f| f.status == Status::Fail);
        // What the host makes of the profile can still be the profile's fault (`vcpus =
        // "auto"` asking for more cores than there are): exit 2, as for any profile error.
        let profile_failed = findings
            .iter()
            .any(|f| f.status == Status::Fail && f.check == "profile");
        if profile_failed {
            findings.retain(|f| !(f.status == Status::Pass && f.check == "profile"));
        }
        Ok(CheckReport {
            name: Some(name),
            findings,
            code: if profile_failed {
                ExitCode::Usage
            } else if failed {
                ExitCode::CheckFailed
            } else {
                ExitCode::Ok
            },
        })
    }

    /// Validation and the host checks `run` cannot do without; every failure is named.
    pub fn preflight(&self, recipe: &Recipe) -> Result<(), AppError> {
        let mut findings: Vec<Finding> = recipe
            .warnings
            .iter()
            .filter(|w| w.kind == profile::Kind::MissingFile)
            .map(check::diagnostic_finding)
            .collect();
        findings.extend(check::host_findings(
            &recipe.config,
            &recipe.host_steps,
            &recipe.host,
            &recipe.facts,
            Depth::Run,
        ));
        findings.extend(Self::plan_findings(recipe, Depth::Run));
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
    pub fn session<'a>(&self, recipe: &Recipe<'a>) -> HostSession<'a> {
        HostSession::new(
            recipe.host.clone(),
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
        run::spawn::prepare_runtime_dir(paths, recipe.plan.qemu_user.as_ref())?;
        run::create_private_dir(&paths.state_dir)?;
        log.attach_file(&paths.log);
        let lock =
            state::VmLock::acquire(paths, recipe.config.name.as_str()).map_err(RunError::from)?;
        state::clear_last_run(paths);
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
        if let Err(error) = state::record_last_run(
            paths,
            &state::LastRun {
                exit_code: code.code(),
                outcome: outcome.clone(),
                finished_unix: state::unix_now(),
            },
        ) {
            log.warn(&format!("could not record how the run ended: {error}"));
        }
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
        session.prepare(log).map_err(|error| {
            // A device a previous run left dead is the same situation as at that run's end:
            // exit 8 and what to do, not a generic preparation failure.
            let stuck = session.stuck_devices();
            if stuck.is_empty() {
                AppError::HostPreparation(error)
            } else {
                AppError::DeviceStuck(format!(
                    "not starting: {}",
                    crate::host::session::stuck_message(&stuck, &recipe.config.name.to_string())
                ))
            }
        })?;
        log.phase("host steps");
        let host = session.host();
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
                    Some(hooks.start(host, state.qemu_pid, &paths.hooks_log, log));
            }
        }));
        options.companions = recipe
            .host_steps
            .iter()
            .filter_map(HostStep::companion)
            .collect();
        let result = run::run_qemu(&recipe.config, &recipe.plan, &mut signals, options, log);
        drop(inhibitor);
        // Before the host is given back: a Looking Glass client must let go of the shared
        // memory file before it is removed.
        if let Some(running) = running_hooks.into_inner() {
            running.end(log);
        }
        let stuck = session.restore(log);
        state::remove_runtime_files(paths);
        log.phase("host restored");
        if !stuck.is_empty() {
            let ended = match &result {
                Ok(outcome) => outcome.describe(),
                Err(error) => error.to_string(),
            };
            return Err(AppError::DeviceStuck(format!(
                "{ended}, but {}",
                crate::host::session::stuck_message(&stuck, &recipe.config.name.to_string())
            )));
        }
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

    /// `target`, for commands about a VM that has to exist (`status`, `stop`): a word that is
    /// neither a profile on the search path nor a VM that ran here is unknown, a usage error,
    /// rather than a VM that is "not running".
    pub fn known_target(&self, name_or_profile: &str) -> Result<Target, AppError> {
        let target = self.target(name_or_profile)?;
        if target.profile.is_none()
            && !target.paths.state_dir.is_dir()
            && !target.paths.runtime_dir.is_dir()
        {
            return Err(AppError::Usage(format!(
                "no VM named `{name_or_profile}` is known here: it is not a profile on the search \
                 path and no VM of that name ran here (no {}); `vmrun list` shows the profiles",
                target.paths.state_dir.display()
            )));
        }
        Ok(target)
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
        run::create_private_dir(&paths.runtime_dir)?;
        run::create_private_dir(&paths.state_dir)?;
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
                        let stuck = session.stuck_devices();
                        if stuck.is_empty() {
                            AppError::Host(format!("still not restored: {}", left.join("; ")))
                        } else {
                            let others: Vec<&String> =
                                left.iter().filter(|p| !stuck.contains(p)).collect();
                            let also = if others.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    " Also not restored: {}",
                                    others
                                        .iter()
                                        .map(|p| p.as_str())
                                        .collect::<Vec<_>>()
                                        .join("; ")
                                )
                            };
                            AppError::DeviceStuck(format!(
                                "still not restored: {}{also}",
                                crate::host::session::stuck_message(&stuck, &target.name)
                            ))
                        }
                    })
            }
        };
        state::remove_runtime_files(paths);
        lock.release();
        result
    }

    pub fn status(&self, name_or_profile: &str) -> Result<control::Status, AppError> {
        let target = self.known_target(name_or_profile)?;
        let mut report = control::status(&target.paths, &target.name);
        // While it runs: its passed functions; after it: those its journal still keeps off
        // their host driver (exit code 8).
        let addresses = if report.running {
            state::running(&target.paths)
                .map(|run| run.pci)
                .unwrap_or_default()
        } else {
            crate::host::journal::Journal::at(&target.paths.journal)
                .entries()
                .map(|entries| steps::vfio::journaled_functions(&entries))
                .unwrap_or_default()
        };
        let host = self.host(VmIdentity {
            name: target.name.clone(),
            profile: target.profile.clone().unwrap_or_default(),
        });
        report.pci = addresses
            .iter()
            .map(|address| crate::host::pci_health::function_status(&host, address))
            .collect();
        Ok(report)
    }
}
