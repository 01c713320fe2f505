//! The host journal: before each host change, how to undo it is appended and flushed to disk,
//! so that teardown, and `vmrun recover` after a crash of vmrun, can replay it in reverse.
//!
//! Undoing is journaled too, one record at a time: before an entry whose undo depends on the
//! host's current value (a delta, such as the hugepages a VM added) is undone, the absolute
//! value it resolves to is appended (`{"resolved":N,...}`), and once an entry is undone a
//! `{"done":N}` line is appended, each flushed before the next record is touched. A `recover`
//! after a kill at any point of an undo therefore repeats at most the one record that was
//! under way, with the same absolute values, and never one that was finished.

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

/// A line of the journal: a change's entry, or what became of the entry at a position (its
/// position among the entries, from 0) while it was undone.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Done {
        done: usize,
    },
    Resolved {
        resolved: usize,
        #[serde(flatten)]
        undo: Undo,
    },
    Entry(JournalEntry),
}

/// An entry not undone yet, at its position among the journal's entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub position: usize,
    /// The entry, its undo replaced by the absolute one it was resolved to, if it was.
    pub entry: JournalEntry,
    /// Whether `entry.undo` is a resolved one (to be run as it is, not resolved again).
    pub resolved: bool,
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
        self.append_line(&Line::Entry(entry.clone()))
    }

    /// Records that the entry at `position` is undone (on disk before the next is touched).
    pub fn mark_done(&self, position: usize) -> Result<(), JournalError> {
        self.append_line(&Line::Done { done: position })
    }

    /// Records the absolute undo the entry at `position` resolved to, before it runs.
    pub fn mark_resolved(&self, position: usize, undo: &Undo) -> Result<(), JournalError> {
        self.append_line(&Line::Resolved {
            resolved: position,
            undo: undo.clone(),
        })
    }

    fn append_line(&self, line: &Line) -> Result<(), JournalError> {
        let mut text = serde_json::to_string(line).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        text.push('\n');
        let mut file = crate::fsutil::open_append(&self.path, 0o600).map_err(self.io())?;
        file.write_all(text.as_bytes()).map_err(self.io())?;
        file.sync_data().map_err(self.io())
    }

    /// The entries not undone yet, in the order they were written; none when there is no
    /// journal.
    pub fn entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        Ok(self.pending()?.into_iter().map(|p| p.entry).collect())
    }

    /// The entries not undone yet with their positions, resolved undos in place.
    pub fn pending(&self) -> Result<Vec<Pending>, JournalError> {
        let text = match crate::fsutil::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(self.io()(error)),
        };
        let mut pending: Vec<Pending> = Vec::new();
        let mut done: Vec<usize> = Vec::new();
        let count = text.lines().count();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(Line::Entry(entry)) => pending.push(Pending {
                    position: pending.len(),
                    entry,
                    resolved: false,
                }),
                Ok(Line::Done { done: position }) => done.push(position),
                Ok(Line::Resolved {
                    resolved: position,
                    undo,
                }) => {
                    if let Some(p) = pending.get_mut(position) {
                        p.entry.undo = undo;
                        p.resolved = true;
                    }
                }
                // A crash mid-append leaves a torn last line: that change (or that mark) was
                // never made.
                Err(_) if index + 1 == count && !text.ends_with('\n') => {}
                Err(error) => {
                    return Err(JournalError::Corrupt {
                        path: self.path.clone(),
                        line: index + 1,
                        message: error.to_string(),
                    })
                }
            }
        }
        pending.retain(|p| !done.contains(&p.position));
        Ok(pending)
    }

    /// Replaces the journal with `entries` (what could not be undone), or removes it.
    pub fn replace(&self, entries: &[JournalEntry]) -> Result<(), JournalError> {
        if entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(self.io()(error)),
                _ => Ok(()),
            };
        }
        let text: String = entries
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|line| line + "\n")
            .collect();
        crate::fsutil::write_replace(&self.path, text.as_bytes(), 0o600).map_err(self.io())
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
    fn done_entries_are_not_pending_and_a_resolved_undo_replaces_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::at(&dir.path().join("journal"));
        let unit = |name: &str| JournalEntry {
            step: Some(0),
            undo: Undo::StartUnit(StartUnit { unit: name.into() }),
        };
        for name in ["a", "b", "c"] {
            journal.append(&unit(name)).unwrap();
        }
        journal.mark_done(2).unwrap();
        journal.mark_resolved(1, &unit("b-resolved").undo).unwrap();
        let pending = journal.pending().unwrap();
        assert_eq!(
            pending.iter().map(|p| p.position).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(pending[1].resolved && !pending[0].resolved);
        assert_eq!(pending[1].entry, unit("b-resolved"));
        journal.mark_done(1).unwrap();
        journal.mark_done(0).unwrap();
        assert!(journal.entries().unwrap().is_empty());
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
