//! Request bodies: parsed from JSON by hand so that every wrong type or out-of-range value
//! gets a 400 that names the field. Unknown fields are ignored, as OpenAI's clients expect.

use hearth_engine::chat_template::{Content, ContentPart, ToolCall};
use hearth_engine::logprobs::{MAX_LOGPROBS_COMPLETION, MAX_TOP_LOGPROBS_CHAT};
use hearth_engine::sampler::{Penalties, SamplerParams};
use hearth_engine::scheduler::{Prompt, Request};
use hearth_engine::Message;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::structured;

/// The largest number of stop strings (OpenAI's limit).
pub const MAX_STOP: usize = 4;

/// The longest stop string, in bytes (every generated token is checked against each).
pub const MAX_STOP_BYTES: usize = 1024;

/// The most tokens `logit_bias` may name (OpenAI allows 300; a bias list is copied into
/// every choice's sampler, so it is bounded).
pub const MAX_LOGIT_BIAS: usize = 1024;

/// A validated request: what the engine generates, and how the answer is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    /// What to generate.
    pub request: Request,
    /// Stream the answer as server-sent events.
    pub stream: bool,
    /// Send a last chunk with the usage (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// The most choices a request may ask for (the engine also holds `n` to its
/// `--parallel`).
pub const MAX_N: i64 = 128;

/// Parses a `/v1/chat/completions` body.
pub fn parse_chat(body: &[u8]) -> Result<GenRequest, ApiError> {
    let obj = parse_object(body)?;
    let messages = match obj.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, m)| parse_message(i, m))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "messages",
                "'messages' must not be empty",
            ))
        }
        Some(_) => return Err(ApiError::invalid("messages", "'messages' must be an array")),
        None => {
            return Err(ApiError::invalid(
                "messages",
                "missing required parameter 'messages'",
            ))
        }
    };
    let mut max = opt_count(&obj, "max_completion_tokens")?;
    if max.is_none() {
        max = opt_count(&obj, "max_tokens")?;
    }
    let mut req = common(&obj, Prompt::Chat(messages), max)?;
    let top = opt_int(&obj, "top_logprobs")?;
    req.request.logprobs = match (opt_bool(&obj, "logprobs")?.unwrap_or(false), top) {
        (_, Some(k)) if !(0..=MAX_TOP_LOGPROBS_CHAT as i64).contains(&k) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("'top_logprobs' must be in [0, {MAX_TOP_LOGPROBS_CHAT}], not {k}"),
            ))
        }
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "'logprobs' must be true when 'top_logprobs' is given",
            ))
        }
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, None) => None,
    };
    req.request.split_reasoning = match obj.get("reasoning_format") {
        None | Some(Value::Null) => true,
        Some(Value::String(f)) if f == "none" => false,
        Some(Value::String(f)) if f == "deepseek" || f == "auto" => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "reasoning_format",
                "'reasoning_format' must be \"deepseek\", \"auto\" or \"none\"",
            ))
        }
    };
    req.request.reasoning_budget = structured::reasoning_budget(&obj)?;
    req.request.template_kwargs = structured::template_kwargs(&obj)?;
    req.request.tools = structured::tools(&obj)?;
    Ok(req)
}

/// Parses a `/v1/completions` body.
pub fn parse_completion(body: &[u8]) -> Result<GenRequest, ApiError> {
    let obj = parse_object(body)?;
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_owned()
        }
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "prompt",
                "only one prompt per request is supported ('prompt' must be a string or a list of one string)",
            ))
        }
        Some(_) => return Err(ApiError::invalid("prompt", "'prompt' must be a string")),
        None => {
            return Err(ApiError::invalid(
                "prompt",
                "missing required parameter 'prompt'",
            ))
        }
    };
    let max = opt_count(&obj, "max_tokens")?;
    let mut req = common(&obj, Prompt::Text(prompt), max)?;
    req.request.logprobs = match opt_int(&obj, "logprobs")? {
        None => None,
        Some(k) if (0..=MAX_LOGPROBS_COMPLETION as i64).contains(&k) => Some(k as usize),
        Some(k) => {
            return Err(ApiError::invalid(
                "logprobs",
                format!("'logprobs' must be in [0, {MAX_LOGPROBS_COMPLETION}], not {k}"),
            ))
        }
    };
    Ok(req)
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
    }
}

