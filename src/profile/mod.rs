//! Stage 1: find a profile and read its text; diagnostics that point into it. Parsing and
//! validation are the model's (`model::parse`, `model::validate`).

pub mod diagnostic;
pub mod locate;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Diagnostics, Kind, Severity};
pub use locate::{ProfileEntry, SearchPath};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("no profile named `{name}`; looked for {name}.toml in: {}", display_dirs(.searched))]
    NotFound {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error("cannot read profile {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", display_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no directories)".to_string();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn display_diagnostics(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A profile file's path and text, kept together so every later message can point into it.
#[derive(Clone, Debug)]
pub struct ProfileSource {
    pub path: PathBuf,
    pub text: String,
}

impl ProfileSource {
    pub fn read(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ProfileSource {
            path: path.to_path_buf(),
            text,
        })
    }

    /// The directory relative paths in the profile (romfile, disks...) are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        let parent = self.path.parent().unwrap_or(Path::new("."));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
    }

    /// The default VM name: the file name without `.toml`.
    pub fn stem(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}
