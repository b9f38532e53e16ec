//! Function calling: the tool-call format a chat template speaks, the grammar that
//! enforces a call (`tool_choice` `required` or a named function), and the parser that
//! turns the model's text into OpenAI's `tool_calls`.
//!
//! Formats, found from the template's source (as llama.cpp's `common/chat.cpp` does):
//! - **Hermes** (Qwen2.5, Qwen3, Hermes): `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`;
//! - **DeepSeek** (R1, V3): `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{…}\n```<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>`;
//! - **Mistral**: `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`;
//! - **Llama 3.x**: the answer is one JSON object `{"name": …, "parameters": {…}}`;
//! - **Generic**, for templates that know no tools (Gemma 3): the tools are described in
//!   a system message and the whole answer is JSON, either `{"tool_calls": [{"name": …,
//!   "arguments": {…}}]}` or `{"response": "…"}`, always enforced by the grammar.
//!
//! With `auto`, the model chooses: in the Hermes, DeepSeek and Mistral formats a call's
//! grammar starts when its marker appears in the answer (a lazy grammar, as llama.cpp's
//! triggers), so a call, once started, is constrained; Llama 3.x's bare JSON is parsed
//! without one; the generic format is a grammar from the first token.

use serde_json::{json, Map, Value};

use crate::chat_template::Message;
use crate::grammar::{compact_json, Constraint};

/// How a template writes tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>` JSON `</tool_call>`.
    Hermes,
    /// DeepSeek's tool-call tokens.
    DeepSeek,
    /// `[TOOL_CALLS]` then a JSON array.
    Mistral,
    /// One JSON object with `name` and `parameters`.
    Llama3,
    /// Tools described in a system message, answers as JSON.
    Generic,
}

/// Where DeepSeek's tool-call tokens begin and end (full-width bars, `▁` spaces).
const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";

impl ToolFormat {
    /// The format a template's source writes calls in.
    pub fn detect(template_source: &str) -> ToolFormat {
        if template_source.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if template_source.contains(DS_CALLS_BEGIN) {
            ToolFormat::DeepSeek
        } else if template_source.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if template_source.contains("<|python_tag|>")
            || (template_source.contains("ipython") && template_source.contains("parameters"))
        {
            ToolFormat::Llama3
        } else {
            ToolFormat::Generic
        }
    }

    /// The text that opens a call in free text, where there is one.
    pub fn trigger(self) -> Option<&'static str> {
        match self {
            ToolFormat::Hermes => Some("<tool_call>"),
            ToolFormat::DeepSeek => Some(DS_CALLS_BEGIN),
            ToolFormat::Mistral => Some("[TOOL_CALLS]"),
            ToolFormat::Llama3 => Some("{\""),
            ToolFormat::Generic => None,
        }
    }
}

/// OpenAI's `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// No call (the tools are still shown to the model).
    None,
    /// The model chooses.
    Auto,
    /// At least one call.
    Required,
    /// A call of this function.
    Named(String),
}

/// The tools of a request and how they may be used.
#[derive(Clone, Debug, PartialEq)]
pub struct Tools {
    /// OpenAI's `tools` entries (`{"type": "function", "function": {name, description,
    /// parameters}}`), validated by the caller.
    pub tools: Vec<Value>,
    /// `tool_choice`.
    pub choice: ToolChoice,
    /// `parallel_tool_calls`: more than one call in an answer.
    pub parallel: bool,
}

/// One call the model made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, a JSON object as text.
    pub arguments: String,
}

impl Tools {
    fn functions(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.tools.iter().filter_map(|t| {
            let f = t.get("function")?;
            let name = f.get("name")?.as_str()?;
            Some((name, f.get("parameters").unwrap_or(&Value::Null)))
        })
    }

    /// The functions a call may name, with their parameter schemas.
    fn callable(&self) -> Vec<(&str, Value)> {
        self.functions()
            .filter(|(name, _)| match &self.choice {
                ToolChoice::Named(n) => n == name,
                _ => true,
            })
            .map(|(name, params)| {
                let mut params = match params {
                    Value::Object(_) => params.clone(),
                    _ => json!({"type": "object", "properties": {}}),
                };
                // Arguments the function does not declare are refused unless the schema
                // says otherwise (OpenAI's strict mode does the same): given the freedom,
                // small models invent argument after argument.
                if let Value::Object(o) = &mut params {
                    o.entry("additionalProperties")
                        .or_insert(Value::Bool(false));
                }
                (name, params)
            })
            .collect()
    }

