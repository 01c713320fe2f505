//! Applying the host steps and giving the host back. Each change is journaled before it is
//! made; `restore`, a failed `prepare` and `vmrun recover` replay the journal in reverse.

use std::path::Path;

use super::context::{HostContext, StepError};
use super::journal::{Journal, JournalEntry, JournalError, Pending};
use super::steps::{HostStep, Recorder};
use crate::log::Log;

pub struct HostSession<'a> {
    host: HostContext<'a>,
    steps: Vec<HostStep>,
    journal: Journal,
    /// What the last undo could not give back because a passed device did not answer
    /// (`StepError::DeviceStuck`), one message each: `run`, `stop` and `recover` exit 8.
    stuck: std::cell::RefCell<Vec<String>>,
}

impl<'a> HostSession<'a> {
    pub fn new(host: HostContext<'a>, steps: Vec<HostStep>, journal_path: &Path) -> Self {
        HostSession {
            host,
            steps,
            journal: Journal::at(journal_path),
            stuck: Default::default(),
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

    /// What a previous run left in the journal. A journal whose every entry was undone (an
    /// undo killed before it removed the file) is removed here.
    pub fn leftovers(&self) -> Result<Vec<JournalEntry>, JournalError> {
        let entries = self.journal.entries()?;
        if entries.is_empty() {
            self.journal.replace(&[])?;
        }
        Ok(entries)
    }

    /// Applies every step in order; stops at the first failure (nothing is undone here).
    pub fn apply(&self, log: &Log) -> Result<(), StepError> {
        for (index, step) in self.steps.iter().enumerate() {
            log.debug(&format!("host step {index}: {}", step.describe()));
            step.apply(&self.host, &Recorder::new(&self.journal, index), log)?;
        }
        Ok(())
    }

    /// Replays the journal in reverse, one record at a time: a delta is resolved to an
    /// absolute value and journaled before it runs, and each undone record is marked done on
    /// disk before the next is touched, so that a kill at any point repeats at most the record
    /// under way. Entries that could not be undone stay in the journal.
    pub fn undo_all(&self, log: &Log) -> Result<(), Vec<String>> {
        let pending = self.journal.pending().map_err(|e| vec![e.to_string()])?;
        self.undo_pending(&pending, log)
    }

    /// Undoes `pending` (the journal as just read) in reverse; see `undo_all`.
    fn undo_pending(&self, pending: &[Pending], log: &Log) -> Result<(), Vec<String>> {
        self.stuck.borrow_mut().clear();
        let all_entries = !pending.is_empty();
        let mut problems: Vec<String> = Vec::new();
        let mut remaining: Vec<(usize, JournalEntry)> = Vec::new();
        for item in pending.iter().rev() {
            let mut entry = item.entry.clone();
            if !item.resolved {
                if let Some(absolute) = entry.undo.resolve(&self.host) {
                    if let Err(error) = self.journal.mark_resolved(item.position, &absolute) {
                        // Not journaled: running it now could be repeated with another value.
                        problems.push(error.to_string());
                        remaining.push((item.position, entry));
                        continue;
                    }
                    entry.undo = absolute;
                }
            }
            match entry.undo.undo(&self.host, log) {
                Ok(()) => {
                    if let Err(error) = self.journal.mark_done(item.position) {
                        // Undone all the same; the final rewrite below drops it.
                        log.warn(&format!("could not mark {:?} done: {error}", entry.undo));
                    }
                }
                Err(error) => {
                    log.error(&format!("could not undo {:?}: {error}", entry.undo));
                    if matches!(error, StepError::DeviceStuck { .. }) {
                        self.stuck.borrow_mut().push(error.to_string());
                    }
                    problems.push(error.to_string());
                    remaining.push((item.position, entry));
                }
            }
        }
        for item in pending {
            if remaining.iter().any(|(p, _)| *p == item.position) {
                continue;
            }
            if let Err(problem) = item.entry.undo.verify_restored(&self.host) {
                problems.push(problem);
                remaining.push((item.position, item.entry.clone()));
            }
        }
        remaining.sort_by_key(|(position, _)| *position);
        let remaining: Vec<JournalEntry> = remaining.into_iter().map(|(_, e)| e).collect();
        if let Err(error) = self.journal.replace(&remaining) {
            problems.push(error.to_string());
        }
        if problems.is_empty() {
            if all_entries {
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
        let undone = match self.journal.pending() {
            // A journal whose every entry was undone (an undo killed before it removed the
            // file) goes, so that this run's records start a fresh one.
            Ok(pending) if pending.is_empty() => {
                self.journal.replace(&[]).map_err(|e| vec![e.to_string()])
            }
            Ok(pending) => {
                log.warn("a previous run of this VM left host changes behind (vmrun was killed?); undoing them first");
                self.undo_pending(&pending, log)
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

    /// The passed devices the last undo left off their host driver because they did not
    /// answer (the `StepError::DeviceStuck` messages); empty when none.
    pub fn stuck_devices(&self) -> Vec<String> {
        self.stuck.borrow().clone()
    }

    /// Gives the host back after QEMU is gone; what fails stays journaled for `recover`.
    /// Returns `stuck_devices`.
    pub fn restore(&self, log: &Log) -> Vec<String> {
        if let Err(left) = self.undo_all(log) {
            log.error(&format!(
                "the host could not be fully restored: {}",
                self.recover_hint(&left)
            ));
        }
        self.stuck_devices()
    }
}

/// What exit code 8 says: which device, what was seen and done, and what to do.
pub fn stuck_message(stuck: &[String], name: &str) -> String {
    format!(
        "a passed device did not come back: {}. Everything else was given back and the journal keeps \
         that device. Suspend and resume the host (or reboot), then run `vmrun recover {name}`: it \
         returns the device to its driver once it answers (exit 8 while it still does not)",
        stuck.join("; ")
    )
}
