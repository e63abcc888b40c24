#![doc = include_str!("../README.md")]
// A benchmark turns counts into rates and pixels; every count is far below 2^52.
#![allow(clippy::cast_precision_loss)]

mod ceiling;
mod chart;
mod child;
mod faulty;
mod machine;
mod pg;
mod report;
mod scale;
mod stats;
mod targets;
mod worker;
mod workloads;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use vgi_storage::{ManualClock, system_clock};

use crate::report::{Results, TargetInfo};
use crate::stats::{Recorder, Sample, summarize};
use crate::targets::Target;
use crate::workloads::{ChildSpec, Sizes, Workload};

/// Any failure of a run: a store error, an I/O error, or a failed correctness check.
pub(crate) type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Return early with a formatted error.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(format!($($arg)*).into())
    };
}
pub(crate) use bail;

/// The directory holding the stores; a fresh temp dir when unset.
const DIR_VAR: &str = "VGI_BENCH_DIR";

/// Where the results go without `--out`: `bench-results` in cargo's target
/// directory, so a run never rewrites the committed figures by accident.
const DEFAULT_OUT: &str = "bench-results";

/// What `--help` says after the options.
const AFTER_HELP: &str = "\
Environment:
  VGI_BENCH_DIR  where the stores are created: a fresh temp dir inside it, removed at the
                 end (default: the system temp dir). tmpfs and a disk differ by orders of
                 magnitude for the durable backends

Results go to target/bench-results/ by default (latest.*, or scale.* with --scale). The
committed figures in bench/results/ are a deliberate copy: to update them, run the full
comparison (or --scale) with --out bench/results.";

/// Runs every workload against every compiled-in backend and its raw-engine
/// ceiling, prints a table with a column per backend, and writes every figure
/// to a JSON file and a chart to an SVG file.
#[derive(Debug, clap::Parser)]
#[command(name = "vgi-storage-bench", version, after_help = AFTER_HELP)]
struct Args {
    /// Tiny sizes (about 1/100): a smoke run of every code path, in seconds.
    /// Writes latest-quick.json and latest-quick.svg, so it never replaces the
    /// figures of a full run
    #[arg(long)]
    quick: bool,
    /// Runs of every workload per target; the table shows medians
    /// [default: 3; with --quick 2, and 1 for the columns that fsync every commit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    runs: Option<u32>,
    /// Only these targets, comma-separated: memory, sqlite, sqlite-full, redb, postgres,
    /// raw-map, raw-sqlite, raw-redb, raw-postgres; or broken-queue, a store that hands an
    /// item out twice, to see a run fail its checks
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The directory for latest.json and latest.svg (latest-quick.* with
    /// --quick), created if missing [default: target/bench-results]. Give
    /// bench/results to update the committed figures
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write the figures to this file instead of DIR/latest.json
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write the chart to this file instead of DIR/latest.svg
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// Cost curves instead of the comparison: ns per call of get, put, append,
    /// scan page, pop, scope creation and gc as the store grows (10k, 100k, 1M
    /// entries; 1k, 10k, 100k scopes) and as threads grow (1, 2, 4, 8), with a
    /// verdict per curve (flat, or where it bends). Writes scale.json and
    /// scale.svg (scale-quick.* with --quick); about 15 minutes, --quick well
    /// under one
    #[arg(long)]
    scale: bool,
    /// With --scale: leave out every size above N (entries and scopes)
    #[arg(long, value_name = "N", requires = "scale")]
    max_size: Option<usize>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = if args.first().map(String::as_str) == Some(child::SUBCOMMAND) {
        child::run(&args[1..])
    } else {
        run(&<Args as clap::Parser>::parse())
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("vgi-storage-bench: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                let _ = write!(msg, ": {s}");
                source = s.source();
            }
            eprintln!("\n{msg}");
            ExitCode::FAILURE
        }
    }
}

/// `bench-results` in cargo's target directory: the ancestor of this
/// executable that holds cargo's `CACHEDIR.TAG`, or the workspace's `target`.
fn default_out() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let target = exe
        .as_deref()
        .and_then(|exe| exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()))
        .map(Path::to_path_buf);
    target
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join(DEFAULT_OUT)
}

