//! `show`, `check` and `list`: they read profiles and the host and change nothing.

use super::*;
use crate::check::{Finding, Status};
use crate::host::steps::StepView;
use crate::plan::argv::OpenAs;

#[derive(Serialize)]
pub(super) struct ShowOutput<'a> {
    #[serde(flatten)]
    plan: &'a crate::plan::Plan,
    /// What the host layer does before QEMU starts (and undoes after), in order.
    host_steps: Vec<StepView<'a>>,
    warnings: Vec<String>,
    /// The QEMU found and its version (None: not found, or it did not answer).
    qemu: Option<QemuView<'a>>,
}

#[derive(Serialize)]
pub(super) struct QemuView<'a> {
    binary: &'a std::path::Path,
    version: String,
    package: &'a str,
    /// `cache` or `probe`: whether vmrun's capability cache answered.
    capabilities_from: crate::qemu_caps::Source,
}

pub(super) fn show(
    app: &App,
    profile: &str,
    json: bool,
    quiet: bool,
) -> Result<ExitCode, CliError> {
    let recipe = app.recipe(app.load(profile)?)?;
    if json {
        stdout_json(&ShowOutput {
            plan: &recipe.plan,
            host_steps: recipe.host_steps.iter().map(StepView::from).collect(),
            warnings: recipe.warnings.iter().map(ToString::to_string).collect(),
            qemu: recipe
                .facts
                .qemu_caps
                .as_ref()
                .map(|(caps, source)| QemuView {
                    binary: &caps.key.path,
                    version: caps.version.to_string(),
                    package: &caps.package,
                    capabilities_from: *source,
                }),
        })?;
        return Ok(ExitCode::Ok);
    }
    if !quiet {
        for warning in &recipe.warnings {
            eprintln!("{warning}");
        }
    }
    let mut out = std::io::stdout().lock();
    if !recipe.host_steps.is_empty() {
        writeln!(out, "# host preparation, in order:")?;
        for step in &recipe.host_steps {
            writeln!(out, "#   {}", step.describe())?;
        }
        writeln!(
            out,
            "# after QEMU exits, every change above is undone in reverse order"
        )?;
    }
    let plan = &recipe.plan;
    if !plan.smbios.is_empty() {
        writeln!(out, "# SMBIOS the guest sees:")?;
        for value in &plan.smbios {
            writeln!(
                out,
                "#   type {} {} = {:?} (from the {})",
                value.table, value.key, value.value, value.source
            )?;
        }
    }
    if let Some(audio) = &plan.audio {
        match &audio.server {
            Some(server) => writeln!(
                out,
                "# sound: PulseAudio/PipeWire server {}{}",
                server.display(),
                audio
                    .cookie
                    .as_ref()
                    .map(|c| format!(", cookie {} (PULSE_COOKIE)", c.display()))
                    .unwrap_or_default()
            )?,
            None => writeln!(
                out,
                "# sound: no desktop user known (not started through sudo): set audio.user or audio.server"
            )?,
        }
    }
    if let Some(remote) = &plan.remote {
        writeln!(out, "# display: remote-viewer {}", remote.uri)?;
    }
    for (key, value) in &plan.env {
        writeln!(out, "# environment: {key}={value}")?;
    }
    if let Some(pinning) = &recipe.plan.pinning {
        let pairs: Vec<String> = pinning
            .vcpus
            .iter()
            .enumerate()
            .map(|(vcpu, cpu)| format!("{vcpu}→{cpu}"))
            .collect();
        writeln!(
            out,
            "# vCPU → host CPU: {}; emulator on CPUs {}",
            pairs.join(" "),
            pinning
                .emulator
                .as_deref()
                .unwrap_or("(unknown: no online CPU list)")
        )?;
    }
    writeln!(
        out,
        "# vmrun passes QEMU its QMP monitors as listening sockets on fds 3 and 4; to run this by\n\
         # hand, change `fd=3` and `fd=4` to `path=/tmp/qmp.sock` and `path=/tmp/ctl.sock`.\n\
         # The files it opens for QEMU are the redirections at the end."
    )?;
    match &plan.qemu_user {
        Some(user) => writeln!(
            out,
            "# vmrun runs it as {} (uid {}, gid {}, from {}), without capabilities",
            user.name, user.uid, user.gid, user.source
        )?,
        None => writeln!(out, "# vmrun runs it as root (qemu.user = \"root\")")?,
    }
    let mut lines = shell_lines(&plan.argv);
    for file in &plan.passed_files {
        let path = shlex::try_quote(&file.path.to_string_lossy())
            .map(|quoted| quoted.into_owned())
            .unwrap_or_default();
        let redirection = match file.open {
            OpenAs::Read => format!("{}<{path}", file.fd),
            OpenAs::ReadWrite => format!("{}<>{path}", file.fd),
            OpenAs::Create => format!("{}>{path}", file.fd),
            // A shell cannot connect to a socket.
            OpenAs::Connect => {
                writeln!(
                    out,
                    "# fd {} is a connection to {path} (with socat, or change `fd={}` to `path=...`)",
                    file.fd, file.fd
                )?;
                continue;
            }
        };
        lines.push_str(" \\\n  ");
        lines.push_str(&redirection);
    }
    writeln!(out, "{lines}")?;
    Ok(ExitCode::Ok)
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

pub(super) fn check(app: &App, profile: &str, json: bool) -> Result<ExitCode, CliError> {
    let report = app.check(profile)?;
    if json {
        stdout_json(&CheckOutput {
            profile: profile.to_string(),
            name: report.name,
            ok: report.findings.iter().all(|f| f.status != Status::Fail),
            findings: report.findings,
        })?;
    } else {
        let mut out = std::io::stdout().lock();
        for finding in &report.findings {
            writeln!(
                out,
                "{}  {:<13} {}",
                finding.status.label(),
                finding.check,
                finding.message
            )?;
        }
    }
    Ok(report.code)
}

pub(super) fn list(app: &App, json: bool) -> Result<ExitCode, CliError> {
    let search = &app.search;
    let entries = app.list();
    if json {
        stdout_json(&entries)?;
        return Ok(ExitCode::Ok);
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
    Ok(ExitCode::Ok)
}

pub(super) fn new(app: &App, args: NewArgs, quiet: bool) -> Result<ExitCode, CliError> {
    use crate::app::new::{default_dir, default_image, NewRequest, Template};
    let is_root = nix::unistd::geteuid().is_root();
    let var = |name: &str| std::env::var(name).ok();
    let gpu = args.gpu.as_deref().map(parse_address).transpose()?;
    let memory = args
        .memory
        .as_deref()
        .map(|text| {
            text.parse::<model::ByteSize>()
                .map_err(|e| CliError::Usage(format!("--memory: {e}")))
        })
        .transpose()?;
    let request = NewRequest {
        name: args.name.clone(),
        gpu,
        memory,
        template: match args.template {
            NewTemplate::Windows11 => Template::Windows11,
            NewTemplate::Windows10 => Template::Windows10,
            NewTemplate::Linux => Template::Linux,
        },
        image: args
            .image
            .clone()
            .unwrap_or_else(|| default_image(is_root, &args.name, var)),
    };
    let to_stdout = args.output.as_deref() == Some(std::path::Path::new("-"));
    let output = match (&args.output, to_stdout) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        (None, false) => Some(
            default_dir(is_root, var)
                .ok_or_else(|| {
                    CliError::Usage("neither XDG_CONFIG_HOME nor HOME is set; give --output".into())
                })?
                .join(format!("{}.toml", args.name)),
        ),
    };
    let composed = app.new_profile(&request, output.as_deref())?;
    if to_stdout {
        std::io::stdout()
            .lock()
            .write_all(composed.text.as_bytes())?;
    }
    // What was chosen and what comes next: on stdout when the profile went to a file, on
    // stderr when stdout carries the profile.
    let mut report = String::new();
    if let Some(path) = &output {
        report.push_str(&format!("wrote {}\n", path.display()));
    }
    report.push_str("chose:\n");
    for line in &composed.chose {
        report.push_str(&format!("  {line}\n"));
    }
    report.push_str("next:\n");
    for line in &composed.next {
        report.push_str(&format!("  {line}\n"));
    }
    if to_stdout {
        if !quiet {
            eprint!("{report}");
        }
    } else {
        std::io::stdout().lock().write_all(report.as_bytes())?;
    }
    Ok(ExitCode::Ok)
}
