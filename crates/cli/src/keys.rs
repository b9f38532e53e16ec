//! `hearth key new NAME` and `hearth usage LOG`: the tools that go with `hearth serve
//! --keys` and `--usage-log`.

use std::path::PathBuf;

use hearth_server::keys::new_key;
use hearth_server::usage::{summarise, By};

/// `hearth key ...`.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Print a fresh key (give it to its user) and the `[[key]]` block to add to the keys
    /// file (which holds only its SHA-256).
    New {
        /// The key's name, as the usage log records it.
        name: String,
    },
}

/// Runs `hearth key`.
pub fn run_key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::New { name } => {
            if name.is_empty() || name.len() > 64 {
                anyhow::bail!("the key's name must be 1 to 64 characters");
            }
            let (key, block) = new_key(&name)?;
            println!("{key}");
            eprintln!(
                "hearth: give the key above to its user; add this to the keys file:\n\n{block}"
            );
            Ok(())
        }
    }
}

/// The arguments of `hearth usage`.
#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// The usage log (`usage.jsonl` in the `--usage-log` directory).
    pub log: PathBuf,
    /// Group by key name or by UTC day.
    #[arg(long, value_parser = ["key", "day"], default_value = "key")]
    pub by: String,
}

/// Runs `hearth usage`: requests, errors and token sums per group, as a table.
pub fn run_usage(args: UsageArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.log)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.log.display()))?;
    let by = if args.by == "day" { By::Day } else { By::Key };
    let totals = summarise(std::io::BufReader::new(file), by)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.log.display()))?;
    println!(
        "| {:<24} | {:>8} | {:>6} | {:>12} | {:>10} | {:>12} | {:>10} |",
        args.by, "requests", "errors", "prompt", "cached", "completion", "reasoning"
    );
    println!(
        "|{:-<26}|{:->10}|{:->8}|{:->14}|{:->12}|{:->14}|{:->12}|",
        "", "", "", "", "", "", ""
    );
    for (group, t) in totals {
        println!(
            "| {:<24} | {:>8} | {:>6} | {:>12} | {:>10} | {:>12} | {:>10} |",
            group,
            t.requests,
            t.errors,
            t.prompt_tokens,
            t.cached_tokens,
            t.completion_tokens,
            t.reasoning_tokens
        );
    }
    Ok(())
}