    /// The JSON schema of one call, `{"<name key>": NAME, "<args key>": ARGS}`.
    fn call_schema(&self, name_key: &str, args_key: &str) -> Value {
        let any_of: Vec<Value> = self
            .callable()
            .into_iter()
            .map(|(name, params)| {
                json!({
                    "type": "object",
                    "properties": {name_key: {"const": name}, args_key: params},
                    "required": [name_key, args_key],
                    "additionalProperties": false,
                })
            })
            .collect();
        json!({ "anyOf": any_of })
    }

    /// The grammar the answer must follow, if any: a call for `required` and a named
    /// function in every format, and the generic format's JSON for `auto` too.
    pub fn constraint(&self, format: ToolFormat) -> Option<Constraint> {
        let forced = matches!(self.choice, ToolChoice::Required | ToolChoice::Named(_));
        self.grammar(format, forced)
    }

    /// With `auto`, the grammar of a call for formats whose calls open with a marker
    /// (Hermes, DeepSeek, Mistral): the scheduler starts it when the marker appears, so
    /// a call, once started, is constrained. Returns the marker too.
    pub fn lazy_constraint(&self, format: ToolFormat) -> Option<(Constraint, &'static str)> {
        if self.choice != ToolChoice::Auto
            || !matches!(
                format,
                ToolFormat::Hermes | ToolFormat::DeepSeek | ToolFormat::Mistral
            )
        {
            return None;
        }
        Some((self.grammar(format, true)?, format.trigger()?))
    }

    /// The answer's grammar: a call when `forced`, the generic format's JSON in any case.
    fn grammar(&self, format: ToolFormat, forced: bool) -> Option<Constraint> {
        if self.choice == ToolChoice::None || self.tools.is_empty() {
            return None;
        }
        let max = if self.parallel { Value::Null } else { json!(1) };
        let calls_schema = |name_key: &str, args_key: &str| {
            let mut s = json!({"type": "array", "items": self.call_schema(name_key, args_key), "minItems": 1});
            if !max.is_null() {
                s["maxItems"] = max.clone();
            }
            s
        };
        let lark = |body: String| Some(Constraint::Lark(body));
        let json_rule = |schema: &Value| format!("%json {}", compact_json(schema.clone()));
        let repeat = if self.parallel { "+" } else { "" };
        match format {
            ToolFormat::Generic => {
                let calls = json!({
                    "type": "object",
                    "properties": {"tool_calls": calls_schema("name", "arguments")},
                    "required": ["tool_calls"],
                    "additionalProperties": false,
                });
                let schema = if forced {
                    calls
                } else {
                    json!({"anyOf": [calls, {
                        "type": "object",
                        "properties": {"response": {"type": "string"}},
                        "required": ["response"],
                        "additionalProperties": false,
                    }]})
                };
                Some(Constraint::JsonSchema(schema))
            }
            _ if !forced => None,
            ToolFormat::Hermes => lark(format!(
                "start: call{repeat}\ncall: \"<tool_call>\\n\" body \"\\n</tool_call>\" /\\n?/\nbody: {}\n",
                json_rule(&self.call_schema("name", "arguments"))
            )),
            ToolFormat::Mistral => lark(format!(
                "start: \"[TOOL_CALLS]\" body\nbody: {}\n",
                json_rule(&calls_schema("name", "arguments"))
            )),
            ToolFormat::Llama3 => lark(format!(
                "start: body\nbody: {}\n",
                json_rule(&self.call_schema("name", "parameters"))
            )),
            ToolFormat::DeepSeek => {
                // One alternative per function: its name, then its own arguments' schema.
                let alts: Vec<String> = self
                    .callable()
                    .iter()
                    .enumerate()
                    .map(|(i, _)| format!("f{i}"))
                    .collect();
                let mut g = format!(
                    "start: \"{DS_CALLS_BEGIN}\" call{repeat} \"{DS_CALLS_END}\"\ncall: {}\n",
                    alts.join(" | ")
                );
                for (i, (name, params)) in self.callable().iter().enumerate() {
                    g.push_str(&format!(
                        "f{i}: \"{DS_CALL_BEGIN}function{DS_SEP}\" {} \"\\n```json\\n\" a{i} \"\\n```{DS_CALL_END}\"\na{i}: {}\n",
                        serde_json::to_string(name).unwrap_or_default(),
                        json_rule(params)
                    ));
                }
                lark(g)
            }
        }
    }

