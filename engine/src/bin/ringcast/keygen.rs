//! `ringcast keygen`: a new group key file, or the next step of a key rotation.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ringcast::Keyring;

pub const EXAMPLES: &str = "\
Examples:
  ringcast keygen > group.key                      a new group (one key)
  ringcast send --key-file group.key /t hello      sealed: only holders of the key hear it

Rotation, without a moment where some node cannot read another:
  ringcast keygen --add group.key > next.key       1. same sealing key, a new one accepted too;
                                                      roll next.key out to every node
  ringcast keygen --rotate next.key > new.key      2. the new key seals, the old one is accepted
                                                      for --overlap (1h) more; roll new.key out
The file is secret: whoever holds it is a member of the group (chmod 600).";

#[derive(Args)]
pub struct KeygenArgs {
    /// Rotation step 1: FILE's keys, plus a fresh key that is accepted but not yet
    /// used to seal.
    #[arg(long, value_name = "FILE", conflicts_with = "rotate")]
    add: Option<std::path::PathBuf>,
    /// Rotation step 2: the key FILE accepts but does not seal with (or a fresh one)
    /// becomes the sealing key; FILE's sealing key stays accepted for --overlap.
    #[arg(long, value_name = "FILE")]
    rotate: Option<std::path::PathBuf>,
    /// How long the old key stays accepted after --rotate (e.g. 10m, 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    overlap: Duration,
}

/// A duration with a unit of `s`, `m`, `h` or `d` (or what the settings take).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let unit = |suffix: char, secs: u64| {
        s.strip_suffix(suffix)
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| Duration::from_secs(n.saturating_mul(secs)))
    };
    unit('d', 86_400)
        .or_else(|| unit('h', 3_600))
        .or_else(|| unit('m', 60))
        .map_or_else(|| ringcast::settings::parse_duration(s), Ok)
}

pub fn run(a: KeygenArgs) -> super::Res {
    let keys = match (&a.add, &a.rotate) {
        (Some(f), _) => Keyring::load(f)?.with_next()?,
        (None, Some(f)) => Keyring::load(f)?.rotated(a.overlap.as_secs())?,
        (None, None) => Keyring::generate()?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(keys.to_file().as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
