//! `vmrun top [NAME]`: the live view on a terminal, `--json` one object per second, `--once`
//! one interval. The sampling and drawing live in `crate::top`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use super::CliError;
use crate::app::{App, AppError};
use crate::exit::ExitCode;
use crate::run::control::ControlError;
use crate::run::state;
use crate::top::{ui, Monitor, Probe, Report, VmTarget};

const EVERY: Duration = Duration::from_secs(1);

/// The VMs to watch now: the one named, or every running VM.
fn targets(app: &App, name: Option<&str>) -> Result<Vec<VmTarget>, CliError> {
    let names = match name {
        Some(name) => vec![name.to_string()],
        None => app.running_names(),
    };
    let mut found = Vec::new();
    for each in names {
        let target = app.target(&each)?;
        match state::running(&target.paths) {
            Some(run) => found.push(VmTarget {
                name: target.name,
                pid: run.qemu_pid,
                accel: run.accel,
                ctl_socket: target.paths.ctl_socket,
            }),
            // A VM named on the command line must run; of all VMs, one may just have stopped.
            None if name.is_some() => {
                // Another user's VM is not "not running" when its state cannot be read.
                if let Err(error) = std::fs::metadata(&target.paths.run_state) {
                    if error.kind() == std::io::ErrorKind::PermissionDenied {
                        return Err(CliError::Output(std::io::Error::new(
                            error.kind(),
                            format!(
                                "cannot read {}: {error}; run as root, or as the user QEMU runs as",
                                target.paths.run_state.display()
                            ),
                        )));
                    }
                }
                return Err(AppError::Control(ControlError::NotRunning(target.name)).into());
            }
            None => {}
        }
    }
    Ok(found)
}

/// Nothing (left) to watch: exit 7 like `status` of a VM that does not run.
fn nothing_runs(name: Option<&str>) -> Result<ExitCode, CliError> {
    match name {
        Some(name) => Err(AppError::Control(ControlError::NotRunning(name.to_string())).into()),
        None => {
            eprintln!("vmrun: no VM is running");
            Ok(ExitCode::NotRunning)
        }
    }
}

fn title(report: &Report) -> String {
    let count = report.vms.len();
    format!(
        "vmrun top: {count} VM{}, every 1 s, q quits",
        if count == 1 { "" } else { "s" }
    )
}

pub(super) fn top(
    app: &App,
    name: Option<&str>,
    json: bool,
    once: bool,
) -> Result<ExitCode, CliError> {
    let mut watched = targets(app, name)?;
    if watched.is_empty() {
        return nothing_runs(name);
    }
    let terminal = std::io::stdout().is_terminal();
    if !json && !once && !terminal {
        return Err(CliError::Usage(
            "`vmrun top` draws on a terminal; for a pipe or a file use --json (one object per \
             second) or --once"
                .into(),
        ));
    }
    let mut monitor = Monitor::new(Probe::new(app.sysroot.clone(), true));
    monitor.tick(&watched);
    if !json && !once {
        return live(app, name, monitor, watched);
    }
    let mut next = Instant::now() + EVERY;
    loop {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += EVERY;
        if !once {
            watched = targets(app, None)?
                .into_iter()
                .filter(|t| name.is_none() || watched.iter().any(|w| w.pid == t.pid))
                .collect();
            if watched.is_empty() {
                return nothing_runs(name);
            }
        }
        let Some(report) = monitor.tick(&watched) else {
            continue;
        };
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer(&mut out, &report).map_err(std::io::Error::from)?;
            writeln!(out)?;
        } else {
            let width = terminal::size()
                .ok()
                .filter(|_| terminal)
                .map_or(120, |(w, _)| w);
            let height = ui::height(&report, width);
            let text = ui::render_text(&report, &monitor.history, &title(&report), width, height);
            write!(out, "{text}")?;
        }
        out.flush()?;
        if once {
            return Ok(ExitCode::Ok);
        }
    }
}

/// Puts the terminal back however the view ends.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Self> {
        terminal::enable_raw_mode()?;
        let screen = Screen;
        crossterm::execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            crossterm::cursor::Hide
        )?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = crossterm::execute!(
            std::io::stdout(),
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
        let _ = terminal::disable_raw_mode();
    }
}

fn live(
    app: &App,
    name: Option<&str>,
    mut monitor: Monitor,
    mut watched: Vec<VmTarget>,
) -> Result<ExitCode, CliError> {
    let _screen = Screen::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    let mut report = Report::default();
    let mut heading = String::from("vmrun top: sampling for one second, q quits");
    let mut next = Instant::now() + EVERY;
    loop {
        terminal.draw(|frame| ui::draw(frame, &report, &monitor.history, &heading))?;
        // Keys and resizes until the next sample is due.
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !event::poll(left)? {
                continue;
            }
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    let control_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || control_c {
                        return Ok(ExitCode::Ok);
                    }
                }
                Event::Resize(..) => {
                    terminal.draw(|frame| ui::draw(frame, &report, &monitor.history, &heading))?;
                }
                _ => {}
            }
        }
        next += EVERY;
        let now: Vec<VmTarget> = targets(app, None)?;
        watched = match name {
            Some(_) => now
                .into_iter()
                .filter(|t| watched.iter().any(|w| w.pid == t.pid))
                .collect(),
            None => now,
        };
        if let Some(sampled) = monitor.tick(&watched) {
            report = sampled;
            heading = title(&report);
            if name.is_some() && watched.is_empty() {
                heading = format!("vmrun top: {} stopped, q quits", name.unwrap_or_default());
            }
        }
    }
}