    /// A system message describing the tools and how to call them in `format`, for
    /// templates that do not show tools themselves (Gemma 3's knows none; DeepSeek-R1's
    /// writes calls but never lists the tools).
    pub fn instructions(&self, format: ToolFormat) -> String {
        let list: Vec<Value> = self
            .tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let field = |k: &str| f.get(k).cloned().unwrap_or(Value::Null);
                json!({"name": field("name"), "description": field("description"), "parameters": field("parameters")})
            })
            .collect();
        let how = match format {
            ToolFormat::Generic => "To call tools, answer with JSON: {\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}]}. Otherwise answer with JSON: {\"response\": \"<your answer>\"}.".to_owned(),
            ToolFormat::Hermes => "To call a tool, write <tool_call>\n{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}\n</tool_call>".to_owned(),
            ToolFormat::Mistral => "To call tools, write [TOOL_CALLS][{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}]".to_owned(),
            ToolFormat::Llama3 => "To call a tool, answer with JSON: {\"name\": \"<tool name>\", \"parameters\": {<arguments>}}".to_owned(),
            ToolFormat::DeepSeek => format!("To call a tool, write {DS_CALLS_BEGIN}{DS_CALL_BEGIN}function{DS_SEP}<tool name>\n```json\n{{<arguments>}}\n```{DS_CALL_END}{DS_CALLS_END}"),
        };
        format!(
            "You can call these tools:\n{}\n{how}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        )
    }
}

/// A conversation's earlier calls and results, as the template in `format` can read
/// them: the generic format (a template that knows no tools, and often refuses any role
/// but user and assistant) gets the calls as the assistant's JSON answer and the results
/// as user turns holding `{"tool_response": …}`; DeepSeek's template concatenates the
/// arguments, so it gets them as a JSON string (the client's own, when it sent one); the
/// others apply `tojson` and get an object (transformers' convention, which vLLM and
/// llama.cpp follow too), parsed from the string OpenAI clients send.
pub fn history_for(format: ToolFormat, messages: &[Message]) -> Vec<Message> {
    messages
        .iter()
        .map(|m| match format {
            ToolFormat::Generic if m.role == "tool" => {
                let text = m
                    .content
                    .as_ref()
                    .map(|c| c.joined_text())
                    .unwrap_or_default();
                let response = json!({"tool_response": {
                    "tool_call_id": m.tool_call_id,
                    "content": text,
                }});
                Message::user(response.to_string())
            }
            ToolFormat::Generic if m.tool_calls.is_some() => {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|c| json!({"name": c.function.name, "arguments": as_object(&c.function.arguments)}))
                    .collect();
                Message::assistant(json!({ "tool_calls": calls }).to_string())
            }
            ToolFormat::DeepSeek if m.tool_calls.is_some() => {
                let mut m = m.clone();
                for c in m.tool_calls.iter_mut().flatten() {
                    if !c.function.arguments.is_string() {
                        c.function.arguments = Value::String(c.function.arguments.to_string());
                    }
                }
                m
            }
            _ if m.tool_calls.is_some() => {
                let mut m = m.clone();
                for c in m.tool_calls.iter_mut().flatten() {
                    c.function.arguments = as_object(&c.function.arguments);
                }
                m
            }
            _ => m.clone(),
        })
        .collect()
}

/// Arguments sent as a JSON string holding an object, as that object; anything else as
/// it is.
fn as_object(arguments: &Value) -> Value {
    match arguments {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| arguments.clone()),
        _ => arguments.clone(),
    }
}

/// The answer text of a choice that may call tools: text before anything that could be
/// a call streams on; from a call's opening on (the whole answer, for the JSON formats)
/// it is held, and parsed when the answer ends.
#[derive(Clone, Debug)]
pub struct ToolText {
    format: ToolFormat,
    held: String,
    holding: bool,
}

impl ToolText {
    /// A stage for answers in `format`.
    pub fn new(format: ToolFormat) -> ToolText {
        ToolText {
            format,
            held: String::new(),
            holding: matches!(format, ToolFormat::Generic | ToolFormat::Llama3),
        }
    }

