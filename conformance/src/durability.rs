//! Checks for durable backends: state survives dropping and reopening the store.

use std::time::Duration;

use vgi_storage_core::SharedStorage;

use crate::harness::{CheckResult, Failure, Outcome, Run};
use crate::model::{After, Expected, Model, Name, Op, Target, Val};

fn not_durable() -> Outcome {
    Outcome::Skipped("the backend is not durable (capabilities().durable is false)".into())
}

fn b(v: &[u8]) -> Val {
    Val::Bytes(v.to_vec())
}

/// Writes of every kind across several scopes, with deletes, pops, a clear and a CAS.
fn workload() -> Vec<Op> {
    let (s1, s2, s3, s4) = (Name(b"s1"), Name(b""), Name(b"\0\xff"), Name(b"gone"));
    let (n, k, k2) = (Name(b"n"), Name(b"k"), Name(b"\0"));
    vec![
        Op::Put(s1, k, b(b"one")),
        Op::Put(s1, k2, b(b"")),
        Op::Put(
            s2,
            k,
            Val::Big {
                len: 70_000,
                seed: 3,
            },
        ),
        Op::Put(s3, k, b(b"\0\xff")),
        Op::Del(s1, k2),
        Op::Cas(s3, k, Expected::Current, Some(b(b"swapped"))),
        Op::Cas(s2, k2, Expected::Absent, Some(b(b"cas-new"))),
        Op::PutBatch(s2, vec![(Name(b"a"), b(b"1")), (Name(b"b"), b(b"2"))]),
        Op::Append(s1, n, k, b(b"e1")),
        Op::AppendBatch(s1, n, k, vec![b(b"e2"), b(b""), b(b"e4")]),
        Op::Append(s2, n, k2, b(b"other log")),
        Op::Append(s3, Name(b""), Name(b""), b(b"\0")),
        Op::Push(s1, vec![b(b"q1"), b(b"q2"), b(b"q3")]),
        Op::Push(s3, vec![b(b"only")]),
        Op::Pop(s1),
        Op::Put(s4, k, b(b"x")),
        Op::Append(s4, n, k, b(b"x")),
        Op::Push(s4, vec![b(b"x")]),
        Op::Clear(s4),
        Op::Advance(Duration::from_secs(5)),
        Op::Put(Name(b"late"), k, b(b"late")),
    ]
}

/// Run `ops` on a fresh durable store, reopen it, and hand back the model and target.
fn write_then_reopen(
    run: &Run<'_>,
    check: impl FnOnce(&mut Model, &mut Target<'_>) -> Result<(), String>,
) -> CheckResult {
    let scratch = run.scratch()?;
    let fx = &scratch.fx;
    let store = run.open(fx)?;
    let caps = store.capabilities();
    if !caps.durable {
        return Ok(not_durable());
    }
    let reopened = fx.reopened();
    let reopen =
        || -> Result<SharedStorage, String> { run.open(&reopened).map_err(|f| f.report()) };
    let mut target = Target {
        store: Some(store),
        clock: fx.manual_clock(),
        caps,
        reopen: &reopen,
    };
    let mut model = Model::default();
    let result = (|| {
        for (i, op) in workload().iter().enumerate() {
            model
                .step(&mut target, op)
                .map_err(|e| format!("before the reopen, operation #{i} {op:?}: {e}"))?;
        }
        model
            .step(&mut target, &Op::Reopen)
            .map_err(|e| format!("after the reopen: {e}"))?;
        check(&mut model, &mut target)
    })();
    result.map(|()| Outcome::Passed).map_err(Failure::new)
}

/// Written state reads back whole after the store is dropped and reopened.
pub(crate) fn state_survives_reopen(run: &Run<'_>) -> CheckResult {
    write_then_reopen(run, |model, target| {
        let store = target.store.clone().ok_or("the store was not reopened")?;
        model.compare_all(&*store, false)?;
        // The gc stamps survive too: only the scopes written before the 5 s advance are stale.
        target.clock.advance(Duration::from_secs(1));
        model
            .step(target, &Op::Gc(Duration::from_secs(3)))
            .map_err(|e| format!("gc after the reopen: {e}"))?;
        model.compare_all(&*store, true)
    })
}

/// Ids handed out after a reopen are new and above every earlier id of their log.
pub(crate) fn ids_are_never_reused_after_reopen(run: &Run<'_>) -> CheckResult {
    write_then_reopen(run, |model, target| {
        let (s1, n, k) = (Name(b"s1"), Name(b"n"), Name(b"k"));
        let ops = [
            Op::Append(s1, n, k, b(b"after reopen")),
            Op::AppendBatch(s1, n, k, vec![b(b"a"), b(b"b")]),
            Op::Append(Name(b"gone"), n, k, b(b"in a cleared scope")),
            Op::Append(Name(b"fresh"), n, k, b(b"in a new scope")),
            Op::Scan(s1, n, k, After::Earlier(0, 0), usize::MAX),
            Op::Reopen,
            Op::Append(s1, n, k, b(b"after a second reopen")),
            Op::Scan(s1, n, k, After::Fixed(-1), usize::MAX),
        ];
        for (i, op) in ops.iter().enumerate() {
            model
                .step(target, op)
                .map_err(|e| format!("after the reopen, operation #{i} {op:?}: {e}"))?;
        }
        Ok(())
    })
}
