//! The `--scale` chart: log-log panels of ns/op against size, one line per
//! target, one panel per operation; a second set of panels against threads.
//! Same colours and look as the runner's bar chart (`report::svg`).

use std::fmt::Write as _;

use crate::report::{color, esc, latency, svg_open};
use crate::scale::{Axis, OPS, ScaleResults, short};

const COLS: usize = 3;
const PANEL_W: f64 = 330.0;
const PANEL_H: f64 = 230.0;
/// Inside a panel: room for the y labels, the title and the x labels.
const PAD_L: f64 = 58.0;
const PAD_R: f64 = 14.0;
const PAD_T: f64 = 28.0;
const PAD_B: f64 = 34.0;

/// One panel's place and scales.
struct Panel {
    x0: f64,
    y0: f64,
    lx: (f64, f64),
    ly: (f64, f64),
}

impl Panel {
    fn px(&self, x: f64) -> f64 {
        let w = PANEL_W - PAD_L - PAD_R;
        self.x0 + PAD_L + w * (x.log10() - self.lx.0) / (self.lx.1 - self.lx.0)
    }

    fn py(&self, ns: f64) -> f64 {
        let h = PANEL_H - PAD_T - PAD_B;
        let t = (ns.max(1.0).log10() - self.ly.0) / (self.ly.1 - self.ly.0);
        self.y0 + PAD_T + h * (1.0 - t.clamp(0.0, 1.0))
    }
}

/// The whole SVG.
#[allow(clippy::too_many_lines)] // one drawing, top to bottom
pub(crate) fn svg(r: &ScaleResults) -> String {
    let size_ops: Vec<_> = OPS.iter().map(|o| (o, o.axis)).collect();
    let thread_ops: Vec<_> = OPS
        .iter()
        .filter(|o| o.threaded)
        .map(|o| (o, Axis::Threads))
        .collect();
    let rows_of = |n: usize| n.div_ceil(COLS) as f64;
    let top = 62.0;
    let section_head = 22.0;
    let h1 = rows_of(size_ops.len()) * PANEL_H;
    let h2 = rows_of(thread_ops.len()) * PANEL_H;
    let width = COLS as f64 * PANEL_W + 20.0;
    let height = top + section_head + h1 + section_head + h2 + 30.0;

    let title = format!(
        "vgi-storage-bench --scale{}: cost per op, log-log ({} runs); {} ({} cores), stores on {} at {}",
        if r.quick { " --quick" } else { "" },
        r.plan.runs,
        r.machine.cpu,
        r.machine.cores,
        r.dir_fs,
        r.dir_mount
    );
    let mut s = svg_open(width, height, &title);
    // Legend: backends solid, ceilings dashed and paler.
    let mut lx = 10.0;
    for t in &r.targets {
        let c = color(&t.name, t.ceiling_of.as_deref());
        let (dash, opacity) = style(t.ceiling_of.is_some());
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="36" x2="{}" y2="36" stroke="{c}" stroke-width="2" stroke-opacity="{opacity}"{dash}/><text x="{}" y="40">{}</text>"#,
            lx + 20.0,
            lx + 24.0,
            esc(&t.name)
        );
        lx += 32.0 + 7.0 * t.name.len() as f64;
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="54" fill="#666">stores grown untimed with batched writes; a fixed sample of single calls timed at each size; "bends" = a step with log-log slope above 0.15 and cost up more than 1.25x (1.5x for threads)</text>"##
    );

    let mut y = top;
    for (heading, ops) in [
        (
            "p50 per call against store size (entries; scopes for the last two, gc per scope removed)",
            &size_ops,
        ),
        (
            "wall time per op against threads, on the stores at their largest size",
            &thread_ops,
        ),
    ] {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{:.1}" font-size="12" font-weight="bold">{}</text>"#,
            y + 15.0,
            esc(heading)
        );
        y += section_head;
        for (i, (op, axis)) in ops.iter().enumerate() {
            let x0 = 10.0 + (i % COLS) as f64 * PANEL_W;
            let y0 = y + (i / COLS) as f64 * PANEL_H;
            panel(&mut s, r, op.id, op.label, *axis, x0, y0);
        }
        y += rows_of(ops.len()) * PANEL_H;
    }
    s.push_str("</svg>\n");
    s
}

