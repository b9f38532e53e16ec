//! `hearth chat MODEL`: an interactive conversation with a model, in the terminal.
//!
//! Each turn sends the whole conversation (system prompt, earlier turns, the new message)
//! through the model's chat template to the same engine `hearth serve` runs. The engine's
//! prefix cache still holds the previous turn's keys and values, so only the new message
//! (and the few tokens of a partly filled block) is computed again; `/stats` shows how many
//! prompt tokens came from the cache.
//!
//! On a terminal the input is read with `rustyline` (line editing, a history file,
//! multi-line input: end a line with `\`, or open and close a block with `"""`), a
//! reasoning model's thinking is shown dimmed (or hidden with `--hide-thinking`), and
//! Ctrl-C stops the answer being written; Ctrl-C or Ctrl-D at the prompt quits. Without a
//! terminal, every line of standard input is one message (or command) and the output is
//! plain, so the command can be scripted. `NO_COLOR` turns colours off.
//!
//! What it does not do: edit earlier turns, or keep the conversation anywhere but in
//! memory unless `/save` writes it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hearth_engine::chat_template::{Message, TemplateOrigin};
use hearth_engine::sampler::{Sampler, SamplerParams};
use hearth_engine::scheduler::{
    EngineConfig, ErrorKind, Event, Finish, Job, Prompt, Request, Timings, Usage,
};
use rustyline::error::ReadlineError;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TryRecvError;

use crate::run::{self, CacheTypeArgs, SamplingArgs};

/// Largest conversation file `/load` reads.
const MAX_SAVED_BYTES: u64 = 16 << 20;

/// How often a running answer looks for Ctrl-C while no token arrives.
const POLL: Duration = Duration::from_millis(5);

/// The arguments of `hearth chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The GGUF model file, or a stored model's name.
    pub model: PathBuf,
    /// The system prompt (also `/system TEXT` in the chat).
    #[arg(short = 's', long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The most tokens of one answer (a base model seldom ends its turn by itself).
    #[arg(short = 'n', long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Seed of the sampler (default: from the clock; `/stats` shows it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Do not show a reasoning model's thinking.
    #[arg(long)]
    pub hide_thinking: bool,
    /// Where the input history is kept (default: ~/.cache/hearth/chat-history).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Compute threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Context size in tokens, the whole conversation included (default: 4096, or the
    /// model's training context if smaller).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Keep the model file mapped instead of copying it onto huge pages.
    #[arg(long)]
    pub mmap: bool,
    #[command(flatten)]
    pub cache: CacheTypeArgs,
}

/// The conversation as `/save` writes it and `/load` reads it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Conversation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    #[serde(default)]
    messages: Vec<Turn>,
}

/// One message of the conversation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Turn {
    role: Role,
    content: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

/// The sampling settings `/set` changes.
#[derive(Clone, Debug)]
struct Settings {
    sampling: SamplingArgs,
    max_tokens: usize,
    seed: u64,
}

impl Settings {
    fn sampler(&self) -> SamplerParams {
        self.sampling.params(self.seed)
    }

    /// `/set NAME VALUE`; the settings are unchanged when the value is refused.
    fn set(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let mut next = self.clone();
        let float = || -> anyhow::Result<f32> {
            value
                .parse()
                .with_context(|| format!("{name}: not a number: {value}"))
        };
        let int = || -> anyhow::Result<usize> {
            value
                .parse()
                .with_context(|| format!("{name}: not a whole number: {value}"))
        };
        match name {
            "temp" | "temperature" => next.sampling.temp = float()?,
            "top_p" => next.sampling.top_p = float()?,
            "top_k" => next.sampling.top_k = int()?,
            "min_p" => next.sampling.min_p = float()?,
            "repeat_penalty" => next.sampling.repeat_penalty = float()?,
            "max_tokens" => {
                next.max_tokens = int()?;
                if next.max_tokens == 0 {
                    bail!("max_tokens must be at least 1");
                }
            }
            "seed" => {
                next.seed = value
                    .parse()
                    .with_context(|| format!("seed: not a whole number: {value}"))?
            }
            _ => bail!(
                "unknown setting {name:?}; the settings are temp, top_p, top_k, min_p, \
                 repeat_penalty, max_tokens and seed"
            ),
        }
        Sampler::new(&next.sampler(), 1).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        *self = next;
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "temp {}, top_p {}, top_k {}, min_p {}, repeat_penalty {}, max_tokens {}, seed {}",
            self.sampling.temp,
            self.sampling.top_p,
            self.sampling.top_k,
            self.sampling.min_p,
            self.sampling.repeat_penalty,
            self.max_tokens,
            self.seed
        )
    }
}

