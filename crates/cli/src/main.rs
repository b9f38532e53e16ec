//! `hearth`: the one command-line entry point.

mod inspect;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "A local-first LLM engine for GGUF models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's metadata and tensors.
    Inspect {
        /// The GGUF file.
        file: std::path::PathBuf,
        /// Print JSON instead of text (the shape is documented in `inspect.rs`).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { file, json } => inspect::run(&file, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` puts the whole context chain on one line.
            eprintln!("hearth: {err:#}");
            ExitCode::FAILURE
        }
    }
}
