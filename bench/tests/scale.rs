//! The runner's `--scale --quick` mode, end to end on memory and sqlite: every
//! curve has every point and a verdict. The timings are not checked.

use std::process::Command;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TARGETS: [&str; 2] = ["memory", "sqlite"];
const SIZE_OPS: [&str; 5] = ["kv.get", "kv.put", "log.append", "log.scan", "queue.pop"];
const SCOPE_OPS: [&str; 2] = ["scope.create", "scope.gc"];

#[test]
#[allow(clippy::too_many_lines)] // one run, checked curve by curve
fn scale_quick_writes_every_row_and_a_verdict_per_curve() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_vgi-storage-bench"))
        .args([
            "--scale",
            "--quick",
            "--runs",
            "2",
            "--only",
            "memory,sqlite",
        ])
        .arg("--json")
        .arg(dir.path().join("scale.json"))
        .arg("--svg")
        .arg(dir.path().join("scale.svg"))
        .env("VGI_BENCH_DIR", dir.path().join("stores"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scale run failed:\n{stdout}\n{stderr}"
    );
    for needle in ["machine:", "method:", "ns/op by", "verdict"] {
        assert!(
            stdout.contains(needle),
            "output lacks {needle:?}:\n{stdout}"
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("scale.json"))?)?;
    assert_eq!(json["mode"], "scale");
    assert_eq!(json["quick"], true);
    let list = |key: &str| -> Result<Vec<u64>, String> {
        json["plan"][key]
            .as_array()
            .ok_or(format!("plan lacks {key}"))?
            .iter()
            .map(|v| v.as_u64().ok_or(format!("plan {key}: {v} is not a size")))
            .collect()
    };
    let (entries, scopes, threads) = (list("entries")?, list("scopes")?, list("threads")?);
    assert!(
        entries.len() >= 2 && scopes.len() >= 2,
        "a curve needs two sizes"
    );
    assert_eq!(threads, [1, 2, 4, 8]);

    let rows = json["rows"].as_array().ok_or("no rows")?;
    let has_row = |target: &str, op: &str, axis: &str, x: u64| {
        rows.iter().any(|r| {
            r["target"] == target
                && r["op"] == op
                && r["axis"] == axis
                && r["x"].as_u64() == Some(x)
                && r["ops"].as_u64().is_some_and(|n| n > 0)
                && r["runs_ns_per_op"].as_array().is_some_and(|v| v.len() == 2)
        })
    };
    let verdicts = json["verdicts"].as_array().ok_or("no verdicts")?;
    let has_verdict = |target: &str, op: &str, axis: &str| {
        verdicts.iter().any(|v| {
            v["target"] == target
                && v["op"] == op
                && v["axis"] == axis
                && (v["verdict"] == "flat" || v["verdict"] == "bends")
                && v["text"].as_str().is_some_and(|t| !t.is_empty())
        })
    };
    let mut want = 0;
    for target in TARGETS {
        for op in SIZE_OPS {
            for &x in &entries {
                assert!(
                    has_row(target, op, "entries", x),
                    "{target} {op} lacks {x} entries"
                );
            }
            for &t in &threads {
                assert!(
                    has_row(target, op, "threads", t),
                    "{target} {op} lacks {t} threads"
                );
            }
            assert!(
                has_verdict(target, op, "entries"),
                "{target} {op}: no size verdict"
            );
            assert!(
                has_verdict(target, op, "threads"),
                "{target} {op}: no threads verdict"
            );
            want += entries.len() + threads.len();
        }
        for op in SCOPE_OPS {
            for &x in &scopes {
                assert!(
                    has_row(target, op, "scopes", x),
                    "{target} {op} lacks {x} scopes"
                );
            }
            assert!(
                has_verdict(target, op, "scopes"),
                "{target} {op}: no verdict"
            );
            want += scopes.len();
        }
    }
    assert_eq!(rows.len(), want, "rows beyond the plan");
    assert_eq!(
        verdicts.len(),
        TARGETS.len() * (SIZE_OPS.len() * 2 + SCOPE_OPS.len())
    );

    let svg = std::fs::read_to_string(dir.path().join("scale.svg"))?;
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for needle in ["memory", "sqlite", "gc, per stale scope removed", "threads"] {
        assert!(svg.contains(needle), "chart lacks {needle:?}");
    }
    Ok(())
}

/// `--max-size` drops the larger sizes; below the smallest size it is refused.
#[test]
fn max_size_caps_the_plan_and_refuses_a_cap_below_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_vgi-storage-bench"))
        .args(["--scale", "--quick", "--max-size", "10", "--only", "memory"])
        .arg("--out")
        .arg(dir.path())
        .output()?;
    assert!(!out.status.success(), "a cap below every size ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-size 10"), "{stderr}");
    assert!(!dir.path().join("scale-quick.json").exists());

    let out = Command::new(env!("CARGO_BIN_EXE_vgi-storage-bench"))
        .args([
            "--scale",
            "--quick",
            "--runs",
            "1",
            "--max-size",
            "1000",
            "--only",
            "memory",
        ])
        .arg("--out")
        .arg(dir.path())
        .env("VGI_BENCH_DIR", dir.path().join("stores"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("scale-quick.json"),
    )?)?;
    assert_eq!(json["plan"]["entries"], serde_json::json!([1000]));
    assert_eq!(json["plan"]["scopes"], serde_json::json!([100, 1000]));
    assert!(dir.path().join("scale-quick.svg").is_file());
    Ok(())
}

/// A ceiling with no batched write cannot grow a store to a million entries:
/// `--scale` refuses it by name instead of running for hours.
#[test]
fn scale_refuses_a_target_it_cannot_grow() -> TestResult {
    let out = Command::new(env!("CARGO_BIN_EXE_vgi-storage-bench"))
        .args(["--scale", "--only", "raw-postgres"])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("raw-postgres"), "{stderr}");
    Ok(())
}