/// What the last answer cost, for `/stats`.
#[derive(Clone, Copy, Debug, Default)]
struct LastTurn {
    usage: Usage,
    timings: Timings,
}

/// How text reaches the terminal: colours only on a terminal without `NO_COLOR`.
struct Style {
    color: bool,
    hide_thinking: bool,
}

impl Style {
    fn dim(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

/// Runs `hearth chat`.
pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let model = crate::store::resolve(&args.model)?;
    let n_threads = run::threads(args.threads)?;
    if args.ctx == Some(0) {
        bail!("-c must be at least 1");
    }
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let settings = Settings {
        sampling: args.sampling.clone(),
        max_tokens: args.max_tokens,
        seed: args.seed.unwrap_or_else(run::clock_seed),
    };
    Sampler::new(&settings.sampler(), 1).context("bad sampling parameters")?;
    let interactive = std::io::stdin().is_terminal();
    let style = Style {
        color: std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        hide_thinking: args.hide_thinking,
    };

    let config = EngineConfig {
        ctx: args.ctx,
        parallel: Some(1),
        queue: 1,
        kv_types: args.cache.types(),
        load_progress: run::load_progress(&model),
        ..EngineConfig::new(model.clone(), n_threads, run::residency(&model, args.mmap))
    };
    let engine = run::Engine::start(config)?;
    let info = engine.info.clone();
    match info.chat_template {
        None => bail!(
            "{} has no chat template and none is built in for its architecture ({}); \
             `hearth run` continues plain text",
            model.display(),
            info.arch
        ),
        Some(TemplateOrigin::Builtin(t)) => eprintln!(
            "hearth: note: {} has no chat template of its own, so the built-in {} template \
             is used; a base model continues text rather than following instructions",
            info.id,
            t.name()
        ),
        Some(TemplateOrigin::Embedded) => {}
    }
    eprintln!(
        "hearth: {} ready: context {} tokens, {n_threads} threads. Type a message; /help \
         lists the commands{}.",
        info.id,
        info.n_ctx,
        if interactive {
            ", Ctrl-C stops an answer, Ctrl-D quits"
        } else {
            ""
        }
    );

    // After the load: until now Ctrl-C should just end the process. From here the first
    // Ctrl-C stops the answer being written and a second one, before that is done, quits.
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        interrupted.clone(),
    )
    .context("cannot handle Ctrl-C")?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())
        .context("cannot handle Ctrl-C")?;

    let mut chat = Chat {
        engine,
        style,
        settings,
        conversation: Conversation {
            system: args.system.clone(),
            messages: Vec::new(),
        },
        last: None,
        interrupted,
    };
    if interactive {
        let history = match &args.history {
            Some(path) => path.clone(),
            None => run::cache_dir().join("chat-history"),
        };
        chat.repl(&history)
    } else {
        chat.script()
    }
}

/// A conversation in progress.
struct Chat {
    engine: run::Engine,
    style: Style,
    settings: Settings,
    conversation: Conversation,
    last: Option<LastTurn>,
    interrupted: Arc<AtomicBool>,
}

/// What to do after a line of input.
enum Next {
    Continue,
    Quit,
}

