//! `show`, `check` and `list`: they read profiles and the host and change nothing.

use super::*;

#[derive(Serialize)]
pub(super) struct ShowOutput<'a> {
    #[serde(flatten)]
    plan: &'a Plan,
    /// What the host layer does before QEMU starts (and undoes after), in order.
    host_plan: Vec<String>,
    warnings: Vec<String>,
}

pub(super) fn show(
    search: &SearchPath,
    base: &BaseDirs,
    profile: &str,
    json: bool,
    quiet: bool,
) -> Result<i32, CliError> {
    let loaded = load(search, profile)?;
    let firmware = plan::resolve_firmware(&loaded.config, &firmware::default_descriptor_dirs())
        .map_err(PlanError::from)?;
    let plan = Plan::new(&loaded.config, &firmware, base)?;
    if json {
        stdout_json(&ShowOutput {
            plan: &plan,
            host_plan: crate::host::plan::describe(&loaded.config),
            warnings: loaded.warnings.iter().map(ToString::to_string).collect(),
        })?;
    } else {
        if !quiet {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
        }
        let mut out = std::io::stdout().lock();
        let host_plan = crate::host::plan::describe(&loaded.config);
        if !host_plan.is_empty() {
            writeln!(out, "# host preparation, in order:")?;
            for step in host_plan {
                writeln!(out, "#   {step}")?;
            }
        }
        writeln!(out, "{}", shell_lines(&plan.argv))?;
    }
    Ok(exit::OK)
}

/// One argument per line, quoted for POSIX shells, joined with line continuations.
pub fn shell_lines(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            shlex::try_quote(arg)
                .map(|quoted| quoted.into_owned())
                // Only a NUL byte cannot be quoted, and no argv can carry one anyway.
                .unwrap_or_else(|_| format!("'{}'", arg.replace('\0', "")))
        })
        .collect::<Vec<_>>()
        .join(" \\\n  ")
}

#[derive(Serialize)]
pub(super) struct CheckOutput {
    profile: String,
    name: Option<String>,
    ok: bool,
    findings: Vec<Finding>,
}

pub(super) fn check(
    search: &SearchPath,
    base: &BaseDirs,
    profile: &str,
    json: bool,
) -> Result<i32, CliError> {
    let mut findings = Vec::new();
    let mut name = None;
    let mut code = exit::OK;
    match load(search, profile) {
        Err(ProfileError::Invalid(diagnostics)) => {
            for diagnostic in diagnostics {
                let status = match diagnostic.severity {
                    profile::Severity::Error => Status::Fail,
                    profile::Severity::Warning => Status::Warn,
                };
                findings.push(Finding::new(status, "profile", diagnostic.to_string()));
            }
            code = exit::USAGE;
        }
        Err(other) => return Err(other.into()),
        Ok(loaded) => {
            name = Some(loaded.config.name.to_string());
            findings.push(Finding::new(
                Status::Pass,
                "profile",
                format!("{} is valid", loaded.config.profile_path.display()),
            ));
            findings.extend(loaded.warnings.iter().map(check::diagnostic_finding));
            let host = HostView {
                sysroot: Sysroot::from_env(),
            };
            findings.extend(check::host_findings(&loaded.config, &host, true));
            match plan::resolve_firmware(&loaded.config, &firmware::default_descriptor_dirs()) {
                Err(error) => {
                    findings.push(Finding::new(Status::Fail, "firmware", error.to_string()))
                }
                Ok(firmware) => match Plan::new(&loaded.config, &firmware, base) {
                    Ok(plan) => findings.extend(check::resolved_findings(
                        &loaded.config,
                        &firmware,
                        &plan.paths,
                        &host_sysfs(),
                    )),
                    Err(error) => {
                        findings.push(Finding::new(Status::Fail, "paths", error.to_string()))
                    }
                },
            }
        }
    }
    let ok = findings.iter().all(|f| f.status != Status::Fail);
    if code == exit::OK && !ok {
        code = exit::CHECK_FAILED;
    }
    if json {
        stdout_json(&CheckOutput {
            profile: profile.to_string(),
            name,
            ok,
            findings,
        })?;
    } else {
        let mut out = std::io::stdout().lock();
        for finding in &findings {
            writeln!(
                out,
                "{}  {:<13} {}",
                finding.status.label(),
                finding.check,
                finding.message
            )?;
        }
    }
    Ok(code)
}

#[derive(Serialize)]
pub(super) struct ListEntry {
    name: String,
    path: PathBuf,
    shadows: Vec<PathBuf>,
    running: bool,
    pid: Option<u32>,
}

pub(super) fn list(search: &SearchPath, base: &BaseDirs, json: bool) -> Result<i32, CliError> {
    let entries: Vec<ListEntry> = search
        .entries()
        .into_iter()
        .map(|entry| {
            let name = vm_name_of(&entry.path).unwrap_or_else(|| entry.name.clone());
            let running = name
                .parse::<VmName>()
                .ok()
                .and_then(|vm| VmPaths::new(base, &vm, ImageFormat::Raw).ok())
                .and_then(|paths| state::running(&paths));
            ListEntry {
                name,
                path: entry.path,
                shadows: entry.shadows,
                running: running.is_some(),
                pid: running.map(|r| r.qemu_pid),
            }
        })
        .collect();
    if json {
        stdout_json(&entries)?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    if entries.is_empty() {
        let dirs: Vec<String> = search
            .dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        writeln!(out, "no profiles found in: {}", dirs.join(", "))?;
    }
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for entry in &entries {
        let state = match entry.pid {
            Some(pid) => format!("running (pid {pid})"),
            None => "stopped".to_string(),
        };
        write!(
            out,
            "{:<width$}  {:<20}  {}",
            entry.name,
            state,
            entry.path.display()
        )?;
        for hidden in &entry.shadows {
            write!(out, "  (hides {})", hidden.display())?;
        }
        writeln!(out)?;
    }
    Ok(exit::OK)
}
