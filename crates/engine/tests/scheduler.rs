//! The engine loop through its public interface, on a tiny random-weight Llama with f32
//! weights: every product then takes the same per-token path whatever shares its batch,
//! so a request's tokens must be *exactly* those it gets alone — batched with others,
//! after a preemption, from the prefix cache, or as one of `n` forks. (On quantized
//! models a batch that also carries a prompt chunk can go through the GEMM, which sums
//! in another order; the server tests check Gemma 3 within a stated margin instead.)

use std::path::Path;
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;

use hearth_engine::chat_template::Message;
use hearth_engine::grammar::Constraint;
use hearth_engine::sampler::SamplerParams;
use hearth_engine::scheduler::{
    self, EngineConfig, ErrorKind, Event, Finish, Job, ModelInfo, Prompt, Request, Usage,
};
use hearth_gguf::Residency;
use hearth_kernels::dispatch::Kernels;
use hearth_models::tiny;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// The process's metrics (every test's engine records into them).
fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap()
    })
}

/// A counter's value in the rendered metrics (0 when absent).
fn counter(name: &str) -> f64 {
    metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The tiny model's words (its vocabulary spells anything else in bytes).
const WORDS: &[&str] = &["the", "hearth", "is", "on", "a", "b", "fire", "warm"];

struct Engine {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    info: ModelInfo,
    _dir: tempfile::TempDir,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn start(ctx: usize, parallel: usize, queue: usize) -> Engine {
    start_with(ctx, parallel, queue, Vec::new())
}

/// As [`start`], with `pending` already queued when the engine takes its first job, so
/// that it admits them all at once however the threads are scheduled.
fn start_with(ctx: usize, parallel: usize, queue: usize, pending: Vec<Job>) -> Engine {
    let (dir, path) = tiny_file(None);
    start_file(&path, ctx, parallel, queue, dir, pending)
}

/// The tiny model with `template` as its chat template, one sequence at a time.
fn start_with_template(template: &str) -> Engine {
    let (dir, path) = tiny_file(Some(template));
    start_file(&path, 256, 1, 4, dir, Vec::new())
}

/// The tiny f32 Llama written to a temporary directory, with `template` if given.
fn tiny_file(template: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let spec = tiny::specs()
        .into_iter()
        .find(|s| s.name == "llama_f32")
        .unwrap();
    let mut w = spec.to_gguf();
    if let Some(t) = template {
        w.set("tokenizer.chat_template", t);
    }
    std::fs::write(&path, w.to_bytes()).unwrap();
    (dir, path)
}

fn start_file(
    path: &Path,
    ctx: usize,
    parallel: usize,
    queue: usize,
    dir: tempfile::TempDir,
    pending: Vec<Job>,
) -> Engine {
    let config = EngineConfig {
        ctx: Some(ctx),
        parallel: Some(parallel),
        queue,
        ..EngineConfig::new(path.to_owned(), 2, Residency::Mapped)
    };
    let (jobs, rx) = mpsc::channel();
    for job in pending {
        jobs.send(job).unwrap();
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        scheduler::run(config, rx, move |r| ready_tx.send(r).unwrap());
    });
    let info = ready_rx.recv().unwrap().unwrap();
    Engine {
        jobs: Some(jobs),
        thread: Some(thread),
        info,
        _dir: dir,
    }
}

/// A prompt of `n` words, different for each `salt`.
fn prompt(n: usize, salt: usize) -> String {
    (0..n)
        .map(|i| WORDS[(i * 7 + salt * 3 + i / 5) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn request(text: &str, max_tokens: usize, temperature: f32, seed: u64) -> Request {
    let sampler = SamplerParams {
        seed,
        temperature,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..SamplerParams::default()
    };
    Request {
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..Request::new(Prompt::Text(text.into()), sampler)
    }
}

impl Engine {
    fn submit(&self, request: Request) -> UnboundedReceiver<Event> {
        let (tx, rx) = unbounded_channel();
        self.jobs
            .as_ref()
            .unwrap()
            .send(Job {
                request,
                events: tx,
            })
            .unwrap();
        rx
    }
}

/// What one request produced: each choice's text and finish, and its usage.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    texts: Vec<String>,
    finishes: Vec<Finish>,
    usage: Vec<Usage>,
}

fn collect(
    mut rx: UnboundedReceiver<Event>,
    n: usize,
) -> Result<Answer, hearth_engine::scheduler::RequestError> {
    let mut a = Answer {
        texts: vec![String::new(); n],
        finishes: vec![Finish::Stop; n],
        usage: vec![Usage::default(); n],
    };
    let mut open = n;
    while open > 0 {
        match rx.blocking_recv().expect("the engine answers every job") {
            Event::Started { .. } => {}
            Event::Delta { index, content, .. } => a.texts[index].push_str(&content),
            Event::Done {
                index,
                finish,
                usage,
                ..
            } => {
                a.finishes[index] = finish;
                a.usage[index] = usage;
                open -= 1;
            }
            Event::ToolCalls { .. } => panic!("no tools were offered"),
            Event::Error(e) => return Err(e),
        }
    }
    Ok(a)
}

fn alone(text: &str, max_tokens: usize, temperature: f32, seed: u64) -> Answer {
    let e = start(512, 1, 4);
    collect(e.submit(request(text, max_tokens, temperature, seed)), 1).unwrap()
}

#[test]
fn batched_requests_generate_what_they_generate_alone() {
    let texts: Vec<String> = (0..6).map(|i| prompt(3 + 4 * i, i)).collect();
    let want: Vec<Answer> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| alone(t, 24, 0.9, i as u64))
        .collect();
    let e = start(1024, 4, 16);
    let rxs: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| e.submit(request(t, 24, 0.9, i as u64)))
        .collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        let got = collect(rx, 1).unwrap();
        assert_eq!(got.texts, want[i].texts, "request {i}");
        assert_eq!(got.usage[0].completion_tokens, 24);
        assert_eq!(got.finishes, vec![Finish::Length]);
    }
}

