//! The manual pages. `vmrun(1)` comes from the parser's own definition (clap_mangen) plus the
//! sections clap knows nothing of (environment, files, exit status, examples); `vmrun.toml(5)`
//! is docs/profile.md, rendered as roff, with each key's type and an example from the key table
//! the profile reader checks against (`model::keys`). A test holds the document and the table
//! to exactly the same keys, so the reference is written once.

use std::collections::BTreeSet;
use std::io::Write;

use clap::CommandFactory;

use super::{Cli, CliError};
use crate::exit::ExitCode;
use crate::model::keys::{self, TableForm};

/// The profile reference, as the repository documents it.
const PROFILE_MD: &str = include_str!("../../docs/profile.md");

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Page {
    /// vmrun(1): the commands, their options, environment, files, exit status.
    Vmrun,
    /// vmrun.toml(5): every profile key, its type, default and meaning.
    #[value(name = "vmrun.toml")]
    VmrunToml,
}

pub(super) fn man(page: Page) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    match page {
        Page::Vmrun => vmrun_page(&mut out)?,
        Page::VmrunToml => out.write_all(profile_page().as_bytes())?,
    }
    Ok(ExitCode::Ok)
}

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "VMRUN_PROFILE_PATH",
        "Directories searched for NAME.toml before ./vm-profiles, ~/.config/vmrun/profiles and \
         /etc/vmrun/profiles, separated by colons.",
    ),
    (
        "VMRUN_STATE_DIR",
        "The state directory, as --state-dir: default /var/lib/vmrun as root, \
         $XDG_STATE_HOME/vmrun (~/.local/state/vmrun) otherwise.",
    ),
    (
        "VMRUN_RUNTIME_DIR",
        "The runtime directory, as --runtime-dir: default /run/vmrun as root, \
         $XDG_RUNTIME_DIR/vmrun otherwise.",
    ),
    (
        "VMRUN_SYSROOT",
        "Prefixed to every sysfs, /proc and /dev path vmrun reads or writes (default /); the \
         tests run vmrun over fake trees with it. Also given to hooks.",
    ),
    (
        "SUDO_UID, PKEXEC_UID",
        "The desktop user who ran sudo or pkexec: QEMU runs as that user unless qemu.user says \
         otherwise, and [audio] reaches that user's sound server.",
    ),
    (
        "XDG_CONFIG_HOME, XDG_STATE_HOME, XDG_RUNTIME_DIR, HOME",
        "Where the per-user profiles, state and runtime directories are when vmrun does not run \
         as root.",
    ),
    (
        "PATH",
        "Where qemu-system-x86_64 (unless qemu.binary is a path), swtpm, systemctl, modprobe, \
         systemd-inhibit and the hooks' programs are found.",
    ),
    (
        "DBUS_SYSTEM_BUS_ADDRESS",
        "The system bus logind is asked on for the sleep inhibitor (default \
         /run/dbus/system_bus_socket).",
    ),
    (
        "VMRUN_COMPLETE",
        "Set by the shell completion scripts: vmrun then prints completions instead of running.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "./vm-profiles/NAME.toml, ~/.config/vmrun/profiles/NAME.toml, /etc/vmrun/profiles/NAME.toml",
        "Profiles, see vmrun.toml(5); the first one found wins.",
    ),
    (
        "STATE_DIR/NAME/",
        "The VM's UEFI variables (OVMF_VARS.fd), vmrun.log (every run's steps, rotated at \
         1 MiB), qemu.log (QEMU's stderr), console.log (the serial console), hooks.log, \
         last-run.json, the journal of host changes that recover undoes, and tpm/ (the TPM's \
         state). Never removed by vmrun.",
    ),
    (
        "RUNTIME_DIR/NAME/",
        "While the VM runs: qmp.sock and ctl.sock (QMP), qemu.pid, the lock, swtpm's socket and \
         the remote display's socket. Empty after the run.",
    ),
    (
        "/usr/share/qemu/firmware, /etc/qemu/firmware, ~/.config/qemu/firmware",
        "QEMU's firmware descriptors, read to find OVMF.",
    ),
];

const EXAMPLES: &[(&str, &str)] = &[
    (
        "vmrun check win10",
        "Validate the profile win10 and check this host read-only.",
    ),
    (
        "vmrun show win10",
        "Print the host steps and the QEMU command line, changing nothing.",
    ),
    (
        "sudo vmrun win10",
        "Start the VM in the foreground; Ctrl-C stops it gracefully.",
    ),
    (
        "sudo vmrun run win10 --detach && vmrun status win10",
        "Start it in the background, then show its vCPUs and how long they waited.",
    ),
    (
        "sudo vmrun stop win10",
        "Power the guest off and wait for teardown.",
    ),
    (
        "vmrun import libvirt domain.xml -o win10.toml",
        "Translate a libvirt domain into a profile.",
    ),
    (
        "vmrun man vmrun.toml | man -l -",
        "Read the profile reference.",
    ),
];

