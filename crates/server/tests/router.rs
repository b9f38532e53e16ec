//! The HTTP layer without a model: a scripted engine thread answers the jobs, so that the
//! JSON and SSE shapes (reasoning included, which Gemma never produces), authentication,
//! the loading state and the error bodies are checked exactly.

use std::sync::{mpsc, Arc, Mutex, OnceLock};

use hearth_server::keys::{Keys, Quotas};
use std::thread;

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::Router;
use hearth_engine::logprobs::TokenLogprob;
use hearth_engine::scheduler::{
    ErrorKind, Event, Finish, Job, ModelInfo, RequestError, Timings, Usage,
};
use hearth_server::routes::{router, AppState, MAX_BODY_BYTES};
use serde_json::{json, Value};
use tower::ServiceExt;

/// A router whose engine answers every job with `script`; `loaded: false` leaves the
/// model loading. The jobs come back on the receiver once answered.
fn app(loaded: bool, key: Option<&str>, script: Vec<Event>) -> (Router, mpsc::Receiver<Job>) {
    let (tx, rx) = mpsc::channel::<Job>();
    let (seen_tx, seen_rx) = mpsc::channel::<Job>();
    thread::spawn(move || {
        while let Ok(job) = rx.recv() {
            for e in &script {
                let _ = job.events.send(e.clone());
            }
            let _ = seen_tx.send(job);
        }
    });
    let model = OnceLock::new();
    if loaded {
        let _ = model.set(ModelInfo {
            id: "test-model".into(),
            n_ctx: 128,
            n_ctx_pool: 256,
            parallel: 4,
            queue: 8,
            kv_bytes_per_token: 1024,
            arch: "llama".into(),
            n_ctx_train: 128,
            chat_template: None,
            packed_bytes: 0,
        });
    }
    let state = Arc::new(AppState {
        jobs: Mutex::new(tx),
        model,
        keys: key.map(Keys::single),
        quotas: Arc::new(Quotas::default()),
        usage: None,
        draining: Default::default(),
        in_flight: Default::default(),
        metrics: None,
        sealed: OnceLock::new(),
    });
    (router(state), seen_rx)
}

fn reasoning_script() -> Vec<Event> {
    vec![
        Event::Started { prompt_tokens: 7 },
        Event::Delta {
            index: 0,
            reasoning: "2+2 is ".into(),
            content: String::new(),
            logprobs: Vec::new(),
        },
        Event::Delta {
            index: 0,
            reasoning: "4.".into(),
            content: "Four".into(),
            logprobs: Vec::new(),
        },
        Event::Delta {
            index: 0,
            reasoning: String::new(),
            content: ".".into(),
            logprobs: Vec::new(),
        },
        Event::Done {
            index: 0,
            finish: Finish::Stop,
            usage: Usage {
                prompt_tokens: 7,
                cached_tokens: 0,
                completion_tokens: 5,
                reasoning_tokens: 3,
            },
            timings: Timings::default(),
        },
    ]
}

fn app_loaded() -> (Router, mpsc::Receiver<Job>) {
    app(true, None, reasoning_script())
}

async fn send(
    app: Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Body,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = app.oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, bytes.to_vec())
}

async fn send_json(
    app: Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let (s, b) = send(app, method, uri, key, Body::from(body.to_string())).await;
    (s, serde_json::from_slice(&b).unwrap())
}

fn assert_error(body: &Value, kind: &str) {
    let e = &body["error"];
    assert_eq!(e["type"], kind, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
}

const CHAT: &str = "/v1/chat/completions";

fn hi() -> Value {
    json!({"model": "x", "messages": [{"role": "user", "content": "2+2?"}]})
}

/// The `data:` payloads of an SSE body.
fn events(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("an SSE data line")
                .to_owned()
        })
        .collect()
}

fn json_chunks(ev: &[String]) -> Vec<Value> {
    ev.iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test]