fn run(args: &Args) -> BenchResult<()> {
    let started = Instant::now();
    let (mut targets, mut skipped) = targets::available();
    if let Some(only) = &args.only {
        if only.iter().any(|n| n == "broken-queue") {
            targets.push(targets::broken_queue());
        }
        if let Some(bad) = only
            .iter()
            .find(|n| !targets.iter().any(|t| t.name == n.as_str()))
        {
            bail!("--only: unknown or not compiled-in target `{bad}`");
        }
        targets.retain(|t| only.iter().any(|n| n == t.name));
    }
    scale::select(&mut targets, args.scale, args.only.is_some())?;
    let mut notes = Vec::new();
    let needs_pg = |name: &str| matches!(name, "postgres" | "raw-postgres");
    if targets.iter().any(|t| needs_pg(t.name)) {
        eprintln!("starting a throwaway PostgreSQL server for the postgres columns...");
        let parent = std::env::var_os(DIR_VAR).map(PathBuf::from);
        let server = pg::start_in_bench_dir(parent.as_deref(), DIR_VAR, &mut notes)?;
        match server {
            Ok(dir) => {
                let (mount, fs) = machine::filesystem(Path::new(&dir));
                notes.push(format!(
                    "postgres:  server data in {dir} ({fs} mounted at {mount})"
                ));
            }
            Err(e) => {
                targets.retain(|t| !needs_pg(t.name));
                skipped.push(format!(
                    "postgres, raw-postgres: cannot start a throwaway server: {e}"
                ));
            }
        }
    }

    let base = store_dir()?;
    let (mount, fs) = machine::filesystem(base.path());
    let machine = machine::Machine::detect();

    notes.extend(skipped.iter().map(|s| format!("skipped:   {s}")));
    if args.scale {
        return run_scale(args, &targets, skipped, &notes, base.path(), started);
    }
    print_header(args, &targets, &notes, &machine, base.path(), &mount, &fs);
    let (figures, infos) = measure(&targets, args, base.path())?;
    let results = Results {
        tool: "vgi-storage-bench",
        version: env!("CARGO_PKG_VERSION"),
        quick: args.quick,
        machine,
        dir: base.path().display().to_string(),
        dir_mount: mount,
        dir_fs: fs,
        sizes: sizes_for_kind(args, false),
        fsync_sizes: sizes_for_kind(args, true),
        targets: infos,
        skipped,
        figures,
        total_secs: started.elapsed().as_secs_f64(),
    };
    println!("{}", report::table(&results));
    println!(
        "* best backend of the row (ceilings not counted); '-' not run (process drains need a store shared across processes)"
    );
    println!();
    println!("{}", report::ratios(&results));

    for s in &results.skipped {
        println!("skipped: {s}");
    }
    let stem = if args.quick { "latest-quick" } else { "latest" };
    let mut json = serde_json::to_value(&results)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "ratio_to_ceiling".to_owned(),
            serde_json::to_value(report::ratio_map(&results))?,
        );
    }
    write_results(
        args,
        stem,
        &serde_json::to_string_pretty(&json)?,
        &report::svg(&results),
        results.total_secs,
    )?;
    Ok(())
}

/// Write a run's figures and chart to `--json`/`--svg`, or to `STEM.json` and
/// `STEM.svg` in the output directory, and say where they went.
fn write_results(
    args: &Args,
    stem: &str,
    json: &str,
    svg: &str,
    total_secs: f64,
) -> BenchResult<()> {
    let out = args.out.clone().unwrap_or_else(default_out);
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| out.join(format!("{stem}.json")));
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| out.join(format!("{stem}.svg")));
    write_file(&json_path, json)?;
    write_file(&svg_path, svg)?;
    println!(
        "total {total_secs:.0} s; figures in {}, chart in {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

/// A fresh temp dir for the stores, inside `VGI_BENCH_DIR` when set.
fn store_dir() -> BenchResult<tempfile::TempDir> {
    Ok(match std::env::var_os(DIR_VAR) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {DIR_VAR}={}: {e}", dir.display()))?;
            tempfile::Builder::new()
                .prefix("vgi-bench-")
                .tempdir_in(&dir)?
        }
        None => tempfile::Builder::new().prefix("vgi-bench-").tempdir()?,
    })
}