/// vmrun(1): clap_mangen's sections, one section per command, then the rest.
fn vmrun_page(out: &mut dyn Write) -> std::io::Result<()> {
    let command = Cli::command();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    render_commands(&command, "vmrun", out)?;
    writeln!(out, ".SH ENVIRONMENT")?;
    for (name, meaning) in ENVIRONMENT {
        writeln!(out, ".TP\n\\fB{}\\fR\n{}", roff(name), roff(meaning))?;
    }
    writeln!(out, ".SH FILES")?;
    for (path, meaning) in FILES {
        writeln!(out, ".TP\n\\fI{}\\fR\n{}", roff(path), roff(meaning))?;
    }
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for code in ExitCode::ALL {
        writeln!(
            out,
            ".TP\n\\fB{}\\fR\n{}",
            code.code(),
            roff(code.meaning())
        )?;
    }
    writeln!(out, ".SH EXAMPLES")?;
    for (command, what) in EXAMPLES {
        writeln!(out, ".TP\n\\fB{}\\fR\n{}", roff(command), roff(what))?;
    }
    writeln!(
        out,
        ".SH \"SEE ALSO\"\n\\fBvmrun.toml\\fR(5), \\fBqemu-system-x86_64\\fR(1), \\fBswtpm\\fR(8)"
    )?;
    man.render_version_section(out)?;
    Ok(())
}

/// One section per command (and subcommand), with its synopsis, description and arguments:
/// clap_mangen's own subcommand section lists only names.
fn render_commands(
    command: &clap::Command,
    path: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("{path} {}", sub.get_name());
        let mut section = sub.clone().bin_name(name.clone());
        section.build();
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let man = clap_mangen::Man::new(section.clone());
        let mut body = Vec::new();
        man.render_synopsis_section(&mut body)?;
        man.render_description_section(&mut body)?;
        if section.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut body)?;
        }
        // Each part comes with its own .SH header; nested under this command they are
        // subsections.
        let body = String::from_utf8_lossy(&body).replace(".SH ", ".SS ");
        out.write_all(body.as_bytes())?;
        render_commands(&section, &name, out)?;
    }
    Ok(())
}

/// Text for roff: no request at a line's start, backslashes and hyphens of options escaped.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Markdown's inline marks as roff fonts: `code` bold, *emphasis* italic, links as their text.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(['`', '*', '[']) {
        let (before, from) = rest.split_at(start);
        out.push_str(&roff_words(before));
        let mark = from.as_bytes()[0];
        if let Some(strong) = from.strip_prefix("**") {
            if let Some(end) = strong.find("**") {
                out.push_str(&format!("\\fB{}\\fR", roff_words(&strong[..end])));
                rest = &strong[end + 2..];
                continue;
            }
        }
        match mark {
            b'`' | b'*' => {
                let mark = mark as char;
                match from[1..].find(mark) {
                    Some(end) => {
                        let inner = &from[1..1 + end];
                        let font = if mark == '`' { "B" } else { "I" };
                        out.push_str(&format!(
                            "\\f{font}{}\\fR",
                            roff_words(inner).replace('-', "\\-")
                        ));
                        rest = &from[end + 2..];
                    }
                    None => {
                        out.push_str(&roff_words(&from[..1]));
                        rest = &from[1..];
                    }
                }
            }
            _ => {
                // [text](target): the text only; a man page has no links.
                let link = from.find("](").and_then(|middle| {
                    let end = from[middle..].find(')')? + middle;
                    Some((&from[1..middle], end))
                });
                match link {
                    Some((text, end)) => {
                        out.push_str(&inline(text));
                        rest = &from[end + 1..];
                    }
                    None => {
                        out.push_str(&roff_words(&from[..1]));
                        rest = &from[1..];
                    }
                }
            }
        }
    }
    out.push_str(&roff_words(rest));
    out
}

fn roff_words(text: &str) -> String {
    text.replace('\\', "\\e")
}

/// A line of text as a roff input line: a leading `.` or `'` would be a request.
fn line(text: String) -> String {
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

/// The cells of a markdown table row.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let mut current = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                current.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut current).trim().to_string()),
            other => current.push(other),
        }
    }
    cells.push(current.trim().to_string());
    cells
}

