//! `hearth`: the one command-line entry point.

mod bench;
mod chat;
mod inspect;
mod keys;
mod perplexity;
mod run;
mod serve;
mod store;
mod tokenize;

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
        /// The GGUF file, or a stored model's name.
        file: std::path::PathBuf,
        /// Print JSON instead of text (the shape is documented in `inspect.rs`).
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of a text as a JSON array.
    Tokenize(tokenize::TokenizeArgs),
    /// Generate a continuation of a prompt, streamed to stdout.
    Run(run::RunArgs),
    /// Chat with a model in the terminal (streamed answers, history, /commands).
    Chat(chat::ChatArgs),
    /// Serve a model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Measure a model's perplexity on a text, as llama-perplexity does.
    Perplexity(perplexity::PerplexityArgs),
    /// Measure prompt and generation speed as llama-bench does, against the bandwidth limit.
    Bench(bench::BenchArgs),
    /// Manage API keys for `hearth serve --keys`.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Summarise a usage log written by `hearth serve --usage-log`.
    Usage(keys::UsageArgs),
    /// Download a model into the store: ORG/REPO:QUANT, hf:ORG/REPO/FILE.gguf or a URL.
    Pull(store::PullArgs),
    /// List the models in the store (name, size, architecture, quantization, context).
    List(store::ListArgs),
    /// Remove a model from the store.
    Rm(store::RmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { file, json } => inspect::run(&file, json),
        Command::Tokenize(args) => tokenize::run_args(args),
        Command::Run(args) => run::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Key(cmd) => keys::run_key(cmd),
        Command::Usage(args) => keys::run_usage(args),
        Command::Pull(args) => store::pull(args),
        Command::List(args) => store::list(args),
        Command::Rm(args) => store::rm(args),
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
