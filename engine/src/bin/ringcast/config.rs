//! `ringcast config`: every setting's value on this host and where it came from.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ringcast::Config;

use crate::Res;

pub const EXAMPLES: &str = "Examples:
  ringcast config                          every setting, its value and where it came from
  RINGCAST_BATCH=64 ringcast config        the environment wins over the defaults...
  ringcast config --config node.toml       ...and over a file (flags win over both)
  ringcast config --toml > node.toml       a file to start from
  ringcast config --json | jq '.settings[] | select(.origin != \"default\")'";

#[derive(Args)]
pub struct ConfigArgs {
    /// A TOML configuration file [default: RINGCAST_CONFIG].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One JSON document: the settings, and unknown RINGCAST_* variables.
    #[arg(long, conflicts_with_all = ["toml", "markdown"])]
    json: bool,
    /// The effective configuration as a TOML file.
    #[arg(long, conflicts_with = "markdown")]
    toml: bool,
    /// The table of every setting, its variable and default (the README's).
    #[arg(long)]
    markdown: bool,
}

pub fn run(a: ConfigArgs) -> Res {
    if a.markdown {
        return emit(&ringcast::settings::markdown_table());
    }
    let config = match &a.config {
        Some(f) => Config::builder_from_file(f),
        None => Config::builder(),
    }
    .build()?;
    let unknown = ringcast::settings::unknown_env_vars();
    let settings = config.settings();
    let mut out = String::new();
    if a.json {
        let doc = serde_json::json!({
            "settings": settings.iter().map(|(key, env, value, origin)| serde_json::json!({
                "key": key,
                "env": env,
                "value": value,
                "origin": origin.to_string(),
            })).collect::<Vec<_>>(),
            "unknown_env": unknown,
        });
        let _ = writeln!(out, "{doc}");
    } else if a.toml {
        for (key, _, value, origin) in &settings {
            let quoted = if value.parse::<i64>().is_ok() || value == "true" || value == "false" {
                value.clone()
            } else {
                format!("{value:?}")
            };
            let _ = writeln!(out, "{key} = {quoted}  # {origin}");
        }
    } else {
        let width = settings.iter().map(|s| s.0.len()).max().unwrap_or(0);
        let vwidth = settings
            .iter()
            .map(|s| s.2.len())
            .max()
            .unwrap_or(0)
            .min(40);
        for (key, env, value, origin) in &settings {
            let _ = writeln!(out, "{key:width$}  {value:vwidth$}  {origin:<24}  {env}");
        }
    }
    for v in &unknown {
        eprintln!("warning: {v} is set but is no ringcast setting");
    }
    emit(&out)
}

/// Writes `text` to standard output; a reader that went away (`| head`) is no error.
fn emit(text: &str) -> Res {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
