//! `results.json`: the stable, machine-readable output (schema in issue 3).

use super::Document;
use std::path::Path;

/// Version tag of the document layout.
pub const SCHEMA: &str = "ringcast-bench/results/v2";

pub fn write(path: &Path, doc: &Document) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(path, text + "\n")?;
    Ok(())
}