fn parse_message(i: usize, m: &Value) -> Result<Message, ApiError> {
    let param = format!("messages[{i}]");
    let obj = m
        .as_object()
        .ok_or_else(|| ApiError::invalid(&param, format!("'{param}' must be an object")))?;
    let role = match obj.get("role") {
        Some(Value::String(r)) => r.clone(),
        _ => {
            return Err(ApiError::invalid(
                format!("{param}.role"),
                format!("'{param}.role' must be a string"),
            ))
        }
    };
    let content = match obj.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Content::Text(s.clone())),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let pp = format!("{param}.content[{j}]");
                let kind = p.get("type").and_then(Value::as_str);
                let text = p.get("text").and_then(Value::as_str);
                match (kind, text) {
                    (Some("text"), Some(t)) => out.push(ContentPart::text(t)),
                    (Some("text"), None) => {
                        return Err(ApiError::invalid(
                            pp.clone(),
                            format!("'{pp}.text' must be a string"),
                        ))
                    }
                    (Some(other), _) => {
                        return Err(ApiError::invalid(
                            pp,
                            format!("content parts of type '{other}' are not supported: this model takes text only"),
                        ))
                    }
                    (None, _) => {
                        return Err(ApiError::invalid(pp.clone(), format!("'{pp}.type' must be a string")))
                    }
                }
            }
            Some(Content::Parts(out))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param}.content"),
                format!("'{param}.content' must be a string or an array of content parts"),
            ))
        }
    };
    let name = obj.get("name").and_then(Value::as_str).map(str::to_owned);
    let tool_call_id = match obj.get("tool_call_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param}.tool_call_id"),
                format!("'{param}.tool_call_id' must be a string"),
            ))
        }
    };
    let tool_calls = match obj.get("tool_calls") {
        None | Some(Value::Null) => None,
        Some(Value::Array(calls)) => Some(
            calls
                .iter()
                .enumerate()
                .map(|(j, c)| parse_tool_call(&format!("{param}.tool_calls[{j}]"), c))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param}.tool_calls"),
                format!("'{param}.tool_calls' must be an array"),
            ))
        }
    };
    Ok(Message {
        role,
        content,
        name,
        tool_calls,
        tool_call_id,
        ..Message::default()
    })
}

/// One of an assistant turn's `tool_calls`: `{id, type, function: {name, arguments}}`,
/// the arguments a JSON string as OpenAI sends them (kept as sent: whether a template
/// reads a string or an object is the engine's call, `tools::history_for`).
fn parse_tool_call(param: &str, c: &Value) -> Result<ToolCall, ApiError> {
    let f = structured::function_of(param, c)?;
    let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            format!("{param}.function.name"),
            format!("'{param}.function.name' must be a string"),
        )
    })?;
    let arguments = match f.get("arguments") {
        Some(v @ (Value::String(_) | Value::Object(_))) => v.clone(),
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param}.function.arguments"),
                format!("'{param}.function.arguments' must be a JSON string"),
            ))
        }
    };
    let id = c.get("id").and_then(Value::as_str).unwrap_or_default();
    Ok(ToolCall::function(id, name, arguments))
}

