//! The terminal table, the JSON file and the SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::machine::Machine;
use crate::stats::Summary;
use crate::workloads::{STEPS, Sizes, Step};

/// Everything a run produced; serialised as the JSON file.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) tool: &'static str,
    pub(crate) version: &'static str,
    pub(crate) quick: bool,
    pub(crate) machine: Machine,
    pub(crate) dir: String,
    pub(crate) dir_mount: String,
    pub(crate) dir_fs: String,
    /// Sizes of the targets that do not fsync on every commit.
    pub(crate) sizes: Sizes,
    /// Sizes of the targets that fsync on every commit (fewer single-op writes).
    pub(crate) fsync_sizes: Sizes,
    pub(crate) targets: Vec<TargetInfo>,
    /// Why a target or step was not run.
    pub(crate) skipped: Vec<String>,
    /// Figures by target name, then step id.
    pub(crate) figures: BTreeMap<String, BTreeMap<String, Summary>>,
    pub(crate) total_secs: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct TargetInfo {
    pub(crate) name: String,
    pub(crate) ceiling_of: Option<String>,
    pub(crate) durability: String,
    pub(crate) store: String,
}

impl Results {
    fn get(&self, target: &str, step: &str) -> Option<&Summary> {
        self.figures.get(target)?.get(step)
    }

    fn steps(&self) -> impl Iterator<Item = &'static Step> {
        STEPS
            .iter()
            .filter(|s| self.figures.values().any(|f| f.contains_key(s.id)))
    }

    /// The best backend (not ceiling) of a step by ops/s.
    fn best(&self, step: &str) -> Option<&str> {
        self.targets
            .iter()
            .filter(|t| t.ceiling_of.is_none())
            .filter_map(|t| {
                self.get(&t.name, step)
                    .map(|s| (t.name.as_str(), s.ops_per_sec))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(n, _)| n)
    }
}

/// A count per second, short: 950, 12.3k, 1.25M.
pub(crate) fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A latency, short: 850ns, 12µs, 3.4ms, 1.2s.
pub(crate) fn latency(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e4 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e6 {
        format!("{:.0}µs", ns / 1e3)
    } else if ns < 1e7 {
        format!("{:.1}ms", ns / 1e6)
    } else if ns < 1e9 {
        format!("{:.0}ms", ns / 1e6)
    } else {
        format!("{:.1}s", ns / 1e9)
    }
}

const LABEL: usize = 50;
const CELL: usize = 15;

/// The table: a row per step (ops/s, then MB/s where bytes move, then p50/p99),
/// a column per target; `*` marks the best backend of each row.
pub(crate) fn table(r: &Results) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<LABEL$}", "workload (median of runs)");
    for t in &r.targets {
        let _ = write!(out, "{:>CELL$}", t.name);
    }
    out.push('\n');
    let width = LABEL + CELL * r.targets.len();
    out.push_str(&"-".repeat(width));
    out.push('\n');
    let threads = r.sizes.threads.to_string();
    for step in r.steps() {
        let best = r.best(step.id);
        let label = step.label.replace('N', &threads);
        let first = r.targets.iter().find_map(|t| r.get(&t.name, step.id));
        let mut counts: Vec<u64> = r
            .targets
            .iter()
            .filter_map(|t| r.get(&t.name, step.id))
            .map(|s| s.ops)
            .collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts.dedup();
        let counts: Vec<String> = counts.iter().map(u64::to_string).collect();
        let _ = write!(
            out,
            "{:<LABEL$}",
            format!("{label} ({} {})", counts.join("|"), step.unit)
        );
        for t in &r.targets {
            let cell = match r.get(&t.name, step.id) {
                Some(s) => {
                    let mark = if best == Some(t.name.as_str()) {
                        "*"
                    } else {
                        " "
                    };
                    format!("{}/s{mark}", rate(s.ops_per_sec))
                }
                None => "- ".to_owned(),
            };
            let _ = write!(out, "{cell:>CELL$}");
        }
        out.push('\n');
        if first.is_some_and(|s| s.bytes > 0 && s.bytes / s.ops.max(1) >= 1024) {
            let _ = write!(out, "{:<LABEL$}", "    MB/s");
            for t in &r.targets {
                let cell = r
                    .get(&t.name, step.id)
                    .map_or("- ".to_owned(), |s| format!("{:.1} ", s.mb_per_sec));
                let _ = write!(out, "{cell:>CELL$}");
            }
            out.push('\n');
        }
        let what = if step.id.starts_with("log.scan") {
            "    p50/p99 per scan call"
        } else {
            "    p50/p99 per op"
        };
        let _ = write!(out, "{what:<LABEL$}");
        for t in &r.targets {
            let cell = r.get(&t.name, step.id).map_or("- ".to_owned(), |s| {
                format!("{}/{} ", latency(s.p50_ns), latency(s.p99_ns))
            });
            let _ = write!(out, "{cell:>CELL$}");
        }
        out.push('\n');
    }
    out
}