async fn health_is_503_while_loading_then_200() {
    let (loading, _) = app(false, None, vec![]);
    let (s, b) = send_json(loading.clone(), "GET", "/health", None, json!(null)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b, json!({"status": "loading"}));
    let (s, b) = send_json(loading, "POST", CHAT, None, hi()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&b, "unavailable_error");

    let (ready, _) = app_loaded();
    let (s, _) = send_json(ready, "GET", "/health", None, json!(null)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn chat_answer_carries_reasoning_and_usage() {
    let (app, seen) = app_loaded();
    let mut req = hi();
    req["seed"] = json!(3);
    req["stop"] = json!("x");
    let (s, b) = send_json(app, "POST", CHAT, None, req).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], "test-model");
    assert_eq!(
        b["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "Four.", "reasoning_content": "2+2 is 4."}, "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(
        b["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 3}})
    );
    let job = seen.recv().unwrap();
    assert_eq!(job.request.sampler.seed, 3);
    assert_eq!(job.request.stop, vec!["x"]);
}

#[tokio::test]
async fn chat_stream_has_openai_chunks_reasoning_usage_and_done() {
    let (app, _) = app_loaded();
    let mut req = hi();
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (s, body) = send(app, "POST", CHAT, None, Body::from(req.to_string())).await;
    assert_eq!(s, StatusCode::OK);
    let ev = events(&body);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks = json_chunks(&ev[..ev.len() - 1]);
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["delta"])
        .collect();
    assert_eq!(deltas[0], &json!({"role": "assistant", "content": ""}));
    assert_eq!(deltas[1], &json!({"reasoning_content": "2+2 is "}));
    assert_eq!(
        deltas[2],
        &json!({"reasoning_content": "4.", "content": "Four"})
    );
    assert_eq!(deltas[3], &json!({"content": "."}));
    assert_eq!(deltas[4], &json!({}));
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(
        chunks[n - 1]["usage"]["completion_tokens_details"]["reasoning_tokens"],
        3
    );
    for c in &chunks[..n - 1] {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["usage"], Value::Null);
        assert_eq!(c["id"], chunks[0]["id"]);
    }
}

#[tokio::test]
async fn completion_stream_without_usage() {
    let (app, _) = app_loaded();
    let req = json!({"prompt": "2+2=", "stream": true});
    let (s, body) = send(
        app,
        "POST",
        "/v1/completions",
        None,
        Body::from(req.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let ev = events(&body);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks = json_chunks(&ev[..ev.len() - 1]);
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Four.", "a completion has no reasoning field");
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none() && c["object"] == "text_completion"));
}

#[tokio::test]
async fn engine_errors_before_start_are_plain_responses() {
    let err = RequestError {
        kind: ErrorKind::ContextLength,
        message: "the prompt is 200 tokens, context 128".into(),
        param: Some("messages"),
    };
    let (app, _) = app(true, None, vec![Event::Error(err)]);
    let mut req = hi();
    req["stream"] = json!(true);
    let (s, b) = send_json(app, "POST", CHAT, None, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&b, "invalid_request_error");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("200 tokens"));
}

