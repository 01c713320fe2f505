//! `import libvirt` and `export libvirt`: the translation lives in `crate::libvirt`; here are
//! only the files, stdin/stdout and messages.

use std::io::Read;
use std::path::Path;

use super::*;
use crate::libvirt;

#[derive(Debug, Subcommand)]
pub(super) enum ImportSource {
    /// A libvirt domain XML (`virsh dumpxml NAME`); `-` reads it from stdin. Prints the profile,
    /// with what could not be translated listed at its top and on stderr.
    Libvirt {
        /// The domain XML file, or `-` for stdin.
        file: PathBuf,
        /// Write the profile to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the --output file if it exists.
        #[arg(long, requires = "output")]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum ExportTarget {
    /// A libvirt domain XML for the same VM (`virsh define FILE`): same devices, guest
    /// addresses, CPU, pinning and firmware; host steps libvirt lacks are comments.
    Libvirt {
        profile: String,
        /// Write the XML to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the --output file if it exists.
        #[arg(long, requires = "output")]
        force: bool,
    },
}

pub(super) fn import(source: ImportSource, quiet: bool) -> Result<i32, CliError> {
    let ImportSource::Libvirt {
        file,
        output,
        force,
    } = source;
    let xml = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(&file)
            .map_err(|error| CliError::Usage(format!("cannot read {}: {error}", file.display())))?
    };
    let imported = libvirt::import(&xml)
        .map_err(|error| CliError::Usage(format!("{}: {error}", display_input(&file))))?;
    // The profile must be one `vmrun check` accepts; relative paths resolve next to it.
    let profile_path = output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.toml", imported.name)));
    let source = ProfileSource {
        path: profile_path,
        text: imported.profile.clone(),
    };
    let valid = profile::parse(&source).and_then(|raw| model::validate(&source, &raw).map(|_| ()));
    if let Err(diagnostics) = valid {
        let errors: Vec<&Diagnostic> = diagnostics
            .iter()
            .filter(|d| d.severity == profile::Severity::Error)
            .collect();
        if !errors.is_empty() {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(CliError::Preflight(format!(
                "the translated profile does not validate (please report this with the XML):\n{}",
                lines.join("\n")
            )));
        }
    }
    if !quiet {
        for note in &imported.notes {
            eprintln!("vmrun: import: {note}");
        }
    }
    write_output(output.as_deref(), force, &imported.profile)?;
    Ok(exit::OK)
}

pub(super) fn export(
    search: &SearchPath,
    base: &BaseDirs,
    target: ExportTarget,
    quiet: bool,
) -> Result<i32, CliError> {
    let ExportTarget::Libvirt {
        profile,
        output,
        force,
    } = target;
    let loaded = load(search, &profile)?;
    if !quiet {
        for warning in &loaded.warnings {
            eprintln!("{warning}");
        }
    }
    let firmware = plan::resolve_firmware(&loaded.config, &firmware::default_descriptor_dirs())
        .map_err(PlanError::from)?;
    let plan = Plan::new(&loaded.config, &firmware, base)?;
    let xml = libvirt::export(&libvirt::ExportInput {
        config: &loaded.config,
        firmware: &firmware,
        paths: &plan.paths,
        emulator: absolute_program(&loaded.config.qemu.binary),
    });
    write_output(output.as_deref(), force, &xml)?;
    Ok(exit::OK)
}

fn display_input(file: &Path) -> String {
    if file.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        file.display().to_string()
    }
}

fn write_output(output: Option<&Path>, force: bool, text: &str) -> Result<(), CliError> {
    match output {
        None => {
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
        Some(path) => {
            if path.exists() && !force {
                return Err(CliError::Usage(format!(
                    "{} exists; give --force to overwrite it",
                    path.display()
                )));
            }
            std::fs::write(path, text).map_err(|error| {
                CliError::Output(std::io::Error::new(
                    error.kind(),
                    format!("cannot write {}: {error}", path.display()),
                ))
            })
        }
    }
}

/// libvirt wants the emulator as an absolute path; QEMU's own lookup is PATH.
fn absolute_program(binary: &str) -> PathBuf {
    let program = Path::new(binary);
    if program.is_absolute() {
        return program.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| Path::new("/usr/bin").join(program))
}