/// Each backend's ops/s as a fraction of its raw-engine ceiling, per step.
pub(crate) fn ratios(r: &Results) -> String {
    let pairs: Vec<(&str, &str)> = r
        .targets
        .iter()
        .filter_map(|c| c.ceiling_of.as_deref().map(|of| (of, c.name.as_str())))
        .filter(|(of, _)| r.figures.contains_key(*of))
        .collect();
    if pairs.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = write!(out, "{:<LABEL$}", "backend / its raw-engine ceiling");
    for (of, c) in &pairs {
        // `memory/raw`, `memory/naive`: a backend may have more than one.
        let short = if c.starts_with("raw-") {
            "raw"
        } else {
            c.strip_suffix("-map").unwrap_or(c)
        };
        let _ = write!(out, "{:>CELL$}", format!("{of}/{short}"));
    }
    out.push('\n');
    out.push_str(&"-".repeat(LABEL + CELL * pairs.len()));
    out.push('\n');
    let threads = r.sizes.threads.to_string();
    for step in r.steps() {
        let _ = write!(out, "{:<LABEL$}", step.label.replace('N', &threads));
        for (of, c) in &pairs {
            let cell = match (r.get(of, step.id), r.get(c, step.id)) {
                (Some(b), Some(c)) if c.ops_per_sec > 0.0 => {
                    format!("{:.2}x ", b.ops_per_sec / c.ops_per_sec)
                }
                _ => "- ".to_owned(),
            };
            let _ = write!(out, "{cell:>CELL$}");
        }
        out.push('\n');
    }
    out
}

/// The ratio of every backend to its ceiling, per step, for the JSON file.
pub(crate) fn ratio_map(r: &Results) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for c in &r.targets {
        let Some(of) = c.ceiling_of.as_deref() else {
            continue;
        };
        let mut m = BTreeMap::new();
        for step in STEPS {
            if let (Some(b), Some(cs)) = (r.get(of, step.id), r.get(&c.name, step.id))
                && cs.ops_per_sec > 0.0
            {
                m.insert(step.id.to_owned(), b.ops_per_sec / cs.ops_per_sec);
            }
        }
        if !m.is_empty() {
            out.insert(format!("{of}/{}", c.name), m);
        }
    }
    out
}

/// A power of ten, short: 1, 10, 100, 1k ... 100M.
pub(crate) fn decade(d: i32) -> String {
    let suffix = ["", "k", "M", "G", "T"];
    let (group, rest) = (d.div_euclid(3), d.rem_euclid(3));
    match suffix.get(group as usize) {
        Some(s) if d >= 0 => format!("{}{s}", 10_i64.pow(rest as u32)),
        _ => format!("1e{d}"),
    }
}

const COLORS: [(&str, &str); 4] = [
    ("memory", "#4e79a7"),
    ("sqlite", "#f28e2b"),
    ("redb", "#59a14f"),
    ("postgres", "#e15759"),
];

pub(crate) fn color(target: &str, ceiling_of: Option<&str>) -> &'static str {
    let base = ceiling_of.unwrap_or(target);
    COLORS
        .iter()
        .find(|(n, _)| *n == base)
        .map_or("#999999", |(_, c)| c)
}