    /// Adds answer text; returns what may be sent now.
    pub fn push(&mut self, text: &str) -> String {
        self.held.push_str(text);
        if self.holding {
            return String::new();
        }
        let trigger = self.format.trigger().unwrap_or_default();
        if let Some(at) = self.held.find(trigger) {
            self.holding = true;
            let out = self.held[..at].to_owned();
            self.held.drain(..at);
            return out;
        }
        // Keep back a tail that could be the start of the trigger.
        let keep = (1..trigger.len().min(self.held.len() + 1))
            .rev()
            .find(|&k| {
                self.held.is_char_boundary(self.held.len() - k)
                    && trigger.starts_with(&self.held[self.held.len() - k..])
            })
            .unwrap_or(0);
        let emit = self.held.len() - keep;
        let out = self.held[..emit].to_owned();
        self.held.drain(..emit);
        out
    }

    /// Ends the answer: the text still to send, and the calls found.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        let held = std::mem::take(&mut self.held);
        if !self.holding {
            return (held, Vec::new());
        }
        parse_calls(self.format, &held)
    }
}

/// Splits an answer in `format` into its text and its calls. Text that only looks like
/// a call (arguments that are not a JSON object, an unknown shape) stays text.
pub fn parse_calls(format: ToolFormat, text: &str) -> (String, Vec<ToolCall>) {
    let parsed = match format {
        ToolFormat::Hermes => parse_hermes(text),
        ToolFormat::DeepSeek => parse_deepseek(text),
        ToolFormat::Mistral => parse_mistral(text),
        ToolFormat::Llama3 => {
            parse_object_call(text.trim(), "parameters").map(|c| (String::new(), vec![c]))
        }
        ToolFormat::Generic => parse_generic(text),
    };
    parsed.unwrap_or_else(|| (text.to_owned(), Vec::new()))
}

/// `{"name": …, ARGS_KEY: {…}}` as a call.
fn call_from(v: &Value, args_key: &str) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?.to_owned();
    let args = v.get(args_key).or_else(|| v.get("arguments"))?;
    let arguments = match args {
        Value::Object(_) => serde_json::to_string(args).ok()?,
        // Some models write the arguments as a JSON string, as OpenAI sends them.
        Value::String(s) if serde_json::from_str::<Map<String, Value>>(s).is_ok() => s.clone(),
        _ => return None,
    };
    Some(ToolCall { name, arguments })
}

fn parse_object_call(text: &str, args_key: &str) -> Option<ToolCall> {
    call_from(&serde_json::from_str::<Value>(text).ok()?, args_key)
}

fn parse_hermes(text: &str) -> Option<(String, Vec<ToolCall>)> {
    let start = text.find("<tool_call>")?;
    let mut calls = Vec::new();
    let mut rest = &text[start..];
    while let Some(body) = rest.strip_prefix("<tool_call>") {
        let end = body.find("</tool_call>")?;
        calls.push(parse_object_call(body[..end].trim(), "arguments")?);
        rest = body[end + "</tool_call>".len()..].trim_start();
    }
    let content = format!("{}{}", &text[..start], rest).trim().to_owned();
    Some((content, calls))
}

fn parse_mistral(text: &str) -> Option<(String, Vec<ToolCall>)> {
    let start = text.find("[TOOL_CALLS]")?;
    let body = text[start + "[TOOL_CALLS]".len()..].trim();
    let items: Vec<Value> = serde_json::from_str(body).ok()?;
    let calls = items
        .iter()
        .map(|v| call_from(v, "arguments"))
        .collect::<Option<Vec<_>>>()?;
    Some((text[..start].trim().to_owned(), calls))
}

fn parse_deepseek(text: &str) -> Option<(String, Vec<ToolCall>)> {
    let start = text.find(DS_CALLS_BEGIN)?;
    let mut rest = &text[start + DS_CALLS_BEGIN.len()..];
    let mut calls = Vec::new();
    while let Some(body) = rest.trim_start().strip_prefix(DS_CALL_BEGIN) {
        let end = body.find(DS_CALL_END)?;
        let call = &body[..end];
        let (_, after_sep) = call.split_once(DS_SEP)?;
        let (name, args) = after_sep.split_once('\n')?;
        let args = args
            .trim()
            .trim_start_matches("```json")
            .trim_end_matches("```")
            .trim();
        serde_json::from_str::<Map<String, Value>>(args).ok()?;
        calls.push(ToolCall {
            name: name.trim().to_owned(),
            arguments: args.to_owned(),
        });
        rest = &body[end + DS_CALL_END.len()..];
    }
    if calls.is_empty() {
        return None;
    }
    Some((text[..start].trim().to_owned(), calls))
}

