//! Everything written at the end of an invocation: `results.json`, the SVG
//! plots, `RESULTS.md`, and the table on stdout.

pub mod json;
pub mod markdown;
pub mod plots;

use crate::env::Environment;
use crate::jitter::CoreJitter;
use crate::rows::{Row, RowKind};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Settings of the invocation, as recorded in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SettingsRecord {
    pub systems: Vec<String>,
    pub modes: Vec<String>,
    pub messages: u64,
    pub size: usize,
    pub rates: Vec<u64>,
    pub waits: Vec<String>,
    pub rate_secs: f64,
    pub rtt_rate: u64,
    pub sleep_max_rate: u64,
    pub secondary_reps: u32,
    pub counts: Vec<u64>,
    pub reps: u32,
    pub quick: bool,
    pub pub_core: Option<usize>,
    pub sub_core: Option<usize>,
}

/// A system left out of the run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub system: String,
    pub reason: String,
}

/// The whole `results.json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub schema: &'static str,
    pub created_utc: String,
    pub settings: SettingsRecord,
    pub environment: Environment,
    pub jitter: Vec<CoreJitter>,
    pub skipped: Vec<Skipped>,
    /// Per-repetition rows (`"row": "rep"`) followed by median rows (`"row": "median"`).
    pub rows: Vec<Row>,
}

impl Document {
    pub fn medians(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.row == RowKind::Median)
    }
    pub fn reps(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.row == RowKind::Rep)
    }
}

/// Histograms of the rep rows, merged per configuration (keyed by `Row::key`).
pub type Merged = BTreeMap<crate::rows::RowKey, Histogram<u64>>;

/// Merge the per-run histograms by configuration.
pub fn merge(runs: &[(Row, Option<Histogram<u64>>)]) -> Merged {
    let mut m = Merged::new();
    for (row, hist) in runs {
        if let Some(h) = hist {
            let e = m
                .entry(row.key())
                .or_insert_with(crate::stats::new_histogram);
            let _ = e.add(h);
        }
    }
    m
}

/// Write results.json, the plots and RESULTS.md into `dir`.
pub fn write_all(dir: &Path, doc: &Document, merged: &Merged) -> anyhow::Result<Vec<String>> {
    json::write(&dir.join("results.json"), doc)?;
    let plots = plots::write_all(dir, doc, merged);
    std::fs::write(dir.join("RESULTS.md"), markdown::results_md(doc, &plots))?;
    Ok(plots)
}
