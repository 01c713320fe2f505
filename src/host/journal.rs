//! The host journal: before each host change, how to undo it is appended and flushed to disk,
//! so that teardown, and `vmrun recover` after a crash of vmrun, can replay it in reverse.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::steps::Undo;

/// One line of the journal: how to undo one change, and which step of the plan made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The position of the step in the plan (absent in round-1 journals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    #[serde(flatten)]
    pub undo: Undo,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {}: line {line} is not a journal entry ({message}); fix or remove it by hand", .path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn at(path: &Path) -> Self {
        Journal {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
        |source| JournalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one entry and waits until it is on disk.
    pub fn append(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        let mut line = serde_json::to_string(entry).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(self.io())?;
        file.write_all(line.as_bytes()).map_err(self.io())?;
        file.sync_data().map_err(self.io())
    }

    /// The entries in the order they were written; none when there is no journal.
    pub fn entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(self.io()(error)),
        };
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(entry) => entries.push(entry),
                // A crash mid-append leaves a torn last line: that change was never made.
                Err(_) if index + 1 == text.lines().count() && !text.ends_with('\n') => {}
                Err(error) => {
                    return Err(JournalError::Corrupt {
                        path: self.path.clone(),
                        line: index + 1,
                        message: error.to_string(),
                    })
                }
            }
        }
        Ok(entries)
    }

    /// Replaces the journal with `entries` (what could not be undone), or removes it.
    pub fn replace(&self, entries: &[JournalEntry]) -> Result<(), JournalError> {
        if entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(self.io()(error)),
                _ => Ok(()),
            };
        }
        let temporary = self.path.with_extension("new");
        let text: String = entries
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|line| line + "\n")
            .collect();
        let mut file = std::fs::File::create(&temporary).map_err(self.io())?;
        file.write_all(text.as_bytes()).map_err(self.io())?;
        file.sync_data().map_err(self.io())?;
        std::fs::rename(&temporary, &self.path).map_err(self.io())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::steps::display_manager::StartUnit;
    use crate::host::steps::vfio::RestorePciDriver;

    #[test]
    fn entries_round_trip_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::at(&dir.path().join("journal"));
        assert!(journal.entries().unwrap().is_empty());
        let first = JournalEntry {
            step: Some(2),
            undo: Undo::StartUnit(StartUnit {
                unit: "display-manager.service".into(),
            }),
        };
        let second = JournalEntry {
            step: Some(7),
            undo: Undo::RestorePciDriver(RestorePciDriver {
                address: "0000:01:00.0".into(),
                driver: Some("nvidia".into()),
                driver_override: None,
            }),
        };
        journal.append(&first).unwrap();
        journal.append(&second).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![first.clone(), second]);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(journal.path())
            .unwrap();
        file.write_all(b"{\"undo\":\"load_mod").unwrap();
        assert_eq!(journal.entries().unwrap().len(), 2);
        journal.replace(std::slice::from_ref(&first)).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![first]);
        journal.replace(&[]).unwrap();
        assert!(!journal.path().exists());
    }

    #[test]
    fn a_round_one_journal_still_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        std::fs::write(
            &path,
            "{\"undo\":\"run_post_stop\",\"commands\":[[\"/bin/true\"]]}\n\
             {\"undo\":\"set_hugepages\",\"attribute\":\"/sys/x/nr_hugepages\",\"count\":3}\n",
        )
        .unwrap();
        let entries = Journal::at(&path).entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].step, None);
        assert!(
            matches!(&entries[0].undo, Undo::RunPostStop(run) if run.timeout_seconds.is_none())
        );
        assert!(matches!(&entries[1].undo, Undo::SetHugepages(set) if set.count == 3));
    }

    #[test]
    fn a_corrupt_line_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        std::fs::write(&path, "garbage\n{\"undo\":\"start_unit\",\"unit\":\"x\"}\n").unwrap();
        assert!(matches!(
            Journal::at(&path).entries(),
            Err(JournalError::Corrupt { line: 1, .. })
        ));
    }
}