impl Chat {
    /// Reads lines with line editing and a history file.
    fn repl(&mut self, history: &Path) -> anyhow::Result<()> {
        let mut editor: rustyline::Editor<Input, rustyline::history::DefaultHistory> =
            rustyline::Editor::new().context("cannot set up the terminal")?;
        editor.set_helper(Some(Input));
        if let Some(dir) = history.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A missing history file is normal the first time.
        let _ = editor.load_history(history);
        let prompt = if self.style.color {
            "\x1b[1m>>>\x1b[0m "
        } else {
            ">>> "
        };
        loop {
            match editor.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if let Next::Quit = self.line(&join_continuations(&line))? {
                        break;
                    }
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
                Err(e) => return Err(e).context("cannot read the input"),
            }
        }
        if let Err(e) = editor.save_history(history) {
            eprintln!(
                "hearth: warning: cannot save the history to {}: {e}",
                history.display()
            );
        }
        Ok(())
    }

    /// Reads standard input without a terminal: one message or command per line.
    fn script(&mut self) -> anyhow::Result<()> {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("cannot read standard input")?;
            if let Next::Quit = self.line(&line)? {
                break;
            }
            if self.interrupted.swap(false, Ordering::Relaxed) {
                break;
            }
        }
        Ok(())
    }

    /// One line of input: a command, or a message to answer.
    fn line(&mut self, line: &str) -> anyhow::Result<Next> {
        let text = line.trim();
        if text.is_empty() {
            return Ok(Next::Continue);
        }
        if let Some(command) = text.strip_prefix('/') {
            return self.command(command);
        }
        self.turn(text)?;
        Ok(Next::Continue)
    }

    /// A `/` command; a wrong one is explained, never fatal.
    fn command(&mut self, command: &str) -> anyhow::Result<Next> {
        let (name, rest) = command
            .split_once(char::is_whitespace)
            .map_or((command, ""), |(n, r)| (n, r.trim()));
        let result = match name {
            "help" | "?" => {
                println!("{HELP}");
                Ok(())
            }
            "bye" | "exit" | "quit" => return Ok(Next::Quit),
            "system" if rest.is_empty() => {
                match &self.conversation.system {
                    Some(s) => println!("system prompt: {s}"),
                    None => println!("no system prompt (set one with /system TEXT)"),
                }
                Ok(())
            }
            "system" => {
                self.conversation.system = Some(rest.to_owned());
                println!("system prompt set; it applies from the next message");
                Ok(())
            }
            "clear" => {
                self.conversation.messages.clear();
                self.last = None;
                println!("conversation cleared (the system prompt is kept)");
                Ok(())
            }
            "save" if !rest.is_empty() => self.save(Path::new(rest)),
            "load" if !rest.is_empty() => self.load(Path::new(rest)),
            "set" => match rest.split_once(char::is_whitespace) {
                Some((key, value)) => self.settings.set(key, value.trim()).map(|()| {
                    println!("{}", self.settings.describe());
                }),
                None if rest.is_empty() => {
                    println!("{}", self.settings.describe());
                    Ok(())
                }
                None => Err(anyhow::anyhow!("usage: /set NAME VALUE")),
            },
            "stats" => {
                self.stats();
                Ok(())
            }
            "save" | "load" => Err(anyhow::anyhow!("usage: /{name} FILE")),
            _ => Err(anyhow::anyhow!("unknown command /{name}; /help lists them")),
        };
        if let Err(e) = result {
            eprintln!("hearth: {e:#}");
        }
        Ok(Next::Continue)
    }

    /// Sends the conversation with `text` as the new message and streams the answer.
    fn turn(&mut self, text: &str) -> anyhow::Result<()> {
        self.conversation.messages.push(Turn {
            role: Role::User,
            content: text.to_owned(),
        });
        let request = Request {
            max_tokens: Some(self.settings.max_tokens),
            split_reasoning: true,
            ..Request::new(
                Prompt::Chat(self.conversation.messages()),
                self.settings.sampler(),
            )
        };
        self.interrupted.store(false, Ordering::Relaxed);
        match self.stream(request)? {
            Answered::Text(answer, last) => {
                self.conversation.messages.push(Turn {
                    role: Role::Assistant,
                    content: answer,
                });
                self.last = Some(last);
            }
            Answered::Refused(message) => {
                // The message was not answered: it leaves the conversation again.
                self.conversation.messages.pop();
                eprintln!("hearth: {message}");
            }
        }
        Ok(())
    }

    /// Streams one answer to stdout until it ends or Ctrl-C stops it.
    fn stream(&mut self, request: Request) -> anyhow::Result<Answered> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        self.engine.submit(Job {
            request,
            events: tx,
        })?;
        let mut out = std::io::stdout().lock();
        let mut answer = String::new();
        let mut thinking = false;
        let mut stopped = false;
        let done = loop {
            let event = match rx.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Empty) => {
                    if self.interrupted.swap(false, Ordering::Relaxed) {
                        stopped = true;
                        // Dropping the receiver cancels the answer at the engine's next
                        // step; what was written stays.
                        break None;
                    }
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(TryRecvError::Disconnected) => bail!("the engine has stopped"),
            };
            match event {
                Event::Started { .. } | Event::ToolCalls { .. } => {}
                Event::Delta {
                    reasoning, content, ..
                } => {
                    if !reasoning.is_empty() && !self.style.hide_thinking {
                        thinking = true;
                        write!(out, "{}", self.style.dim(&reasoning))?;
                    }
                    if !content.is_empty() {
                        if std::mem::take(&mut thinking) {
                            // The thinking ends; the answer starts on a line of its own.
                            writeln!(out, "\n")?;
                        }
                        let shown = if answer.is_empty() {
                            content.trim_start()
                        } else {
                            &content
                        };
                        write!(out, "{shown}")?;
                        answer.push_str(&content);
                    }
                    out.flush()?;
                }
                Event::Done {
                    finish,
                    usage,
                    timings,
                    ..
                } => break Some((finish, LastTurn { usage, timings })),
                Event::Error(e) => {
                    let message = match e.kind {
                        ErrorKind::ContextLength => format!(
                            "{}; /clear starts a new conversation, or restart with a larger -c",
                            e.message
                        ),
                        _ => e.message,
                    };
                    return Ok(Answered::Refused(message));
                }
            }
        };
        drop(rx);
        let answer = answer.trim().to_owned();
        match done {
            Some((finish, last)) => {
                writeln!(out)?;
                if finish == Finish::Length {
                    let note = format!(
                        "[the answer reached its limit of {} tokens or the context is full]",
                        self.settings.max_tokens
                    );
                    writeln!(out, "{}", self.style.dim(&note))?;
                }
                Ok(Answered::Text(answer, last))
            }
            None => {
                debug_assert!(stopped);
                writeln!(out, "\n{}", self.style.dim("[stopped]"))?;
                // The engine reports nothing more once cancelled; the partial answer is
                // kept so the conversation can go on from it.
                Ok(Answered::Text(answer, self.last.unwrap_or_default()))
            }
        }
    }

    fn stats(&self) {
        let turns = self
            .conversation
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .count();
        println!(
            "conversation: {turns} turn{}; context {} tokens",
            if turns == 1 { "" } else { "s" },
            self.engine.info.n_ctx
        );
        match &self.last {
            Some(LastTurn { usage, timings }) => {
                let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
                println!(
                    "last answer: prompt {} tokens, {} from the cache, {} computed in {:.2} s \
                     ({:.1} tok/s)",
                    usage.prompt_tokens,
                    usage.cached_tokens,
                    timings.prompt_computed,
                    timings.prompt_s,
                    rate(timings.prompt_computed, timings.prompt_s)
                );
                println!(
                    "             {} tokens generated ({} thinking) in {:.2} s ({:.1} tok/s)",
                    usage.completion_tokens,
                    usage.reasoning_tokens,
                    timings.generation_s,
                    rate(usage.completion_tokens, timings.generation_s)
                );
            }
            None => println!("no answer yet"),
        }
        println!("settings: {}", self.settings.describe());
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(&self.conversation)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "saved {} messages to {}",
            self.conversation.messages.len(),
            path.display()
        );
        Ok(())
    }

    /// Replaces the conversation with a saved one; a bad file changes nothing.
    fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if len > MAX_SAVED_BYTES {
            bail!("{} is larger than {MAX_SAVED_BYTES} bytes", path.display());
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let conversation: Conversation = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a conversation saved by /save (JSON with \"messages\": \
                 [{{\"role\": \"user\" or \"assistant\", \"content\": TEXT}}])",
                path.display()
            )
        })?;
        println!(
            "loaded {} messages from {}",
            conversation.messages.len(),
            path.display()
        );
        for m in &conversation.messages {
            let who = match m.role {
                Role::User => ">>> ",
                Role::Assistant => "",
            };
            println!("{who}{}", m.content);
        }
        self.conversation = conversation;
        self.last = None;
        Ok(())
    }
}