/// `--scale`: grow, time, judge, print, and write `scale.json` and `scale.svg`.
fn run_scale(
    args: &Args,
    targets: &[Target],
    skipped: Vec<String>,
    notes: &[String],
    base: &Path,
    started: Instant,
) -> BenchResult<()> {
    let plan = scale::Plan::new(args.quick, args.runs, args.max_size)?;
    let (mount, fs) = machine::filesystem(base);
    let machine = machine::Machine::detect();
    print_machine(
        &format!(
            "vgi-storage-bench --scale{}",
            if args.quick { " --quick" } else { "" }
        ),
        targets,
        notes,
        &machine,
        base,
        &mount,
        &fs,
    );
    let method = scale::method(&plan);
    for line in &method {
        println!("method:    {line}");
    }
    println!();
    let (rows, verdicts, infos) = scale::measure(targets, &plan, base)?;
    let results = scale::ScaleResults {
        tool: "vgi-storage-bench",
        version: env!("CARGO_PKG_VERSION"),
        mode: "scale",
        quick: args.quick,
        machine,
        dir: base.display().to_string(),
        dir_mount: mount,
        dir_fs: fs,
        plan,
        method,
        targets: infos,
        skipped,
        rows,
        verdict_rule: scale::verdict_rule(),
        verdicts,
        total_secs: started.elapsed().as_secs_f64(),
    };
    println!(
        "{}",
        scale::table(
            &results,
            &[
                scale::Axis::Entries,
                scale::Axis::Scopes,
                scale::Axis::Threads
            ]
        )
    );
    println!("verdict rule: {}", results.verdict_rule);
    let bends: Vec<String> = results
        .verdicts
        .iter()
        .filter(|v| v.bend.is_some())
        .map(|v| format!("  {} {} ({:?}): {}", v.target, v.op, v.axis, v.text))
        .collect();
    if bends.is_empty() {
        println!("verdict: every curve stays flat or grows no faster than log n");
    } else {
        println!(
            "verdict: {} of {} curves bend:",
            bends.len(),
            results.verdicts.len()
        );
        for b in &bends {
            println!("{b}");
        }
    }
    for s in &results.skipped {
        println!("skipped: {s}");
    }
    let stem = if args.quick { "scale-quick" } else { "scale" };
    write_results(
        args,
        stem,
        &serde_json::to_string_pretty(&results)?,
        &chart::svg(&results),
        results.total_secs,
    )?;
    Ok(())
}

type Figures = BTreeMap<String, BTreeMap<String, stats::Summary>>;

/// Run every workload on every target, `runs` times each, on fresh stores under `base`.
fn measure(
    targets: &[Target],
    args: &Args,
    base: &Path,
) -> BenchResult<(Figures, Vec<TargetInfo>)> {
    let sizes_for = |t: &Target| sizes_for_kind(args, t.fsync_per_commit);
    let total: usize = targets
        .iter()
        .map(|t| Workload::ALL.len() * sizes_for(t).runs)
        .sum();
    let mut done = 0;
    let mut samples: BTreeMap<String, BTreeMap<&'static str, Vec<Sample>>> = BTreeMap::new();
    let mut store_names: BTreeMap<&str, String> = BTreeMap::new();
    let tty = std::io::stderr().is_terminal();
    // Run by run, each run taking the targets in a rotated order, so drift in
    // the machine (other load, page cache, allocator, disk) is spread over all
    // columns instead of landing on whichever runs first.
    let max_runs = targets.iter().map(|t| sizes_for(t).runs).max().unwrap_or(0);
    for run in 1..=max_runs {
        for i in 0..targets.len() {
            let target = &targets[(i + run - 1) % targets.len()];
            let sizes = sizes_for(target);
            if run > sizes.runs {
                continue;
            }
            let store_name = store_names.entry(target.name).or_default();
            for workload in Workload::ALL {
                done += 1;
                progress(tty, done, total, target, workload, run, sizes.runs);
                let dir = tempfile::Builder::new()
                    .prefix(target.name)
                    .tempdir_in(base)?;
                let rec = run_one(target, workload, &sizes, dir.path(), store_name);
                pg::drop_store(dir.path());
                let rec = rec.map_err(|e| {
                    let workload = workload.name();
                    format!("{}, {workload} workload, run {run}: {e}", target.name)
                })?;
                let per_target = samples.entry(target.name.to_owned()).or_default();
                for (step, sample) in rec.steps {
                    per_target.entry(step).or_default().push(sample);
                }
            }
        }
    }
    let infos = targets
        .iter()
        .map(|target| TargetInfo {
            name: target.name.to_owned(),
            ceiling_of: target.ceiling_of.map(str::to_owned),
            durability: target.durability.to_owned(),
            store: store_names.remove(target.name).unwrap_or_default(),
        })
        .collect();
    if tty {
        eprintln!();
    }

    let figures = samples
        .into_iter()
        .map(|(t, steps)| {
            (
                t,
                steps
                    .into_iter()
                    .map(|(s, v)| (s.to_owned(), summarize(&v)))
                    .collect(),
            )
        })
        .collect();
    Ok((figures, infos))
}