fn style(ceiling: bool) -> (&'static str, &'static str) {
    if ceiling {
        (r#" stroke-dasharray="5,3""#, "0.55")
    } else {
        ("", "1")
    }
}

#[allow(clippy::too_many_arguments, clippy::too_many_lines)] // one panel, top to bottom
fn panel(s: &mut String, r: &ScaleResults, op: &str, label: &str, axis: Axis, x0: f64, y0: f64) {
    let xs: &[usize] = match axis {
        Axis::Entries => &r.plan.entries,
        Axis::Scopes => &r.plan.scopes,
        Axis::Threads => &r.plan.threads,
    };
    let (xmin, xmax) = (
        xs.iter().copied().min().unwrap_or(1).max(1) as f64,
        xs.iter().copied().max().unwrap_or(1).max(1) as f64,
    );
    let mut lx = (xmin.log10(), xmax.log10());
    if lx.1 - lx.0 < 1e-9 {
        lx = (lx.0 - 0.5, lx.1 + 0.5);
    }
    // A little room either side of the first and last size.
    let margin = (lx.1 - lx.0) * 0.06;
    lx = (lx.0 - margin, lx.1 + margin);
    let values: Vec<f64> = r
        .rows
        .iter()
        .filter(|row| row.op == op && row.axis == axis && row.cost_ns > 0.0)
        .map(|row| row.cost_ns)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0_f64, f64::max);
    let ly = if values.is_empty() {
        (1.0, 4.0)
    } else {
        let (a, b) = (lo.log10().floor(), hi.log10().ceil());
        (a, if b > a { b } else { a + 1.0 })
    };
    let p = Panel { x0, y0, lx, ly };
    let (left, right) = (x0 + PAD_L, x0 + PANEL_W - PAD_R);
    let (ptop, pbottom) = (y0 + PAD_T, y0 + PANEL_H - PAD_B);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{:.1}" font-weight="bold">{}</text>"#,
        y0 + 16.0,
        esc(label)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{ptop}" width="{:.1}" height="{:.1}" fill="none" stroke="#bbb"/>"##,
        right - left,
        pbottom - ptop
    );
    // Decade lines of the y axis, labelled as latencies.
    for d in (ly.0 as i32)..=(ly.1 as i32) {
        let gy = p.py(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{gy:.1}" x2="{right}" y2="{gy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#666">{}</text>"##,
            left - 4.0,
            gy + 4.0,
            latency(10u64.saturating_pow(d.max(0) as u32))
        );
    }
    // Each size of the plan on the x axis.
    for &x in xs {
        let gx = p.px(x as f64);
        let text = if axis == Axis::Threads {
            format!("{x} thr")
        } else {
            short(x)
        };
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{ptop}" x2="{gx:.1}" y2="{pbottom}" stroke="#eee"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#666">{text}</text>"##,
            pbottom + 14.0
        );
    }
    let what = match axis {
        Axis::Entries => "entries",
        Axis::Scopes => "scopes",
        Axis::Threads => "threads",
    };
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666" font-size="10">{what} (log)</text>"##,
        f64::midpoint(left, right),
        pbottom + 28.0
    );
    for t in &r.targets {
        let curve = r.curve(&t.name, op, axis);
        if curve.is_empty() {
            continue;
        }
        let c = color(&t.name, t.ceiling_of.as_deref());
        let (dash, opacity) = style(t.ceiling_of.is_some());
        let points: Vec<String> = curve
            .iter()
            .map(|row| format!("{:.1},{:.1}", p.px(row.x as f64), p.py(row.cost_ns)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.8" stroke-opacity="{opacity}"{dash}/>"#,
            points.join(" ")
        );
        for row in &curve {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{c}" fill-opacity="{opacity}"><title>{} {} at {}: {} judged; {}/op wall (p50 {}, p99 {})</title></circle>"#,
                p.px(row.x as f64),
                p.py(row.cost_ns),
                esc(&t.name),
                esc(label),
                short(row.x),
                latency(row.cost_ns.round() as u64),
                latency(row.ns_per_op.round() as u64),
                latency(row.p50_ns),
                latency(row.p99_ns)
            );
        }
    }
}