/// The fields both endpoints share.
fn common(
    obj: &Map<String, Value>,
    prompt: Prompt,
    max_tokens: Option<usize>,
) -> Result<GenRequest, ApiError> {
    let n = match opt_int(obj, "n")? {
        None => 1,
        Some(n) if (1..=MAX_N).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("'n' must be between 1 and {MAX_N}, not {n}"),
            ))
        }
    };
    // llama.cpp's extension: end-of-generation tokens are never drawn (benchmarks that
    // need a fixed number of tokens).
    let ignore_eos = opt_bool(obj, "ignore_eos")?.unwrap_or(false);
    if let Some(v) = obj.get("model") {
        if !v.is_string() && !v.is_null() {
            return Err(ApiError::invalid("model", "'model' must be a string"));
        }
    }
    if let Some(v) = obj.get("user") {
        if !v.is_string() && !v.is_null() {
            return Err(ApiError::invalid("user", "'user' must be a string"));
        }
    }
    let defaults = SamplerParams::default();
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => random_seed(),
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or_default(),
        // Negative seeds are allowed by OpenAI; their bits seed the generator.
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or_default() as u64,
        Some(_) => return Err(ApiError::invalid("seed", "'seed' must be an integer")),
    };
    let temperature = opt_f32(obj, "temperature", 0.0, 2.0)?.unwrap_or(defaults.temperature);
    let top_p = opt_f32(obj, "top_p", 0.0, 1.0)?.unwrap_or(defaults.top_p);
    if top_p <= 0.0 {
        return Err(ApiError::invalid("top_p", "'top_p' must be in (0, 1]"));
    }
    let min_p = opt_f32(obj, "min_p", 0.0, 1.0)?.unwrap_or(defaults.min_p);
    let top_k = match opt_int(obj, "top_k")? {
        None => defaults.top_k,
        Some(k) if k >= 0 => k as usize,
        Some(_) => return Err(ApiError::invalid("top_k", "'top_k' must be at least 0")),
    };
    let presence = opt_f32(obj, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let frequency = opt_f32(obj, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let repeat = opt_f32(obj, "repeat_penalty", 0.0, 10.0)?.unwrap_or(1.0);
    if repeat <= 0.0 {
        return Err(ApiError::invalid(
            "repeat_penalty",
            "'repeat_penalty' must be above 0",
        ));
    }
    let logit_bias = match obj.get("logit_bias") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) if map.len() > MAX_LOGIT_BIAS => {
            return Err(ApiError::invalid(
                "logit_bias",
                format!(
                    "'logit_bias' takes at most {MAX_LOGIT_BIAS} tokens, not {}",
                    map.len()
                ),
            ))
        }
        Some(Value::Object(map)) => {
            let mut out = Vec::with_capacity(map.len());
            for (k, v) in map {
                let id: u32 = k.parse().map_err(|_| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("'logit_bias' keys must be token ids, not '{k}'"),
                    )
                })?;
                let b = v
                    .as_f64()
                    .filter(|b| (-100.0..=100.0).contains(b))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "logit_bias",
                            format!(
                                "'logit_bias' values must be numbers in [-100, 100] (token {k})"
                            ),
                        )
                    })?;
                out.push((id, b as f32));
            }
            out
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "logit_bias",
                "'logit_bias' must be an object",
            ))
        }
    };
    let stop: Vec<String> = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP {
                return Err(ApiError::invalid(
                    "stop",
                    format!(
                        "'stop' takes at most {MAX_STOP} strings, not {}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .map(|s| {
                    s.as_str().map(str::to_owned).ok_or_else(|| {
                        ApiError::invalid("stop", "'stop' must be a string or an array of strings")
                    })
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "'stop' must be a string or an array of strings",
            ))
        }
    };
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "stop strings may be at most {MAX_STOP_BYTES} bytes, not {}",
                long.len()
            ),
        ));
    }
    let stream = opt_bool(obj, "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid(
                    "stream_options.include_usage",
                    "'stream_options.include_usage' must be a boolean",
                ))
            }
        },
        Some(_) => {
            return Err(ApiError::invalid(
                "stream_options",
                "'stream_options' must be an object",
            ))
        }
    };
    let request = Request {
        prompt,
        max_tokens,
        sampler: SamplerParams {
            seed,
            temperature,
            top_k,
            top_p,
            min_p,
            penalties: Penalties {
                repeat,
                frequency,
                presence,
                ..Penalties::default()
            },
            logit_bias,
        },
        stop,
        logprobs: None,
        split_reasoning: false,
        n,
        ignore_eos,
        constraint: structured::response_format(obj)?,
        reasoning_budget: None,
        tools: None,
        template_kwargs: Map::new(),
    };
    Ok(GenRequest {
        request,
        stream,
        include_usage,
    })
}

fn opt_int(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(_) => Err(ApiError::invalid(
            key,
            format!("'{key}' must be an integer"),
        )),
    }
}

/// A token count: an integer of at least 1.
fn opt_count(obj: &Map<String, Value>, key: &str) -> Result<Option<usize>, ApiError> {
    match opt_int(obj, key)? {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(n as usize)),
        Some(n) => Err(ApiError::invalid(
            key,
            format!("'{key}' must be at least 1, not {n}"),
        )),
    }
}

fn opt_f32(obj: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if (lo..=hi).contains(&v) {
                Ok(Some(v as f32))
            } else {
                Err(ApiError::invalid(
                    key,
                    format!("'{key}' must be in [{lo}, {hi}], not {v}"),
                ))
            }
        }
        Some(_) => Err(ApiError::invalid(key, format!("'{key}' must be a number"))),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(key, format!("'{key}' must be a boolean"))),
    }
}