fn print_header(
    args: &Args,
    targets: &[Target],
    notes: &[String],
    machine: &machine::Machine,
    base: &Path,
    mount: &str,
    fs: &str,
) {
    print_machine(
        &format!(
            "vgi-storage-bench{}",
            if args.quick { " --quick" } else { "" }
        ),
        targets,
        notes,
        machine,
        base,
        mount,
        fs,
    );
    let fast = targets
        .iter()
        .filter(|t| !t.fsync_per_commit)
        .map(|t| t.name)
        .collect::<Vec<_>>();
    let slow = targets
        .iter()
        .filter(|t| t.fsync_per_commit)
        .map(|t| t.name)
        .collect::<Vec<_>>();
    for (names, fsync) in [(fast, false), (slow, true)] {
        if !names.is_empty() {
            println!(
                "sizes:     {}: {}",
                names.join(", "),
                describe_sizes(&sizes_for_kind(args, fsync))
            );
        }
    }
    println!();
}

/// The header both modes print: the title, the machine, the directory, each
/// target's durability and the notes.
fn print_machine(
    title: &str,
    targets: &[Target],
    notes: &[String],
    machine: &machine::Machine,
    base: &Path,
    mount: &str,
    fs: &str,
) {
    println!("{title}");
    println!(
        "machine:   {} ({} cores, {:.1} GiB memory, {})",
        machine.cpu, machine.cores, machine.memory_gib, machine.os
    );
    let tmpfs = if fs == "tmpfs" {
        "tmpfs: memory, fsync is free"
    } else {
        "not tmpfs: fsync reaches the device"
    };
    println!(
        "directory: {} ({fs} mounted at {mount}; {tmpfs}; set {DIR_VAR} to choose)",
        base.display()
    );
    println!("durability:");
    for t in targets {
        println!("  {:<11} {}", t.name, t.durability);
    }
    for note in notes {
        println!("{note}");
    }
}

fn sizes_for_kind(args: &Args, fsync_per_commit: bool) -> Sizes {
    let mut s = Sizes::for_target(args.quick, fsync_per_commit);
    if let Some(runs) = args.runs {
        s.runs = runs as usize;
    }
    s
}

fn describe_sizes(s: &Sizes) -> String {
    format!(
        "kv {} keys x 1 KiB, hot {} keys x {} rounds, CAS {} increments, log {} x 64 KiB (pages of {}), \
         queue {} items, {} scopes; {} threads; {} runs",
        s.kv_keys,
        s.hot_keys,
        s.hot_rounds,
        s.cas_increments,
        s.log_entries,
        s.log_page,
        s.queue_items,
        s.scopes,
        s.threads,
        s.runs
    )
}

fn write_file(path: &Path, text: &str) -> BenchResult<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn progress(
    tty: bool,
    done: usize,
    total: usize,
    target: &Target,
    workload: Workload,
    run: usize,
    runs: usize,
) {
    let line = format!(
        "[{done:>3}/{total}] {:<11} {:<16} run {run}/{runs}",
        target.name,
        workload.name()
    );
    let mut err = std::io::stderr().lock();
    let _ = if tty {
        write!(err, "\r{line}  ")
    } else {
        writeln!(err, "{line}")
    };
    let _ = err.flush();
}

/// One workload, once, on a fresh store in `dir`.
fn run_one(
    target: &Target,
    workload: Workload,
    sizes: &Sizes,
    dir: &Path,
    store_name: &mut String,
) -> BenchResult<Recorder> {
    let mut rec = Recorder::default();
    // The lifecycle workload ages scopes with a manual clock; the others run on
    // the wall clock, as a worker does (a frozen clock would let a backend skip
    // rewriting an unchanged scope stamp on every write, which flatters it).
    let clock = ManualClock::starting_now();
    let store = if workload == Workload::Lifecycle {
        target.open(dir, Arc::new(clock.clone()))?
    } else {
        target.open(dir, system_clock())?
    };
    store.name().clone_into(store_name);
    match workload {
        Workload::AggregateState => workloads::aggregate_state(&*store, sizes, &mut rec)?,
        Workload::Buffering => workloads::buffering(&*store, sizes, &mut rec)?,
        Workload::ParallelScan => {
            let spec = ChildSpec {
                target: target.name.to_owned(),
                dir: dir.to_owned(),
            };
            workloads::parallel_scan(&*store, sizes, Some(&spec), &mut rec)?;
        }
        Workload::Lifecycle => workloads::lifecycle(&*store, &clock, sizes, &mut rec)?,
        Workload::Worker => worker::worker_pattern(&*store, sizes, &mut rec)?,
    }
    Ok(rec)
}
