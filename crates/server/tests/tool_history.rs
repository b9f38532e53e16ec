//! A tool-call round trip as an OpenAI client sends it (arguments as JSON strings, results
//! as `role: "tool"` turns) must reach the model as transformers renders the same
//! conversation: the request is parsed by the server, prepared by the engine
//! (`tools::history_for`, with the format found in the template) and rendered; the
//! expected prompts are Jinja2's, from tests/fixtures/templates (make_fixtures.py).

use std::path::PathBuf;

use hearth_engine::chat_template::{ChatTemplate, Clock, Limits, RenderOptions, TemplateConfig};
use hearth_engine::scheduler::Prompt;
use hearth_engine::tools::{history_for, ToolFormat};
use hearth_server::request::parse_chat;
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/templates")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if name.ends_with(".json") {
        serde_json::from_str(&text).unwrap()
    } else {
        Value::String(text)
    }
}

/// The fixture's messages as the openai client sends them: arguments always a string.
fn as_sent(messages: &Value) -> Value {
    let mut messages = messages.clone();
    for m in messages.as_array_mut().unwrap() {
        for c in m
            .get_mut("tool_calls")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let args = &mut c["function"]["arguments"];
            if !args.is_string() {
                *args = Value::String(args.to_string());
            }
        }
    }
    messages
}

#[test]
fn round_trips_render_as_transformers_renders_them() {
    let fixtures = fixture("conversations.json");
    let expected = fixture("expected.json");
    let now = chrono::NaiveDateTime::parse_from_str(
        fixtures["now"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S",
    )
    .unwrap();
    let config = TemplateConfig {
        limits: Limits::default(),
        clock: Clock::Fixed(now),
    };
    let cases = [
        ("qwen25_tools", ToolFormat::Hermes),
        ("qwen3_tools_no_thinking", ToolFormat::Hermes),
        ("llama32_tools", ToolFormat::Llama3),
        ("ds_tool_calls", ToolFormat::DeepSeek),
        ("ds_tool_result_then_answer", ToolFormat::DeepSeek),
    ];
    for (name, format) in cases {
        let case = fixtures["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        let t = &fixtures["templates"][case["template"].as_str().unwrap()];
        let source = fixture(t["file"].as_str().unwrap());
        let source = source.as_str().unwrap();
        assert_eq!(ToolFormat::detect(source), format, "{name}");
        let template = ChatTemplate::with_config(
            source,
            t["bos_token"].as_str().unwrap(),
            t["eos_token"].as_str().unwrap(),
            &config,
        )
        .unwrap();
        let body = json!({
            "messages": as_sent(&case["messages"]),
            "tools": case["tools"],
            "chat_template_kwargs": case["extra"],
        });
        let req = parse_chat(body.to_string().as_bytes()).unwrap().request;
        let Prompt::Chat(messages) = &req.prompt else {
            panic!()
        };
        let history = history_for(format, messages);
        let tools = &req.tools.as_ref().unwrap().tools;
        let options = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            extra: req.template_kwargs.clone(),
        };
        let got = template.render_with(&history, tools, &options).unwrap();
        assert_eq!(got, expected[name]["output"].as_str().unwrap(), "{name}");
    }
}