/// The `code` spans of a text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The tables a `## ` heading of docs/profile.md is about: `[machine]`, `[[disk]]`, the top
/// level ("Top level"), or none.
fn heading_tables(heading: &str) -> Vec<String> {
    if heading.trim() == "Top level" {
        return vec![String::new()];
    }
    code_spans(heading)
        .into_iter()
        .filter(|span| span.starts_with('['))
        .map(|span| span.trim_matches(['[', ']']).to_string())
        .collect()
}

/// The keys a row of a key table documents, as (table, key): the code spans of its first
/// cell (`sockets`, `display.vga`), or, in a table whose first column is something else (the
/// SMBIOS types), the code spans followed by ` (`.
fn row_keys(section_tables: &[String], row: &[String]) -> Vec<(String, String)> {
    let first = row.first().map(String::as_str).unwrap_or("");
    let mut spans: Vec<&str> = code_spans(first);
    if spans.is_empty() {
        if let Some(second) = row.get(1) {
            let parts: Vec<&str> = second.split('`').collect();
            spans = (1..parts.len())
                .step_by(2)
                .filter(|index| parts.get(index + 1).is_some_and(|p| p.starts_with(" (")))
                .map(|index| parts[index])
                .collect();
        }
    }
    spans
        .into_iter()
        .filter_map(|span| match span.split_once('.') {
            Some((table, key)) if keys::table(table).is_some() => {
                Some((table.to_string(), key.to_string()))
            }
            _ if section_tables.len() == 1 => Some((section_tables[0].clone(), span.to_string())),
            _ => None,
        })
        .collect()
}

/// One `## ` section of docs/profile.md.
struct Section<'a> {
    heading: &'a str,
    lines: Vec<&'a str>,
}

fn sections() -> Vec<Section<'static>> {
    let mut sections: Vec<Section<'static>> = Vec::new();
    for text in PROFILE_MD.lines() {
        if let Some(heading) = text.strip_prefix("## ") {
            sections.push(Section {
                heading,
                lines: Vec::new(),
            });
        } else if let Some(section) = sections.last_mut() {
            section.lines.push(text);
        }
    }
    sections
}

/// The paragraphs before the first `## `: the page's description.
fn preamble() -> Vec<&'static str> {
    PROFILE_MD
        .lines()
        .skip_while(|l| l.starts_with("# ") || l.is_empty())
        .take_while(|l| !l.starts_with("## "))
        .collect()
}

/// Every (table, key) docs/profile.md documents.
#[cfg(test)]
fn documented_keys() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for section in sections() {
        let tables = heading_tables(section.heading);
        for block in table_blocks(&section.lines) {
            for row in block.iter().skip(2) {
                found.extend(row_keys(&tables, &cells(row)));
            }
        }
    }
    found
}

/// The markdown tables among a section's lines, each as its rows (header and rule included).
#[cfg(test)]
fn table_blocks<'a>(lines: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut blocks: Vec<Vec<&'a str>> = Vec::new();
    let mut in_table = false;
    for text in lines {
        if text.starts_with('|') {
            if !in_table {
                blocks.push(Vec::new());
            }
            if let Some(block) = blocks.last_mut() {
                block.push(text);
            }
            in_table = true;
        } else {
            in_table = false;
        }
    }
    blocks
}

/// Paragraphs, lists and tables of markdown lines as roff.
fn render_markdown(lines: &[&str], tables: &[String], out: &mut String) {
    let mut paragraph: Vec<&str> = Vec::new();
    let mut table: Vec<&str> = Vec::new();
    let flush_paragraph = |paragraph: &mut Vec<&str>, out: &mut String| {
        if paragraph.is_empty() {
            return;
        }
        let text = paragraph.join(" ");
        if let Some(item) = text.strip_prefix("- ") {
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&line(inline(item)));
        } else {
            out.push_str(".PP\n");
            out.push_str(&line(inline(&text)));
        }
        out.push('\n');
        paragraph.clear();
    };
    for text in lines {
        if text.starts_with('|') {
            flush_paragraph(&mut paragraph, out);
            table.push(text);
            continue;
        }
        if !table.is_empty() {
            render_table(&table, tables, out);
            table.clear();
        }
        if text.trim().is_empty() || text.starts_with("[Back to") {
            flush_paragraph(&mut paragraph, out);
        } else if text.starts_with("- ") {
            flush_paragraph(&mut paragraph, out);
            paragraph.push(text);
        } else {
            paragraph.push(text.trim());
        }
    }
    flush_paragraph(&mut paragraph, out);
    if !table.is_empty() {
        render_table(&table, tables, out);
    }
}