impl Conversation {
    /// The messages as the chat template takes them.
    fn messages(&self) -> Vec<Message> {
        let system = self.system.iter().map(|s| Message::system(s.as_str()));
        let turns = self.messages.iter().map(|m| match m.role {
            Role::User => Message::user(m.content.as_str()),
            Role::Assistant => Message::assistant(m.content.as_str()),
        });
        system.chain(turns).collect()
    }
}

/// How a turn ended.
enum Answered {
    /// The answer (whole, or up to where Ctrl-C stopped it) and what it cost.
    Text(String, LastTurn),
    /// The engine refused the request (e.g. the conversation no longer fits).
    Refused(String),
}

const HELP: &str = "\
Commands:
  /system [TEXT]        show or set the system prompt
  /clear                start a new conversation (the system prompt is kept)
  /save FILE            write the conversation to FILE (JSON)
  /load FILE            continue a conversation saved with /save
  /set [NAME VALUE]     show or change temp, top_p, top_k, min_p, repeat_penalty,
                        max_tokens, seed
  /stats                prompt and cache figures and speed of the last answer
  /help                 this list
  /bye                  quit (also Ctrl-D)
End a line with \\ to go on to the next one, or put a message between lines of \"\"\".";

/// rustyline's helper: only the check that decides whether the input goes on.
struct Input;

