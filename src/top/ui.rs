//! Drawing one report with ratatui: a title line, then per VM its summary line, the vCPU table
//! (first, so that a small terminal still shows it), QEMU's other threads and the findings.
//! Narrow terminals drop the table's less important columns, never the vCPU, CPU and delay.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::bar;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;

use super::report::{Report, VcpuReport, VmReport};
use super::{History, HISTORY_SECONDS};

/// A table column: its header, width, and how a vCPU fills it.
struct Column {
    header: &'static str,
    width: u16,
    cell: fn(&VcpuReport) -> String,
}

fn one(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.1}"))
}

fn whole(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.0}"))
}

fn sched(v: &VcpuReport) -> String {
    match v.policy.as_str() {
        "other" => "other".into(),
        policy => format!("{policy} {}", v.priority),
    }
}

fn top_irq(v: &VcpuReport) -> String {
    v.interrupts.first().map_or("-".into(), |r| {
        format!("{} {:.0}", short_source(&r.source, &r.name), r.per_s)
    })
}

fn short_source(source: &str, name: &str) -> String {
    if source.chars().all(|c| c.is_ascii_digit()) {
        format!("{source} {name}")
    } else {
        source.to_string()
    }
}

const VCPU: Column = Column {
    header: "vCPU",
    width: 4,
    cell: |v| v.index.to_string(),
};
const CPU: Column = Column {
    header: "CPU",
    width: 4,
    cell: |v| v.cpu.to_string(),
};
const DELAY: Column = Column {
    header: "wait ms/s",
    width: 9,
    cell: |v| one(v.run_delay_ms_per_s),
};
const SCHED: Column = Column {
    header: "sched",
    width: 6,
    cell: sched,
};
const INVOLUNTARY: Column = Column {
    header: "preempt/s",
    width: 9,
    cell: |v| whole(v.involuntary_switches_per_s),
};
const MHZ: Column = Column {
    header: "MHz",
    width: 5,
    cell: |v| whole(v.cpu_mhz),
};
const GOVERNOR: Column = Column {
    header: "governor",
    width: 11,
    cell: |v| v.governor.clone().unwrap_or_else(|| "-".into()),
};
const IRQS: Column = Column {
    header: "IRQ/s",
    width: 7,
    cell: |v| format!("{:.0}", v.interrupts_per_s),
};
const TOP_IRQ: Column = Column {
    header: "busiest IRQ /s",
    width: 22,
    cell: top_irq,
};
const SOFTIRQS: Column = Column {
    header: "softirq/s",
    width: 9,
    cell: |v| format!("{:.0}", v.softirqs_per_s),
};

/// Width of the sparkline column when there is room for one.
const SPARK_MIN: u16 = 10;

/// The columns that fit `width`, in display order, and the sparkline's width (0: none).
fn columns(width: u16) -> (Vec<&'static Column>, u16) {
    // By importance; the sparkline comes right after the scheduling column.
    let by_importance: [&'static Column; 10] = [
        &VCPU,
        &CPU,
        &DELAY,
        &SCHED,
        &INVOLUNTARY,
        &MHZ,
        &IRQS,
        &SOFTIRQS,
        &GOVERNOR,
        &TOP_IRQ,
    ];
    let spacing = 1;
    let mut used = 0u16;
    let mut chosen = Vec::new();
    let mut spark = 0;
    for (rank, column) in by_importance.iter().enumerate() {
        if rank == 4 && width >= used + SPARK_MIN + spacing {
            spark = SPARK_MIN;
            used += SPARK_MIN + spacing;
        }
        if used + column.width + spacing <= width || rank < 3 {
            chosen.push(*column);
            used += column.width + spacing;
        }
    }
    if spark > 0 {
        spark += width
            .saturating_sub(used)
            .min(HISTORY_SECONDS as u16 - SPARK_MIN);
    }
    let order = |c: &&Column| {
        by_importance
            .iter()
            .position(|o| std::ptr::eq(*o, *c))
            .unwrap_or(0)
    };
    chosen.sort_by_key(order);
    (chosen, spark)
}

