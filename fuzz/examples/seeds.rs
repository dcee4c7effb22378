//! Writes the seed corpus, `corpus/<target>/seed-<name>`, from
//! `ringcast::fuzzing::seeds` (valid inputs of every kind). Run from `fuzz/`:
//! `cargo run --example seeds`. Files of other names (what the fuzzer found) are left
//! alone; seeds no longer produced are removed (not `seed-regression-*`: inputs that
//! once crashed a target, kept by hand).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut written = BTreeSet::new();
    for (target, name, input) in ringcast::fuzzing::seeds() {
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("seed-{name}"));
        fs::write(&path, &input)?;
        written.insert(path);
    }
    for target in ringcast::fuzzing::TARGETS {
        for entry in fs::read_dir(root.join(target))? {
            let path = entry?.path();
            let stale = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-") && !n.starts_with("seed-regression-"))
                && !written.contains(&path);
            if stale {
                fs::remove_file(&path)?;
            }
        }
    }
    println!("{} seeds in {}", written.len(), root.display());
    Ok(())
}