#[test]
fn a_repeated_prompt_comes_from_the_prefix_cache_with_the_same_output() {
    let text = prompt(14, 1);
    let e = start(1024, 2, 4);
    let first = collect(e.submit(request(&text, 16, 0.0, 0)), 1).unwrap();
    let second = collect(e.submit(request(&text, 16, 0.0, 0)), 1).unwrap();
    let n_prompt = first.usage[0].prompt_tokens;
    assert_eq!(first.usage[0].cached_tokens, 0);
    // Whole blocks, and at least the last prompt token recomputed for its logits.
    let want_cached = (n_prompt - 1) / hearth_models::BLOCK_CELLS * hearth_models::BLOCK_CELLS;
    assert!(want_cached >= 32, "{n_prompt}");
    assert_eq!(second.usage[0].cached_tokens, want_cached);
    assert_eq!(second.texts, first.texts);

    // The next turn: the history with the answer and more; the answer's blocks are
    // cached too (they were fed back into the model while generating).
    let turn2 = format!("{text}{} fire warm hearth", first.texts[0]);
    let cached = collect(e.submit(request(&turn2, 8, 0.0, 0)), 1).unwrap();
    assert!(
        cached.usage[0].cached_tokens >= want_cached,
        "{:?}",
        cached.usage
    );
    assert_eq!(cached.texts, alone(&turn2, 8, 0.0, 0).texts);
}

#[test]
fn n_choices_fork_one_prompt_and_match_single_requests_seeded_apart() {
    let text = prompt(8, 2);
    let e = start(1024, 4, 4);
    let req = Request {
        n: 3,
        ..request(&text, 20, 1.0, 40)
    };
    let got = collect(e.submit(req), 3).unwrap();
    for i in 0..3 {
        let want = alone(&text, 20, 1.0, 40 + i as u64);
        assert_eq!(got.texts[i], want.texts[0], "choice {i}");
        assert_eq!(got.usage[i].prompt_tokens, want.usage[0].prompt_tokens);
    }
    assert!(got.texts[0] != got.texts[1] || got.texts[1] != got.texts[2]);
}

/// A pool too small for both sequences at full length: one is preempted and recomputes,
/// and both still produce exactly their text alone.
#[test]
fn preemption_recomputes_without_changing_the_output() {
    let texts = [prompt(4, 3), prompt(5, 4)];
    let want: Vec<Answer> = texts.iter().map(|t| alone(t, 60, 0.0, 0)).collect();
    // 112 cells: each sequence reaches ~85 tokens, both together ~170. Both queued
    // before the engine starts, so that they run together: submitted one after the
    // other, the first could have taken the pool before the second arrived (a busy CI
    // machine did that), and the second would just wait.
    metrics();
    let (jobs, rxs): (Vec<_>, Vec<_>) = texts
        .iter()
        .map(|t| {
            let (tx, rx) = unbounded_channel();
            let job = Job {
                request: request(t, 60, 0.0, 0),
                events: tx,
            };
            (job, rx)
        })
        .unzip();
    let _e = start_with(112, 2, 4, jobs);
    for (i, rx) in rxs.into_iter().enumerate() {
        assert_eq!(collect(rx, 1).unwrap().texts, want[i].texts, "request {i}");
    }
    // Only this test's pool is too small for its sequences.
    assert!(counter("hearth_preemptions_total") >= 1.0);
}