/// The last `width` seconds as bars scaled to the largest value, at least 100 ms/s.
pub fn sparkline(values: &[f64], width: usize) -> String {
    let levels = [
        bar::NINE_LEVELS.empty,
        bar::NINE_LEVELS.one_eighth,
        bar::NINE_LEVELS.one_quarter,
        bar::NINE_LEVELS.three_eighths,
        bar::NINE_LEVELS.half,
        bar::NINE_LEVELS.five_eighths,
        bar::NINE_LEVELS.three_quarters,
        bar::NINE_LEVELS.seven_eighths,
        bar::NINE_LEVELS.full,
    ];
    let shown = &values[values.len().saturating_sub(width)..];
    let top = shown.iter().copied().fold(100.0_f64, f64::max);
    let mut line = " ".repeat(width - shown.len());
    for value in shown {
        let level = ((value / top) * 8.0).round().clamp(0.0, 8.0) as usize;
        // A value above zero always shows.
        let level = if *value > 0.5 && level == 0 { 1 } else { level };
        line.push_str(levels[level]);
    }
    line
}

fn delay_style(delay: Option<f64>) -> Style {
    match delay {
        Some(d) if d >= 100.0 => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        Some(d) if d >= super::report::DELAY_FINDING_MS => Style::default().fg(Color::Yellow),
        _ => Style::default(),
    }
}

fn vm_summary(vm: &VmReport) -> String {
    let mib = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    let mut line = format!(
        "{} pid {} {} RAM {} MiB RSS {} MiB huge {} MiB",
        vm.name,
        vm.pid,
        vm.accel,
        mib(vm.memory.guest_mib),
        mib(vm.memory.rss_mib),
        mib(vm.memory.hugepages_mib),
    );
    match &vm.kvm.unavailable {
        Some(why) => line.push_str(&format!("; KVM stats: {why}")),
        None => line.push_str(&format!(
            "; KVM exits {}/s halt polls {}/s ({} % ok)",
            whole(vm.kvm.exits_per_s),
            whole(vm.kvm.halt_polls_per_s),
            whole(vm.kvm.halt_poll_success_percent)
        )),
    }
    line
}

fn other_threads(vm: &VmReport) -> String {
    let mut line = String::from("other threads:");
    for thread in vm.other_threads.iter().take(4) {
        line.push_str(&format!(
            " {} {}% on {} ({});",
            thread.name,
            whole(thread.cpu_percent),
            thread.cpu,
            thread.affinity
        ));
    }
    if vm.other_threads.len() > 4 {
        line.push_str(&format!(" {} more", vm.other_threads.len() - 4));
    }
    line.trim_end_matches(';').to_string()
}

/// `text` broken at spaces into lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split(' ') {
        let needed =
            current.chars().count() + usize::from(!current.is_empty()) + word.chars().count();
        if !current.is_empty() && needed > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// Lines of everything below the vCPU tables (findings, other threads) of one VM, wrapped.
fn vm_notes(vm: &VmReport, width: u16) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let finding = Style::default()
        .fg(Color::Yellow)
        .add_modifier(Modifier::BOLD);
    for text in &vm.findings {
        for (n, part) in wrap(text, usize::from(width).saturating_sub(2))
            .into_iter()
            .enumerate()
        {
            let mark = if n == 0 { "! " } else { "  " };
            lines.push(Line::from(Span::styled(format!("{mark}{part}"), finding)));
        }
    }
    for part in wrap(&other_threads(vm), usize::from(width)) {
        lines.push(Line::from(part));
    }
    lines
}

