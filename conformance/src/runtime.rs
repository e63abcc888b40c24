//! Checks that the store works for async callers: every method called from
//! inside a tokio runtime (a VGI worker serving HTTP calls it from its tasks).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};
use vgi_storage_core::{FunctionStorage, SharedStorage};

use crate::harness::{CheckResult, Failure, OrFail, Outcome, Run, ensure_eq};

/// Every method of the trait, once, on scopes that start with `tag`, with the
/// results checked (a call that "works" by returning garbage fails too).
fn every_method(store: &dyn FunctionStorage, tag: &str) -> Result<(), Failure> {
    let scope = format!("{tag}-scope").into_bytes();
    let other = format!("{tag}-other").into_bytes();
    let call = |what: &str| format!("{what} inside a runtime ({tag})");
    let _ = store.name();
    let _ = store.capabilities();
    ensure_eq!(
        store.kv_get(&scope, b"k").or_fail(&call("kv_get"))?,
        None,
        "kv_get of a missing key inside a runtime ({tag})"
    );
    store.kv_put(&scope, b"k", b"v").or_fail(&call("kv_put"))?;
    ensure_eq!(
        store.kv_get(&scope, b"k").or_fail(&call("kv_get"))?,
        Some(b"v".to_vec()),
        "kv_get after kv_put inside a runtime ({tag})"
    );
    ensure_eq!(
        store
            .kv_compare_and_swap(&scope, b"k", Some(b"v"), Some(b"w"))
            .or_fail(&call("kv_compare_and_swap"))?,
        true,
        "kv_compare_and_swap expecting the current value inside a runtime ({tag})"
    );
    store
        .kv_put_batch(&scope, &[(b"a".to_vec(), b"1".to_vec())])
        .or_fail(&call("kv_put_batch"))?;
    store.kv_del(&scope, b"k").or_fail(&call("kv_del"))?;
    ensure_eq!(
        (
            store.kv_get(&scope, b"k").or_fail(&call("kv_get"))?,
            store.kv_get(&scope, b"a").or_fail(&call("kv_get"))?
        ),
        (None, Some(b"1".to_vec())),
        "kv_get after kv_del and kv_put_batch inside a runtime ({tag})"
    );
    let first = store
        .append(&scope, b"ns", b"log", b"e1")
        .or_fail(&call("append"))?;
    let batch = store
        .append_batch(&scope, b"ns", b"log", &[b"e2".to_vec(), b"e3".to_vec()])
        .or_fail(&call("append_batch"))?;
    let scanned: Vec<Vec<u8>> = store
        .scan(&scope, b"ns", b"log", -1, 10)
        .or_fail(&call("scan"))?
        .into_iter()
        .map(|e| e.value)
        .collect();
    ensure_eq!(
        scanned,
        vec![b"e1".to_vec(), b"e2".to_vec(), b"e3".to_vec()],
        "scan after append and append_batch inside a runtime ({tag})"
    );
    ensure_eq!(
        batch.iter().all(|id| *id > first),
        true,
        "append_batch ids above the append's inside a runtime ({tag})"
    );
    store
        .queue_push(&scope, &[b"q1".to_vec(), b"q2".to_vec()])
        .or_fail(&call("queue_push"))?;
    ensure_eq!(
        store.queue_pop(&scope).or_fail(&call("queue_pop"))?,
        Some(b"q1".to_vec()),
        "queue_pop inside a runtime ({tag})"
    );
    store.clear(&scope).or_fail(&call("clear"))?;
    ensure_eq!(
        store.queue_pop(&scope).or_fail(&call("queue_pop"))?,
        None,
        "queue_pop after clear inside a runtime ({tag})"
    );
    store.kv_put(&other, b"k", b"v").or_fail(&call("kv_put"))?;
    let report = store.gc(Duration::from_secs(3600)).or_fail(&call("gc"))?;
    ensure_eq!(
        report.scopes_removed(),
        0,
        "scopes removed by gc of fresh scopes inside a runtime ({tag})"
    );
    Ok(())
}

/// Run `f`, turning a panic into a [`Failure`] that says where it happened.
fn no_panic(where_: &str, f: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Failure::new(format!(
            "a store call panicked {where_} (it must work, or return Err, inside a runtime): {msg}"
        )))
    })
}

/// The store built, used three ways and dropped, all inside `rt`.
fn inside(run: &Run<'_>, rt: &Runtime, flavor: &str) -> Result<(), Failure> {
    let scratch = run.scratch()?;
    let fx = &scratch.fx;
    let mut built: Option<SharedStorage> = None;
    no_panic(&format!("building the store in a {flavor} runtime"), || {
        built = Some(rt.block_on(async { run.open(fx) })?);
        Ok(())
    })?;
    let store = built.ok_or_else(|| Failure::new("the factory built no store"))?;

    no_panic(&format!("in block_on of a {flavor} runtime"), || {
        rt.block_on(async { every_method(&*store, &format!("{flavor}-block-on")) })
    })?;

    let task_store = store.clone();
    let tag = format!("{flavor}-task");
    no_panic(&format!("in a task of a {flavor} runtime"), || {
        let handle = rt.spawn(async move {
            let result = every_method(&*task_store, &tag);
            // The task's copy is dropped inside the runtime too.
            drop(task_store);
            result
        });
        rt.block_on(handle).map_err(|e| {
            Failure::new(format!(
                "the task calling the store in a {flavor} runtime ended abnormally \
                 (a store call panicked?): {e}"
            ))
        })?
    })?;

    no_panic(
        &format!("on a thread that entered a {flavor} runtime"),
        || {
            let _entered = rt.enter();
            every_method(&*store, &format!("{flavor}-entered"))
        },
    )?;

    no_panic(&format!("dropping the store in a {flavor} runtime"), || {
        rt.block_on(async move { drop(store) });
        Ok(())
    })
}

/// Every method works from inside a multi-threaded and a current-thread tokio
/// runtime: in `block_on`, in a spawned task, and on a thread that entered it;
/// building and dropping the store there works too.
pub(crate) fn every_call_works_inside_a_tokio_runtime(run: &Run<'_>) -> CheckResult {
    let multi = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot build a multi-threaded tokio runtime: {e}")))?;
    inside(run, &multi, "multi-thread")?;
    multi.shutdown_timeout(Duration::from_secs(10));
    let current = Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot build a current-thread tokio runtime: {e}")))?;
    inside(run, &current, "current-thread")?;
    Ok(Outcome::Passed)
}