#[test]
fn refusals_are_typed() {
    let e = start(64, 2, 1);
    // Longer than a sequence may be.
    let err = collect(e.submit(request(&prompt(30, 0), 4, 0.0, 0)), 1).unwrap_err();
    assert_eq!(err.kind, ErrorKind::ContextLength);
    // More choices than run at once.
    let err = collect(
        e.submit(Request {
            n: 3,
            ..request("the", 4, 0.0, 0)
        }),
        3,
    )
    .unwrap_err();
    assert_eq!((err.kind, err.param), (ErrorKind::Invalid, Some("n")));
    // A token id outside the vocabulary.
    let mut r = request("the", 4, 0.0, 0);
    r.sampler.logit_bias = vec![(1_000_000, 1.0)];
    let err = collect(e.submit(r), 1).unwrap_err();
    assert_eq!(err.param, Some("logit_bias"));
    assert_eq!(e.info.parallel, 2);
}

#[test]
fn a_full_queue_refuses_and_the_rest_complete() {
    // One running, one waiting: of four requests sent at once, two are refused.
    let e = start(256, 1, 1);
    let rxs: Vec<_> = (0..4)
        .map(|i| e.submit(request(&prompt(8, i), 40, 0.0, 0)))
        .collect();
    let results: Vec<_> = rxs.into_iter().map(|rx| collect(rx, 1)).collect();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(e) if matches!(e.kind, ErrorKind::QueueFull { .. })))
        .count();
    let done = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!((done, refused), (2, 2), "{results:?}");
}

#[test]
fn a_cancelled_request_frees_its_slot() {
    let e = start(512, 1, 4);
    let mut rx = e.submit(request(&prompt(8, 0), 400, 0.0, 0));
    // Wait for its first token, then go away.
    loop {
        if let Event::Delta { .. } = rx.blocking_recv().unwrap() {
            break;
        }
    }
    drop(rx);
    let text = prompt(12, 5);
    let got = collect(e.submit(request(&text, 10, 0.0, 0)), 1).unwrap();
    assert_eq!(got.texts, alone(&text, 10, 0.0, 0).texts);
}

/// Regression: a request's forks-to-be did not count against `parallel` until its prompt
/// was done, so others were admitted into their slots and the step then held more
/// sequences than the scratch has rows of logits (every request failed with a 500).
#[test]
fn forks_hold_their_slots_before_they_exist() {
    let e = start(1024, 3, 8);
    let forked = e.submit(Request {
        n: 3,
        ..request(&prompt(8, 6), 12, 0.7, 5)
    });
    let others: Vec<_> = (0..3)
        .map(|i| e.submit(request(&prompt(3, i), 12, 0.0, 0)))
        .collect();
    let got = collect(forked, 3).unwrap();
    assert_eq!(got.finishes, vec![Finish::Length; 3]);
    for rx in others {
        assert_eq!(collect(rx, 1).unwrap().finishes, vec![Finish::Length]);
    }
}

/// The tiny model (its vocabulary spells anything in bytes) under a regex: every choice,
/// sampled at temperature 1 with its own seed, matches it and ends where it ends; forks
/// get their own grammar state.
#[test]
fn constrained_choices_match_their_grammar() {
    let e = start(1024, 4, 8);
    let re = "(yes|no), [a-c]{2,4}!";
    let got = collect(
        e.submit(Request {
            n: 4,
            ignore_eos: false,
            constraint: Some(Constraint::Regex(re.into())),
            ..request(&prompt(4, 1), 40, 1.0, 9)
        }),
        4,
    )
    .unwrap();
    for (text, finish) in got.texts.iter().zip(&got.finishes) {
        assert!(matches_yes_no(text), "{text:?}");
        assert_eq!(*finish, Finish::Stop, "{text:?}");
    }
    // A grammar the engine cannot compile is refused, naming the field.
    let err = collect(
        e.submit(Request {
            constraint: Some(Constraint::Lark("start: (".into())),
            ..request("x", 4, 0.0, 0)
        }),
        1,
    )
    .unwrap_err();
    assert_eq!(err.param, Some("response_format"));
}