impl Validator for Input {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if input_is_complete(ctx.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl rustyline::completion::Completer for Input {
    type Candidate = String;
}

impl rustyline::hint::Hinter for Input {
    type Hint = String;
}

impl rustyline::highlight::Highlighter for Input {}

impl rustyline::Helper for Input {}

/// Whether the typed input is a whole message: not ending in `\`, and every `"""` block
/// closed.
fn input_is_complete(input: &str) -> bool {
    let fences = input.lines().filter(|l| l.trim() == "\"\"\"").count();
    fences % 2 == 0 && !input.ends_with('\\')
}

/// The message a multi-line input stands for: `\` line ends and `"""` fence lines
/// removed.
fn join_continuations(input: &str) -> String {
    input
        .lines()
        .filter(|l| l.trim() != "\"\"\"")
        .map(|l| l.strip_suffix('\\').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_input() {
        assert!(input_is_complete("hello"));
        assert!(!input_is_complete("first line\\"));
        assert!(!input_is_complete("\"\"\"\nsome code"));
        assert!(input_is_complete("\"\"\"\nsome code\n\"\"\""));
        assert_eq!(join_continuations("one\\\ntwo"), "one\ntwo");
        assert_eq!(
            join_continuations("\"\"\"\nfn main() {}\n\"\"\""),
            "fn main() {}"
        );
    }

    #[test]
    fn set_refuses_bad_values_and_keeps_the_old_ones() {
        let mut s = Settings {
            sampling: SamplingArgs {
                temp: 0.8,
                top_k: 40,
                top_p: 0.95,
                min_p: 0.05,
                repeat_penalty: 1.0,
            },
            max_tokens: 100,
            seed: 1,
        };
        s.set("temp", "0.2").unwrap();
        assert_eq!(s.sampling.temp, 0.2);
        assert!(s.set("temp", "warm").is_err());
        assert!(s.set("top_p", "2").is_err());
        assert!(s.set("max_tokens", "0").is_err());
        assert!(s.set("colour", "1").is_err());
        assert_eq!(s.sampling.top_p, 0.95);
        assert_eq!(s.max_tokens, 100);
    }

    #[test]
    fn saved_conversations_round_trip_and_bad_roles_are_refused() {
        let c = Conversation {
            system: Some("be brief".into()),
            messages: vec![
                Turn {
                    role: Role::User,
                    content: "hi".into(),
                },
                Turn {
                    role: Role::Assistant,
                    content: "hello".into(),
                },
            ],
        };
        let json = serde_json::to_string(&c).unwrap();
        let back: Conversation = serde_json::from_str(&json).unwrap();
        assert_eq!(back.messages.len(), 2);
        assert_eq!(back.messages()[0], Message::system("be brief"));
        assert!(serde_json::from_str::<Conversation>(
            r#"{"messages": [{"role": "tool", "content": "x"}]}"#
        )
        .is_err());
    }
}