/// A seed from the clock, for requests that give none.
pub fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64).rotate_left(17) ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_request_with_parts_and_options() {
        let r = parse_chat(
            br#"{"model":"x","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "max_tokens":5,"temperature":0,"seed":7,"stop":["a","b"],"stream":true,
            "stream_options":{"include_usage":true},"unknown_field":{"x":1},"n":1}"#,
        )
        .unwrap();
        assert_eq!(r.request.max_tokens, Some(5));
        assert_eq!(r.request.sampler.seed, 7);
        assert_eq!(r.request.sampler.temperature, 0.0);
        assert_eq!(r.request.stop, vec!["a", "b"]);
        assert!(r.stream && r.include_usage);
        match r.request.prompt {
            Prompt::Chat(m) => assert_eq!(m[0].content.as_ref().unwrap().joined_text(), "hi"),
            Prompt::Text(_) => panic!("not chat"),
        }
    }

    #[test]
    fn logprobs_ranges_name_the_field() {
        let chat = |extra: &str| {
            parse_chat(
                format!(r#"{{"messages":[{{"role":"user","content":"x"}}]{extra}}}"#).as_bytes(),
            )
        };
        assert_eq!(chat("").unwrap().request.logprobs, None);
        assert_eq!(
            chat(r#","logprobs":true"#).unwrap().request.logprobs,
            Some(0)
        );
        assert_eq!(
            chat(r#","logprobs":true,"top_logprobs":20"#)
                .unwrap()
                .request
                .logprobs,
            Some(20)
        );
        assert_eq!(chat(r#","logprobs":false"#).unwrap().request.logprobs, None);
        for (extra, param) in [
            (r#","logprobs":true,"top_logprobs":21"#, "top_logprobs"),
            (r#","logprobs":true,"top_logprobs":-1"#, "top_logprobs"),
            (r#","top_logprobs":2"#, "top_logprobs"),
            (r#","logprobs":1"#, "logprobs"),
        ] {
            let e = chat(extra).unwrap_err();
            assert_eq!((e.status.as_u16(), e.param.as_deref()), (400, Some(param)));
        }
        let text = |extra: &str| parse_completion(format!(r#"{{"prompt":"x"{extra}}}"#).as_bytes());
        assert_eq!(text(r#","logprobs":5"#).unwrap().request.logprobs, Some(5));
        assert_eq!(text(r#","logprobs":0"#).unwrap().request.logprobs, Some(0));
        assert_eq!(text(r#","logprobs":null"#).unwrap().request.logprobs, None);
        for extra in [
            r#","logprobs":6"#,
            r#","logprobs":-1"#,
            r#","logprobs":true"#,
        ] {
            let e = text(extra).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.param.as_deref()),
                (400, Some("logprobs"))
            );
        }
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"messages":[{"role":"user","content":"x"}],"n":0}"#,
                "n",
            ),
            (
                br#"{"messages":[{"role":"user","content":"x"}],"n":1000}"#,
                "n",
            ),
            (
                br#"{"messages":[{"role":"user","content":"x"}],"ignore_eos":1}"#,
                "ignore_eos",
            ),
            (
                br#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "temperature",
            ),
            (
                br#"{"messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                br#"{"messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
                "stop",
            ),
            (
                br#"{"messages":[{"role":"user","content":"x"}],"logit_bias":{"abc":1}}"#,
                "logit_bias",
            ),
            (br#"{"messages":"hi"}"#, "messages"),
            (br#"{}"#, "messages"),
        ];
        for (body, param) in cases {
            let e = parse_chat(body).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(
                e.param.as_deref(),
                Some(*param),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let e = parse_chat(b"{not json").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("not valid JSON"));
    }

    /// Regression: the split could not be turned off, and completions split too (their
    /// `text` then lost the `<think>` part).
    #[test]
    fn reasoning_split_is_per_request() {
        let chat = |extra: &str| {
            parse_chat(
                format!(r#"{{"messages":[{{"role":"user","content":"hi"}}]{extra}}}"#).as_bytes(),
            )
        };
        assert!(chat("").unwrap().request.split_reasoning);
        assert!(
            chat(r#","reasoning_format":"deepseek""#)
                .unwrap()
                .request
                .split_reasoning
        );
        assert!(
            !chat(r#","reasoning_format":"none""#)
                .unwrap()
                .request
                .split_reasoning
        );
        let e = chat(r#","reasoning_format":"raw""#).unwrap_err();
        assert!(format!("{e:?}").contains("reasoning_format"), "{e:?}");
        assert!(
            !parse_completion(br#"{"prompt":"hi"}"#)
                .unwrap()
                .request
                .split_reasoning
        );
    }

    #[test]
    fn completion_prompt() {
        let r = parse_completion(br#"{"prompt":["Once"],"max_tokens":3}"#).unwrap();
        assert_eq!(r.request.prompt, Prompt::Text("Once".into()));
        assert!(parse_completion(br#"{"prompt":["a","b"]}"#).is_err());
    }
}
