//! The runner in `--quick` mode, end to end, so it cannot rot.

use std::path::Path;
use std::process::{Command, Output};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn bench(dir: &Path, args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_vgi-storage-bench"))
        .args(args)
        .arg("--json")
        .arg(dir.join("out.json"))
        .arg("--svg")
        .arg(dir.join("out.svg"))
        .env("VGI_BENCH_DIR", dir.join("stores"))
        .output()
}

#[test]
fn quick_run_measures_every_target_and_writes_json_and_svg() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = bench(dir.path(), &["--quick"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quick run failed:\n{stdout}\n{stderr}"
    );

    // The run names the machine, the directory and each backend's durability.
    for needle in [
        "machine:",
        "directory:",
        "durability:",
        "memory",
        "sqlite",
        "raw-sqlite",
        "backend / its raw-engine ceiling",
    ] {
        assert!(
            stdout.contains(needle),
            "output lacks {needle:?}:\n{stdout}"
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.json"))?)?;
    assert_eq!(json["quick"], true);
    let figures = json["figures"].as_object().ok_or("no figures")?;
    for target in ["memory", "sqlite", "raw-map", "raw-sqlite", "raw-redb"] {
        let steps = figures
            .get(target)
            .and_then(|f| f.as_object())
            .ok_or(format!("no figures for {target}"))?;
        for step in [
            "kv.put",
            "kv.get",
            "kv.hot",
            "cas.incr.mt",
            "log.append",
            "log.scan.paged",
            "queue.pop.4t",
            "scope.gc",
        ] {
            let ops = steps
                .get(step)
                .and_then(|s| s["ops_per_sec"].as_f64())
                .ok_or(format!("{target} lacks {step}"))?;
            assert!(ops > 0.0, "{target} {step}: {ops} ops/s");
        }
    }
    // SQLite is shared across processes, so it ran the process drains too.
    assert!(
        figures["sqlite"]["queue.pop.4p"]["ops_per_sec"]
            .as_f64()
            .is_some_and(|v| v > 0.0)
    );
    assert!(
        figures["memory"].get("queue.pop.4p").is_none(),
        "memory is not shared across processes"
    );
    assert!(
        json["ratio_to_ceiling"]["sqlite/raw-sqlite"]["kv.put"]
            .as_f64()
            .is_some()
    );

    let svg = std::fs::read_to_string(dir.path().join("out.svg"))?;
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("raw-sqlite")
    );
    Ok(())
}

/// A store that hands a queue item out twice must fail the run, not print a number.
#[test]
fn a_broken_store_fails_the_run_loudly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = bench(dir.path(), &["--quick", "--only", "broken-queue"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a broken queue passed:\n{stderr}");
    assert!(stderr.contains("claimed twice"), "{stderr}");
    assert!(
        !dir.path().join("out.json").exists(),
        "a failed run wrote figures"
    );
    Ok(())
}

#[test]
fn unknown_arguments_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = bench(dir.path(), &["--frobnicate"])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unexpected argument '--frobnicate'"),
        "{stderr}"
    );
    let out = bench(dir.path(), &["--runs", "0"])?;
    assert!(!out.status.success(), "accepted zero runs");
    Ok(())
}

/// Regression: the help text missed options (`--only broken-queue`, where the
/// results go), and every run rewrote the committed figures in bench/results.
#[test]
fn help_lists_every_option_and_results_default_to_the_target_dir() -> TestResult {
    let out = Command::new(env!("CARGO_BIN_EXE_vgi-storage-bench"))
        .arg("--help")
        .output()?;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--quick",
        "--runs",
        "--only",
        "broken-queue",
        "--out",
        "--json",
        "--svg",
        "VGI_BENCH_DIR",
        "target/bench-results",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
    Ok(())
}

/// `--out DIR` puts both files in DIR, under the names a run gives them.
#[test]
fn out_puts_the_figures_and_the_chart_in_one_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_vgi-storage-bench"))
        .args(["--quick", "--runs", "1", "--only", "memory", "--out"])
        .arg(dir.path().join("figures"))
        .env("VGI_BENCH_DIR", dir.path().join("stores"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for file in ["latest-quick.json", "latest-quick.svg"] {
        assert!(dir.path().join("figures").join(file).is_file(), "no {file}");
    }
    Ok(())
}

/// Regression: the bench put the throwaway PostgreSQL server in
/// `VGI_BENCH_DIR`, and as root the server runs as `nobody`, who cannot reach
/// into a private directory (a test's tempdir is 0700): the postgres columns
/// were skipped with "Permission denied". The run must fall back to the system
/// temp dir and measure them (unless no server binaries are installed).
#[test]
fn quick_postgres_run_starts_its_server_beside_a_private_bench_dir() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = bench(dir.path(), &["--quick", "--only", "raw-postgres"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed:\n{stdout}\n{stderr}");
    if stdout.contains("were not found") {
        return Ok(()); // no PostgreSQL server binaries on this machine
    }
    assert!(
        stdout.contains("postgres:  server data in"),
        "the server did not start:\n{stdout}"
    );
    assert!(
        stdout.contains("queue drain, 4 processes"),
        "the raw-postgres drains did not run:\n{stdout}"
    );
    Ok(())
}