/// A key table: one tagged paragraph per row, the keys with their type, then the meaning, the
/// default and an example of each key.
fn render_table(rows: &[&str], tables: &[String], out: &mut String) {
    let header = cells(rows[0]);
    let default_column = header.iter().position(|h| h == "default");
    let meaning_column = header.iter().position(|h| h == "meaning");
    for row in rows.iter().skip(2) {
        let row = cells(row);
        let keys = row_keys(tables, &row);
        let first = row.first().cloned().unwrap_or_default();
        if code_spans(&first).is_empty() {
            // Not a key column (the SMBIOS types): the row as it is.
            out.push_str(&format!(".TP\n{}\n", line(inline(&first))));
            out.push_str(&line(inline(&row[1..].join("; "))));
            out.push('\n');
            push_examples(&keys, out);
            continue;
        }
        let types: Vec<String> = keys
            .iter()
            .filter_map(|(table, key)| keys::lookup(table, key))
            .map(|key| key.shape.type_name().to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        out.push_str(&format!(
            ".TP\n{}{}\n",
            line(inline(&first)),
            if types.is_empty() {
                String::new()
            } else {
                format!(" (\\fI{}\\fR)", types.join(", "))
            }
        ));
        let mut text = meaning_column
            .or(Some(row.len() - 1))
            .and_then(|column| row.get(column))
            .map(|meaning| inline(meaning))
            .unwrap_or_default();
        if let Some(default) = default_column.and_then(|column| row.get(column)) {
            if !text.ends_with('.') {
                text.push('.');
            }
            text.push_str(&format!(" Default: {}.", inline(default)));
        }
        out.push_str(&line(text));
        out.push('\n');
        push_examples(&keys, out);
    }
}

/// `Example: key = value` for each key of a row, from the key table.
fn push_examples(row_keys: &[(String, String)], out: &mut String) {
    let examples: Vec<String> = row_keys
        .iter()
        .filter_map(|(table, key)| keys::lookup(table, key))
        .map(|key| format!("\\fB{} = {}\\fR", key.name, key.example.replace('-', "\\-")))
        .collect();
    if !examples.is_empty() {
        out.push_str(&format!(".br\nExample: {}\n", examples.join(", ")));
    }
}

/// vmrun.toml(5).
pub(super) fn profile_page() -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH VMRUN.TOML 5 \"\" \"vmrun {}\" \"File Formats\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(".SH NAME\nvmrun.toml \\- a VM profile for vmrun\n");
    out.push_str(
        ".SH SYNOPSIS\n\\fINAME\\fR.toml in $VMRUN_PROFILE_PATH, ./vm\\-profiles, \
         ~/.config/vmrun/profiles or /etc/vmrun/profiles, or any path given to \\fBvmrun\\fR(1)\n",
    );
    out.push_str(".SH DESCRIPTION\n");
    out.push_str(
        ".PP\nA profile is a TOML file describing one VM. Every key is optional unless said \
         otherwise.\n",
    );
    render_markdown(&preamble(), &[], &mut out);
    out.push_str(".SH TABLES\n");
    for table in keys::TABLES {
        let written = match table.form {
            TableForm::Single => format!("[{}]", table.name),
            TableForm::Repeated => format!("[[{}]] (once per item)", table.name),
        };
        out.push_str(&format!(".TP\n\\fB{written}\\fR\n{}\n", roff(table.about)));
    }
    for section in sections() {
        out.push_str(&format!(
            ".SH \"{}\"\n",
            section.heading.replace(['`', '"'], "")
        ));
        render_markdown(&section.lines, &heading_tables(section.heading), &mut out);
    }
    out.push_str(".SH \"SEE ALSO\"\n\\fBvmrun\\fR(1)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/profile.md and the key table the reader checks against name the same keys, so the
    /// document (and the manual page made from it) is complete and lists nothing that is gone.
    #[test]
    fn the_profile_reference_documents_exactly_the_keys_vmrun_reads() {
        let documented = documented_keys();
        let read: BTreeSet<(String, String)> = keys::KEYS
            .iter()
            .map(|k| (k.table.to_string(), k.name.to_string()))
            .collect();
        let missing: Vec<_> = read.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&read).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "not in docs/profile.md: {missing:?}; in docs/profile.md but not read: {extra:?}"
        );
        let headed: BTreeSet<String> = sections()
            .iter()
            .flat_map(|s| heading_tables(s.heading))
            .filter(|t| !t.is_empty())
            .collect();
        let tables: BTreeSet<String> = keys::TABLES.iter().map(|t| t.name.to_string()).collect();
        assert_eq!(headed, tables);
    }

    #[test]
    fn markdown_marks_become_fonts() {
        assert_eq!(
            inline("`-cpu host` on *i* ([Low latency](low-latency.md))"),
            "\\fB\\-cpu host\\fR on \\fIi\\fR (Low latency)"
        );
        assert_eq!(inline("**Sizes** are"), "\\fBSizes\\fR are");
        assert_eq!(line(".x".to_string()), "\\&.x");
    }
}