/// Draws `report` over the whole frame.
pub fn draw(frame: &mut Frame, report: &Report, history: &History, title: &str) {
    let area = frame.area();
    let mut y = area.y;
    let bottom = area.y + area.height;
    let put = |frame: &mut Frame, lines: Vec<Line<'static>>, y: &mut u16| {
        for line in lines {
            if *y >= bottom {
                return;
            }
            frame.render_widget(Paragraph::new(line), Rect::new(area.x, *y, area.width, 1));
            *y += 1;
        }
    };
    let title_style = Style::default().add_modifier(Modifier::REVERSED);
    put(
        frame,
        vec![Line::from(Span::styled(
            format!("{title:<width$}", width = usize::from(area.width)),
            title_style,
        ))],
        &mut y,
    );
    if report.vms.is_empty() {
        put(frame, vec![Line::from("no VM is running")], &mut y);
    }
    let (columns, spark) = columns(area.width);
    for vm in &report.vms {
        let summary = wrap(&vm_summary(vm), usize::from(area.width))
            .into_iter()
            .map(|l| {
                Line::from(Span::styled(
                    l,
                    Style::default().add_modifier(Modifier::BOLD),
                ))
            })
            .collect();
        put(frame, summary, &mut y);
        // The table: header and one row per vCPU, clipped at the bottom of the screen.
        let rows_fit = bottom.saturating_sub(y);
        let height = (vm.vcpus.len() as u16 + 1).min(rows_fit);
        if height > 0 {
            let mut widths: Vec<Constraint> = columns
                .iter()
                .map(|c| Constraint::Length(c.width))
                .collect();
            let mut header: Vec<String> = columns.iter().map(|c| c.header.to_string()).collect();
            let spark_at = columns.len().min(4);
            if spark > 0 {
                widths.insert(spark_at, Constraint::Length(spark));
                header.insert(spark_at, format!("last {spark} s"));
            }
            let rows = vm.vcpus.iter().map(|vcpu| {
                let mut cells: Vec<String> = columns.iter().map(|c| (c.cell)(vcpu)).collect();
                if spark > 0 {
                    let values: Vec<f64> = history
                        .of(vm.pid, vcpu.index)
                        .map(|v| v.iter().copied().collect())
                        .unwrap_or_default();
                    cells.insert(spark_at, sparkline(&values, usize::from(spark)));
                }
                Row::new(cells).style(delay_style(vcpu.run_delay_ms_per_s))
            });
            let table = Table::new(rows, widths)
                .header(Row::new(header).style(Style::default().add_modifier(Modifier::UNDERLINED)))
                .column_spacing(1);
            frame.render_widget(table, Rect::new(area.x, y, area.width, height));
            y += height;
        }
        put(frame, vm_notes(vm, area.width), &mut y);
    }
    for line in &report.unreadable {
        let lines = wrap(&format!("cannot read {line}"), usize::from(area.width))
            .into_iter()
            .map(|l| Line::from(Span::styled(l, Style::default().fg(Color::DarkGray))))
            .collect();
        put(frame, lines, &mut y);
    }
}

/// How many lines `report` needs at `width` (for `--once` without a terminal).
pub fn height(report: &Report, width: u16) -> u16 {
    let mut lines = 1 + usize::from(report.vms.is_empty());
    for vm in &report.vms {
        lines += wrap(&vm_summary(vm), usize::from(width)).len();
        lines += vm.vcpus.len() + 1;
        lines += vm_notes(vm, width).len();
    }
    for line in &report.unreadable {
        lines += wrap(&format!("cannot read {line}"), usize::from(width)).len();
    }
    lines.min(u16::MAX as usize) as u16
}

/// The screen as plain text (no colours), each line without trailing spaces.
pub fn render_text(
    report: &Report,
    history: &History,
    title: &str,
    width: u16,
    height: u16,
) -> String {
    let backend = ratatui::backend::TestBackend::new(width, height);
    let Ok(mut terminal) = ratatui::Terminal::new(backend) else {
        return String::new();
    };
    if terminal
        .draw(|frame| draw(frame, report, history, title))
        .is_err()
    {
        return String::new();
    }
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for row in 0..buffer.area.height {
        let line: String = (0..buffer.area.width)
            .map(|x| buffer[(x, row)].symbol())
            .collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}
