//! What one timed step measured, and the summaries the report prints.

use std::collections::BTreeMap;

use serde::Serialize;

/// One step of one run: how many operations, how many payload bytes, the wall
/// time, and each operation's latency.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub(crate) ops: u64,
    pub(crate) bytes: u64,
    pub(crate) secs: f64,
    pub(crate) lat_ns: Vec<u64>,
    /// Extra counts a step reports (CAS retries), by name.
    pub(crate) extra: BTreeMap<&'static str, u64>,
}

/// The samples of one run of one workload, by step id, in the order recorded.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) steps: Vec<(&'static str, Sample)>,
}

impl Recorder {
    pub(crate) fn record(&mut self, step: &'static str, sample: Sample) {
        self.steps.push((step, sample));
    }
}

/// The summary of one step for one target across runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Operations per run.
    pub(crate) ops: u64,
    /// Payload bytes per run.
    pub(crate) bytes: u64,
    /// Median over runs of operations per second.
    pub(crate) ops_per_sec: f64,
    /// Median over runs of payload megabytes (10^6 bytes) per second; 0 when the step moves no payload.
    pub(crate) mb_per_sec: f64,
    /// Latency percentiles of every operation of every run, in nanoseconds.
    pub(crate) p50_ns: u64,
    pub(crate) p99_ns: u64,
    pub(crate) max_ns: u64,
    /// Operations per second of each run.
    pub(crate) runs_ops_per_sec: Vec<f64>,
    /// Wall seconds of each run.
    pub(crate) runs_secs: Vec<f64>,
    /// Extra counts summed over runs (CAS retries).
    pub(crate) extra: BTreeMap<&'static str, u64>,
}

pub(crate) fn summarize(samples: &[Sample]) -> Summary {
    let rates: Vec<f64> = samples.iter().map(|s| per_sec(s.ops, s.secs)).collect();
    let mbs: Vec<f64> = samples
        .iter()
        .map(|s| per_sec(s.bytes, s.secs) / 1e6)
        .collect();
    let mut lat: Vec<u64> = samples
        .iter()
        .flat_map(|s| s.lat_ns.iter().copied())
        .collect();
    lat.sort_unstable();
    let mut extra = BTreeMap::new();
    for s in samples {
        for (k, v) in &s.extra {
            *extra.entry(*k).or_insert(0) += v;
        }
    }
    Summary {
        ops: samples.first().map_or(0, |s| s.ops),
        bytes: samples.first().map_or(0, |s| s.bytes),
        ops_per_sec: median(&rates),
        mb_per_sec: median(&mbs),
        p50_ns: percentile(&lat, 50.0),
        p99_ns: percentile(&lat, 99.0),
        max_ns: lat.last().copied().unwrap_or(0),
        runs_ops_per_sec: rates,
        runs_secs: samples.iter().map(|s| s.secs).collect(),
        extra,
    }
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// The median; the mean of the middle two for an even count.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(&[]).abs() < f64::EPSILON);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
