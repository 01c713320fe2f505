//! Applying the host steps and giving the host back. Each change is journaled before it is
//! made; `restore`, a failed `prepare` and `vmrun recover` replay the journal in reverse.

use std::path::Path;

use super::context::{HostContext, StepError};
use super::journal::{Journal, JournalEntry, JournalError};
use super::steps::{HostStep, Recorder};
use crate::log::Log;

pub struct HostSession<'a> {
    host: HostContext<'a>,
    steps: Vec<HostStep>,
    journal: Journal,
}

impl<'a> HostSession<'a> {
    pub fn new(host: HostContext<'a>, steps: Vec<HostStep>, journal_path: &Path) -> Self {
        HostSession {
            host,
            steps,
            journal: Journal::at(journal_path),
        }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn steps(&self) -> &[HostStep] {
        &self.steps
    }

    /// The host the steps work on (for their preflight).
    pub fn host(&self) -> &HostContext<'a> {
        &self.host
    }

    /// What a previous run left in the journal.
    pub fn leftovers(&self) -> Result<Vec<JournalEntry>, JournalError> {
        self.journal.entries()
    }

    /// Applies every step in order; stops at the first failure (nothing is undone here).
    pub fn apply(&self, log: &Log) -> Result<(), StepError> {
        for (index, step) in self.steps.iter().enumerate() {
            log.debug(&format!("host step {index}: {}", step.describe()));
            step.apply(&self.host, &Recorder::new(&self.journal, index), log)?;
        }
        Ok(())
    }

    /// Replays the journal in reverse. Entries that could not be undone stay in the journal.
    pub fn undo_all(&self, log: &Log) -> Result<(), Vec<String>> {
        let entries = self.journal.entries().map_err(|e| vec![e.to_string()])?;
        self.undo_entries(&entries, log)
    }

    /// Undoes `entries` (the journal as just read) in reverse and keeps in the journal only
    /// those that could not be undone.
    fn undo_entries(&self, entries: &[JournalEntry], log: &Log) -> Result<(), Vec<String>> {
        let mut failed: Vec<(usize, String)> = Vec::new();
        for (position, entry) in entries.iter().enumerate().rev() {
            if let Err(error) = entry.undo.undo(&self.host, log) {
                log.error(&format!("could not undo {:?}: {error}", entry.undo));
                failed.push((position, error.to_string()));
            }
        }
        for (position, entry) in entries.iter().enumerate() {
            if failed.iter().any(|(f, _)| *f == position) {
                continue;
            }
            if let Err(problem) = entry.undo.verify_restored(&self.host) {
                failed.push((position, problem));
            }
        }
        let remaining: Vec<JournalEntry> = entries
            .iter()
            .enumerate()
            .filter(|(position, _)| failed.iter().any(|(f, _)| f == position))
            .map(|(_, entry)| entry.clone())
            .collect();
        let mut problems: Vec<String> = failed.into_iter().map(|(_, message)| message).collect();
        if let Err(error) = self.journal.replace(&remaining) {
            problems.push(error.to_string());
        }
        if problems.is_empty() {
            if !entries.is_empty() {
                log.info("host restored");
            }
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn recover_hint(&self, problems: &[String]) -> String {
        format!(
            "{}; fix that, then run `vmrun recover {}`",
            problems.join("; "),
            self.host.vm.name
        )
    }

    /// Undoes what a crashed run left, then applies the steps; on failure undoes what it
    /// changed. The message says what failed and whether the host is whole again.
    pub fn prepare(&self, log: &Log) -> Result<(), String> {
        // Read once: what a crashed run left is undone from this very reading.
        let undone = match self.journal.entries() {
            Ok(entries) if entries.is_empty() => Ok(()),
            Ok(entries) => {
                log.warn("a previous run of this VM left host changes behind (vmrun was killed?); undoing them first");
                self.undo_entries(&entries, log)
            }
            Err(error) => Err(vec![error.to_string()]),
        };
        undone.map_err(|left| {
            format!(
                "the host changes of a previous run could not be undone: {}",
                self.recover_hint(&left)
            )
        })?;
        match self.apply(log) {
            Ok(()) => Ok(()),
            Err(error) => {
                log.error(&format!(
                    "host preparation failed: {error}; undoing what was changed"
                ));
                match self.undo_all(log) {
                    Ok(()) => Err(error.to_string()),
                    Err(left) => Err(format!(
                        "{error}; and the host could not be fully restored: {}",
                        self.recover_hint(&left)
                    )),
                }
            }
        }
    }

    /// Gives the host back after QEMU is gone; what fails stays journaled for `recover`.
    pub fn restore(&self, log: &Log) {
        if let Err(left) = self.undo_all(log) {
            log.error(&format!(
                "the host could not be fully restored: {}",
                self.recover_hint(&left)
            ));
        }
    }
}