/// Whether `t` matches `(yes|no), [a-c]{2,4}!`, checked by hand (no regex crate among
/// the dependencies).
fn matches_yes_no(t: &str) -> bool {
    let Some(rest) = t.strip_prefix("yes, ").or_else(|| t.strip_prefix("no, ")) else {
        return false;
    };
    let Some(letters) = rest.strip_suffix('!') else {
        return false;
    };
    (2..=4).contains(&letters.len()) && letters.bytes().all(|b| (b'a'..=b'c').contains(&b))
}

/// A reasoning budget of 0 sets `enable_thinking: false` for templates that read it, and
/// only for those, unless the client set it.
#[test]
fn a_zero_budget_turns_thinking_off_where_the_template_can() {
    let e = start_with_template(
        "{% for m in messages %}{{ m.content }}{% endfor %}\
         {% if enable_thinking is defined and not enable_thinking %} the hearth is off{% endif %}",
    );
    let chat = |budget, kwargs: serde_json::Value| {
        let mut req = request("x", 1, 0.0, 0);
        req.prompt = Prompt::Chat(vec![Message::user("the hearth")]);
        req.reasoning_budget = budget;
        req.template_kwargs = kwargs.as_object().unwrap().clone();
        collect(e.submit(req), 1).unwrap().usage[0].prompt_tokens
    };
    let plain = chat(None, serde_json::json!({}));
    assert!(chat(Some(0), serde_json::json!({})) > plain);
    assert_eq!(chat(Some(5), serde_json::json!({})), plain);
    assert_eq!(
        chat(Some(0), serde_json::json!({"enable_thinking": true})),
        plain
    );
}

/// Special-token text in a message stays text: the template's own `</s>` is the control
/// token, a user's `</s>` is spelled out (else a user could end a turn and write the
/// assistant's). The tiny vocabulary has no `</s>` word, so spelled out it is 4 tokens
/// or more where the control token is 1.
#[test]
fn control_token_text_in_a_message_stays_text() {
    let e = start_with_template("</s>{% for m in messages %}[{{ m.content }}]{% endfor %}</s>");
    let prompt_tokens = |content: &str| {
        let mut req = request("x", 1, 0.0, 0);
        req.prompt = Prompt::Chat(vec![Message::user(content)]);
        collect(e.submit(req), 1).unwrap().usage[0].prompt_tokens
    };
    let plain = prompt_tokens("a");
    assert!(
        prompt_tokens("</s>") >= plain + 3,
        "{} vs {plain}",
        prompt_tokens("</s>")
    );
    // A content found first inside the template's leading `</s>` does not disarm it.
    assert_eq!(prompt_tokens("s"), plain);
}

/// With room for a copy of the file (`Residency::HugePages`) and several sequences, a
/// model whose every matrix packs is served from the mapped file with the packed copies
/// in place of the file's bytes where the packed kernels take every token (AVX-512
/// VNNI): the same text as an engine that keeps both (a mapped file), and the copies
/// cost (next to) no memory beyond the file's.
#[test]
fn fully_packed_models_serve_with_their_copies_in_place_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma3_q.gguf");
    let spec = tiny::specs()
        .into_iter()
        .find(|s| s.name == "gemma3_q")
        .unwrap();
    std::fs::write(&path, spec.to_bytes()).unwrap();
    let engine = |residency| {
        let config = EngineConfig {
            ctx: Some(512),
            parallel: Some(2),
            ..EngineConfig::new(path.clone(), 2, residency)
        };
        let (jobs, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            scheduler::run(config, rx, move |r| ready_tx.send(r).unwrap());
        });
        let info = ready_rx.recv().unwrap().unwrap();
        (jobs, thread, info)
    };
    let texts: Vec<String> = (0..3).map(|i| prompt(5 + 3 * i, i)).collect();
    let mut answers = Vec::new();
    let mut packed = Vec::new();
    for residency in [Residency::Mapped, Residency::HugePages] {
        let (jobs, thread, info) = engine(residency);
        packed.push(info.packed_bytes);
        let rxs: Vec<_> = texts
            .iter()
            .map(|t| {
                let (tx, rx) = unbounded_channel();
                let job = Job {
                    request: request(t, 12, 0.0, 0),
                    events: tx,
                };
                jobs.send(job).unwrap();
                rx
            })
            .collect();
        answers.push(
            rxs.into_iter()
                .map(|rx| collect(rx, 1).unwrap().texts)
                .collect::<Vec<_>>(),
        );
        drop(jobs);
        thread.join().unwrap();
    }
    assert_eq!(answers[0], answers[1], "kept copies and copies in place");
    if Kernels::get().packed_prompts() {
        assert!(
            packed[1] * 10 < packed[0],
            "copies in place cost {} bytes beyond the file, kept ones {}",
            packed[1],
            packed[0]
        );
    }
}
