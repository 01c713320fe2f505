//! `import libvirt` and `export libvirt`: the translation lives in `crate::libvirt`; here are
//! only the files, stdin/stdout and messages.

use crate::fsutil::OutputError;
use std::io::Read;
use std::path::Path;

use super::*;

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
        /// Profile: a path to a .toml file, or a NAME looked up as NAME.toml on the search path.
        profile: String,
        /// Write the XML to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the --output file if it exists.
        #[arg(long, requires = "output")]
        force: bool,
    },
}

pub(super) fn import(app: &App, source: ImportSource, quiet: bool) -> Result<ExitCode, CliError> {
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
    let imported = app
        .import_libvirt(&xml, output.clone())
        .map_err(|error| match error {
            AppError::Usage(message) => {
                CliError::Usage(format!("{}: {message}", display_input(&file)))
            }
            other => other.into(),
        })?;
    if !quiet {
        for note in &imported.notes {
            eprintln!("vmrun: import: {note}");
        }
    }
    write_output(output.as_deref(), force, &imported.profile)?;
    Ok(ExitCode::Ok)
}

pub(super) fn export(app: &App, target: ExportTarget, quiet: bool) -> Result<ExitCode, CliError> {
    let ExportTarget::Libvirt {
        profile,
        output,
        force,
    } = target;
    let (xml, warnings) = app.export_libvirt(&profile)?;
    if !quiet {
        for warning in &warnings {
            eprintln!("{warning}");
        }
    }
    write_output(output.as_deref(), force, &xml)?;
    Ok(ExitCode::Ok)
}

fn display_input(file: &Path) -> String {
    if file.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        file.display().to_string()
    }
}

/// Writes `text` to `output` (stdout without one). The file is never reached through a
/// symbolic link: without `--force` it must not exist at all (`O_EXCL`, which also refuses a
/// dangling link), with `--force` an existing file is truncated but a link is refused
/// (`O_NOFOLLOW`). A new file gets mode 0644 whatever the umask.
fn write_output(output: Option<&Path>, force: bool, text: &str) -> Result<(), CliError> {
    let Some(path) = output else {
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(());
    };
    let cannot_write = |error: std::io::Error| {
        CliError::Output(std::io::Error::new(
            error.kind(),
            format!("cannot write {}: {error}", path.display()),
        ))
    };
    let mut file = match crate::fsutil::open_output(path, force, 0o644) {
        Ok(file) => file,
        Err(OutputError::Exists) => {
            return Err(CliError::Usage(format!(
                "{} exists; give --force to overwrite it",
                path.display()
            )));
        }
        Err(OutputError::Symlink) => {
            return Err(CliError::Usage(format!(
                "{} is a symbolic link; vmrun does not write through one: give the file's own path",
                path.display()
            )));
        }
        Err(OutputError::Io(error)) => return Err(cannot_write(error)),
    };
    file.write_all(text.as_bytes()).map_err(cannot_write)
}