/// The start of an SVG document `width` by `height`: white ground, `title` on top.
pub(crate) fn svg_open(width: f64, height: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="13" font-weight="bold">{}</text>"#,
        esc(title)
    );
    s
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar chart of ops/s per step, log scale; each backend's bar is
/// followed by its ceiling's, paler.
#[allow(clippy::many_single_char_names)] // coordinates
pub(crate) fn svg(r: &Results) -> String {
    // Backends each followed by their ceiling.
    let mut order: Vec<&TargetInfo> = Vec::new();
    for b in r.targets.iter().filter(|t| t.ceiling_of.is_none()) {
        order.push(b);
        order.extend(
            r.targets
                .iter()
                .filter(|c| c.ceiling_of.as_deref() == Some(b.name.as_str())),
        );
    }
    let steps: Vec<&Step> = r.steps().collect();
    let values = steps
        .iter()
        .flat_map(|s| order.iter().filter_map(|t| r.get(&t.name, s.id)));
    let max = values.map(|s| s.ops_per_sec).fold(1.0_f64, f64::max);
    let lo = 0.0_f64; // 10^0 = 1 op/s
    let hi = max.log10().ceil().max(1.0);
    let (left, plot, bar, gap, group_gap, top) = (300.0, 560.0, 9.0, 1.0, 14.0, 70.0);
    let group_h = order.len() as f64 * (bar + gap) + group_gap;
    let height = top + steps.len() as f64 * group_h + 40.0;
    let width = left + plot + 90.0;
    let x = |v: f64| left + plot * ((v.max(1.0).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);

    let title = format!(
        "vgi-storage-bench{}: ops/s (entries/s, items/s), median of {} runs, log scale; {} ({} cores), stores on {} at {}",
        if r.quick { " --quick" } else { "" },
        r.sizes.runs,
        r.machine.cpu,
        r.machine.cores,
        r.dir_fs,
        r.dir_mount
    );
    let mut s = svg_open(width, height, &title);
    // Legend.
    let mut lx = 10.0;
    for t in &order {
        let opacity = if t.ceiling_of.is_some() { "0.4" } else { "1" };
        let c = color(&t.name, t.ceiling_of.as_deref());
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="30" width="12" height="10" fill="{c}" fill-opacity="{opacity}"/><text x="{}" y="39">{}</text>"#,
            lx + 16.0,
            esc(&t.name)
        );
        lx += 24.0 + 7.0 * t.name.len() as f64;
    }
    // Decade grid.
    let grid_bottom = height - 30.0;
    for d in 0..=(hi as i32) {
        let gx = x(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{}" x2="{gx:.1}" y2="{grid_bottom}" stroke="#ddd"/><text x="{gx:.1}" y="{}" text-anchor="middle" fill="#666">{}</text>"##,
            top - 12.0,
            grid_bottom + 14.0,
            decade(d)
        );
    }
    let threads = r.sizes.threads.to_string();
    for (i, step) in steps.iter().enumerate() {
        let gy = top + i as f64 * group_h;
        let label = step.label.replace('N', &threads);
        let mid = gy + (order.len() as f64 * (bar + gap)) / 2.0 + 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{mid:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            esc(&label)
        );
        for (j, t) in order.iter().enumerate() {
            let by = gy + j as f64 * (bar + gap);
            let Some(v) = r.get(&t.name, step.id) else {
                continue;
            };
            let opacity = if t.ceiling_of.is_some() { "0.4" } else { "1" };
            let c = color(&t.name, t.ceiling_of.as_deref());
            let w = x(v.ops_per_sec) - left;
            let _ = writeln!(
                s,
                r##"<rect x="{left}" y="{by:.1}" width="{w:.1}" height="{bar}" fill="{c}" fill-opacity="{opacity}"><title>{} {}: {}/s</title></rect><text x="{:.1}" y="{:.1}" font-size="8" fill="#333">{}</text>"##,
                esc(&t.name),
                esc(&label),
                rate(v.ops_per_sec),
                left + w + 3.0,
                by + bar - 1.0,
                rate(v.ops_per_sec)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers() {
        assert_eq!(rate(950.0), "950");
        assert_eq!(rate(12_345.0), "12k");
        assert_eq!(rate(1_250_000.0), "1.25M");
        assert_eq!(latency(850), "850ns");
        assert_eq!(latency(3_400_000), "3.4ms");
        assert_eq!(decade(0), "1");
        assert_eq!(decade(4), "10k");
        assert_eq!(decade(8), "100M");
    }
}