#[tokio::test]
async fn api_key_guards_v1_but_not_health() {
    let (app, _) = app(true, Some("sekrit"), reasoning_script());
    for key in [None, Some("wrong")] {
        let (s, b) = send_json(app.clone(), "GET", "/v1/models", key, json!(null)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_error(&b, "authentication_error");
    }
    let (s, b) = send_json(
        app.clone(),
        "GET",
        "/v1/models",
        Some("sekrit"),
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["data"][0]["id"], "test-model");
    let (s, _) = send_json(app, "GET", "/health", None, json!(null)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn error_statuses_have_openai_bodies() {
    let (app, _) = app_loaded();
    let (s, b) = send_json(app.clone(), "GET", "/nope", None, json!(null)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&b, "not_found_error");
    let (s, b) = send_json(app.clone(), "GET", CHAT, None, json!(null)).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&b, "invalid_request_error");
    let (s, b) = send(app.clone(), "POST", CHAT, None, Body::from("{oops")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(
        &serde_json::from_slice(&b).unwrap(),
        "invalid_request_error",
    );
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    let (s, b) = send(app.clone(), "POST", CHAT, None, Body::from(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(
        &serde_json::from_slice(&b).unwrap(),
        "invalid_request_error",
    );
    let mut req = hi();
    req["n"] = json!(0);
    let (s, b) = send_json(app, "POST", CHAT, None, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["param"], "n");
}

/// A full queue is a 429 in OpenAI's shape, with `Retry-After`.
#[tokio::test]
async fn a_full_queue_is_429_with_retry_after() {
    let err = RequestError {
        kind: ErrorKind::QueueFull { retry_after_s: 3 },
        message: "the server is busy".into(),
        param: None,
    };
    let (app, _) = app(true, None, vec![Event::Error(err)]);
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(CHAT)
        .body(Body::from(hi().to_string()))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "3");
    let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let b: Value = serde_json::from_slice(&body).unwrap();
    assert_error(&b, "rate_limit_error");
    assert_eq!(b["error"]["code"], "rate_limit_exceeded");
}

/// Two choices whose events interleave: each lands in its own `choices[i]`, in order,
/// and the usage counts the prompt once and both choices' tokens.
fn two_choices_script() -> Vec<Event> {
    let delta = |index: usize, content: &str| Event::Delta {
        index,
        reasoning: String::new(),
        content: content.into(),
        logprobs: Vec::new(),
    };
    let done = |index: usize, finish: Finish, completion_tokens: usize| Event::Done {
        index,
        finish,
        usage: Usage {
            prompt_tokens: 9,
            cached_tokens: 8,
            completion_tokens,
            reasoning_tokens: 0,
        },
        timings: Timings::default(),
    };
    vec![
        Event::Started { prompt_tokens: 9 },
        delta(0, "A"),
        delta(1, "X"),
        delta(1, "Y"),
        done(1, Finish::Stop, 2),
        delta(0, "B"),
        done(0, Finish::Length, 3),
    ]
}

#[tokio::test]
async fn n_choices_are_collected_and_streamed_by_index() {
    let (app_, seen) = app(true, None, two_choices_script());
    let mut req = hi();
    req["n"] = json!(2);
    let (s, b) = send_json(app_.clone(), "POST", CHAT, None, req.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(seen.recv().unwrap().request.n, 2);
    assert_eq!(
        b["choices"],
        json!([
            {"index": 0, "message": {"role": "assistant", "content": "AB"}, "logprobs": null, "finish_reason": "length"},
            {"index": 1, "message": {"role": "assistant", "content": "XY"}, "logprobs": null, "finish_reason": "stop"},
        ])
    );
    assert_eq!(
        b["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14,
               "prompt_tokens_details": {"cached_tokens": 8},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    );

    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (_, body) = send(app_, "POST", CHAT, None, Body::from(req.to_string())).await;
    let ev = events(&body);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks = json_chunks(&ev[..ev.len() - 1]);
    let mut text = [String::new(), String::new()];
    let mut finish = [Value::Null, Value::Null];
    for c in &chunks[..chunks.len() - 1] {
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        if let Some(t) = choice["delta"]["content"].as_str() {
            text[i].push_str(t);
        }
        if !choice["finish_reason"].is_null() {
            finish[i] = choice["finish_reason"].clone();
        }
    }
    assert_eq!(text, ["AB".to_owned(), "XY".to_owned()]);
    assert_eq!(finish, [json!("length"), json!("stop")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 8);
}

#[tokio::test]
async fn metrics_without_a_recorder_is_404() {
    let (app, _) = app_loaded();
    let (s, _) = send(app, "GET", "/metrics", None, Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

fn logprob_script() -> Vec<Event> {
    let lp = |bytes: &[u8], logprob: f32, top: &[(&[u8], f32)]| TokenLogprob {
        bytes: bytes.to_vec(),
        logprob,
        top: top.iter().map(|&(b, l)| (b.to_vec(), l)).collect(),
    };
    vec![
        Event::Started { prompt_tokens: 7 },
        Event::Delta {
            index: 0,
            reasoning: String::new(),
            content: "Hi".into(),
            logprobs: vec![lp(b"Hi", -0.5, &[(b"Hi", -0.5), (b"Yo", -1.0)])],
        },
        Event::Delta {
            index: 0,
            reasoning: String::new(),
            content: " there".into(),
            logprobs: vec![lp(b" there", -0.25, &[(b" there", -0.25), (b"!", -2.0)])],
        },
        Event::Done {
            index: 0,
            finish: Finish::Length,
            usage: Usage {
                prompt_tokens: 3,
                cached_tokens: 0,
                completion_tokens: 2,
                reasoning_tokens: 0,
            },
            timings: Timings::default(),
        },
    ]
}

#[tokio::test]
async fn logprobs_have_openai_shapes() {
    let (app_, seen) = app(true, None, logprob_script());
    let mut req = hi();
    req["logprobs"] = json!(true);
    req["top_logprobs"] = json!(2);
    let (s, b) = send_json(app_.clone(), "POST", CHAT, None, req.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(seen.recv().unwrap().request.logprobs, Some(2));
    let hi_entry = json!({"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": [
        {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
        {"token": "Yo", "logprob": -1.0, "bytes": [89, 111]}]});
    assert_eq!(b["choices"][0]["logprobs"]["content"][0], hi_entry);
    assert_eq!(b["choices"][0]["logprobs"]["content"][1]["token"], " there");

    // Streamed: each delta carries its own tokens.
    req["stream"] = json!(true);
    let (_, body) = send(
        app_.clone(),
        "POST",
        CHAT,
        None,
        Body::from(req.to_string()),
    )
    .await;
    let ev = events(&body);
    let chunks = json_chunks(&ev[..ev.len() - 1]);
    assert_eq!(chunks[0]["choices"][0]["logprobs"], Value::Null);
    assert_eq!(
        chunks[1]["choices"][0]["logprobs"]["content"],
        json!([hi_entry])
    );

    // Legacy completions: parallel lists, offsets carried across chunks.
    let text = json!({"prompt": "x", "logprobs": 2});
    let (_, b) = send_json(app_.clone(), "POST", "/v1/completions", None, text.clone()).await;
    assert_eq!(
        b["choices"][0]["logprobs"],
        json!({"tokens": ["Hi", " there"], "token_logprobs": [-0.5, -0.25],
               "top_logprobs": [{"Hi": -0.5, "Yo": -1.0}, {" there": -0.25, "!": -2.0}],
               "text_offset": [0, 2]})
    );
    let mut streamed = text;
    streamed["stream"] = json!(true);
    let (_, body) = send(
        app_,
        "POST",
        "/v1/completions",
        None,
        Body::from(streamed.to_string()),
    )
    .await;
    let ev = events(&body);
    let chunks = json_chunks(&ev[..ev.len() - 1]);
    assert_eq!(
        chunks[1]["choices"][0]["logprobs"]["text_offset"],
        json!([2])
    );
}