fn parse_generic(text: &str) -> Option<(String, Vec<ToolCall>)> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    if let Some(r) = v.get("response").and_then(Value::as_str) {
        return Some((r.to_owned(), Vec::new()));
    }
    let calls = v
        .get("tool_calls")?
        .as_array()?
        .iter()
        .map(|c| call_from(c, "arguments"))
        .collect::<Option<Vec<_>>>()?;
    Some((String::new(), calls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(choice: ToolChoice) -> Tools {
        Tools {
            tools: vec![
                json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
            ],
            choice,
            parallel: false,
        }
    }

    #[test]
    fn formats_are_found_in_templates() {
        assert_eq!(
            ToolFormat::detect("{{ '<tool_call>' }}"),
            ToolFormat::Hermes
        );
        assert_eq!(ToolFormat::detect(DS_CALLS_BEGIN), ToolFormat::DeepSeek);
        assert_eq!(ToolFormat::detect("[TOOL_CALLS]"), ToolFormat::Mistral);
        assert_eq!(ToolFormat::detect("<start_of_turn>"), ToolFormat::Generic);
    }

    #[test]
    fn calls_parse_in_every_format() {
        let want = vec![ToolCall {
            name: "get_weather".into(),
            arguments: "{\"city\":\"Paris\"}".into(),
        }];
        let cases = [
            (ToolFormat::Hermes, "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "Sure."),
            (ToolFormat::Mistral, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]", ""),
            (ToolFormat::Llama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", ""),
            (ToolFormat::Generic, "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]}", ""),
        ];
        for (format, text, content) in cases {
            assert_eq!(
                parse_calls(format, text),
                (content.to_owned(), want.clone()),
                "{format:?}"
            );
        }
        let ds = format!("{DS_CALLS_BEGIN}{DS_CALL_BEGIN}function{DS_SEP}get_weather\n```json\n{{\"city\":\"Paris\"}}\n```{DS_CALL_END}{DS_CALLS_END}");
        assert_eq!(
            parse_calls(ToolFormat::DeepSeek, &ds),
            (String::new(), want)
        );
        // Not a call: stays text.
        assert_eq!(
            parse_calls(ToolFormat::Hermes, "<tool_call>oops"),
            ("<tool_call>oops".to_owned(), vec![])
        );
        assert_eq!(
            parse_calls(ToolFormat::Generic, "{\"response\": \"hi\"}"),
            ("hi".to_owned(), vec![])
        );
    }

    #[test]
    fn constraints_follow_the_choice() {
        assert_eq!(tools(ToolChoice::None).constraint(ToolFormat::Hermes), None);
        assert_eq!(tools(ToolChoice::Auto).constraint(ToolFormat::Hermes), None);
        assert!(matches!(
            tools(ToolChoice::Auto).constraint(ToolFormat::Generic),
            Some(Constraint::JsonSchema(_))
        ));
        for f in [
            ToolFormat::Hermes,
            ToolFormat::DeepSeek,
            ToolFormat::Mistral,
            ToolFormat::Llama3,
        ] {
            assert!(
                matches!(
                    tools(ToolChoice::Required).constraint(f),
                    Some(Constraint::Lark(_))
                ),
                "{f:?}"
            );
        }
        // Each grammar compiles, and the call text it was written for passes it.
        let (vocab, words) = crate::grammar::tests::vocab();
        let ds = format!("{DS_CALLS_BEGIN}{DS_CALL_BEGIN}function{DS_SEP}get_weather\n```json\n{{\"city\": \"Paris\"}}\n```{DS_CALL_END}{DS_CALLS_END}");
        for (f, text) in [
            (ToolFormat::Hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
            (ToolFormat::Mistral, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]"),
            (ToolFormat::Llama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}"),
            (ToolFormat::Generic, "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]}"),
            (ToolFormat::DeepSeek, ds.as_str()),
        ] {
            let c = tools(ToolChoice::Required).constraint(f).unwrap();
            let mut g = vocab.compile(&c).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert!(crate::grammar::tests::walk(&mut g, &words, text), "{f:?}");
        }
        // A named function leaves only that one.
        let mut t = tools(ToolChoice::Named("other".into()));
        t.tools
            .push(json!({"type": "function", "function": {"name": "other"}}));
        let Some(Constraint::JsonSchema(s)) = t.constraint(ToolFormat::Generic) else {
            panic!()
        };
        let s = s.to_string();
        assert!(s.contains("\"other\"") && !s.contains("get_weather"), "{s}");
    }
}
