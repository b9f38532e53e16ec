//! Chat templates rendered by hearth must equal what Jinja2 renders in transformers'
//! environment. Expected outputs come from `tests/fixtures/templates/make_fixtures.py`
//! (Jinja2 + transformers' filters/globals); the inputs are in `conversations.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hearth_engine::chat_template::{
    BuiltinTemplate, ChatTemplate, Clock, Limits, Message, RenderOptions, TemplateConfig,
    TemplateError, TemplateOrigin,
};
use serde::Deserialize;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/templates")
}

fn read(name: &str) -> String {
    let path = fixture_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct Fixtures {
    /// `strftime_now`'s pinned time, ISO 8601 without zone.
    now: String,
    templates: BTreeMap<String, TemplateFixture>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct TemplateFixture {
    file: String,
    bos_token: String,
    eos_token: String,
    takes_typed_content: bool,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    template: String,
    messages: serde_json::Value,
    tools: Option<Vec<serde_json::Value>>,
    add_generation_prompt: bool,
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Expected {
    output: Option<String>,
    error: Option<String>,
}

fn load() -> (Fixtures, BTreeMap<String, Expected>) {
    let fixtures: Fixtures = serde_json::from_str(&read("conversations.json")).unwrap();
    let expected = serde_json::from_str(&read("expected.json")).unwrap();
    (fixtures, expected)
}

fn config(now: &str) -> TemplateConfig {
    let now = chrono::NaiveDateTime::parse_from_str(now, "%Y-%m-%dT%H:%M:%S").unwrap();
    TemplateConfig {
        limits: Limits::default(),
        clock: Clock::Fixed(now),
    }
}

fn render_case(template: &ChatTemplate, case: &Case) -> Result<String, TemplateError> {
    let messages: Vec<Message> = serde_json::from_value(case.messages.clone()).unwrap();
    let options = RenderOptions {
        add_generation_prompt: case.add_generation_prompt,
        extra: case.extra.clone(),
    };
    template.render_with(&messages, case.tools.as_deref().unwrap_or(&[]), &options)
}

fn check(template: &ChatTemplate, case: &Case, expected: &Expected) {
    let got = render_case(template, case);
    match (&expected.output, &expected.error) {
        (Some(want), _) => match got {
            Ok(got) => assert_eq!(got, *want, "case {}", case.name),
            Err(e) => panic!("case {}: {e}", case.name),
        },
        (None, Some(want)) => {
            assert_eq!(
                got,
                Err(TemplateError::Raised(want.clone())),
                "case {}",
                case.name
            )
        }
        (None, None) => panic!("case {} has no expectation", case.name),
    }
}

#[test]
fn renders_match_jinja2() {
    let (fixtures, expected) = load();
    let mut compiled = BTreeMap::new();
    for (key, t) in &fixtures.templates {
        let template = ChatTemplate::with_config(
            &read(&t.file),
            &t.bos_token,
            &t.eos_token,
            &config(&fixtures.now),
        )
        .unwrap_or_else(|e| panic!("template {key}: {e}"));
        assert_eq!(
            template.takes_typed_content(),
            t.takes_typed_content,
            "typed-content probe disagrees with Jinja2 for {key}"
        );
        compiled.insert(key.clone(), template);
    }
    for case in &fixtures.cases {
        check(&compiled[&case.template], case, &expected[&case.name]);
    }
    assert_eq!(fixtures.cases.len(), expected.len());
}

/// The acceptance bar: the real DeepSeek-R1 template (from a GGUF header) over at least six
/// conversations covering system prompts, multi-turn, `</think>` stripping, tool calls, tool
/// results and both settings of `add_generation_prompt`.
#[test]
fn deepseek_r1_covers_the_required_conversations() {
    let (fixtures, expected) = load();
    let ds: Vec<&Case> = fixtures
        .cases
        .iter()
        .filter(|c| c.template == "deepseek-r1")
        .collect();
    assert!(ds.len() >= 6);
    assert!(ds.iter().any(|c| c.add_generation_prompt));
    assert!(ds.iter().any(|c| !c.add_generation_prompt));
    let think = &expected["ds_think_dropped"];
    let out = think.output.as_deref().unwrap();
    assert!(
        !out.contains("</think>") && !out.contains("That is 4"),
        "{out}"
    );
    let tools = expected["ds_tool_calls"].output.as_deref().unwrap();
    assert!(tools.contains("<｜tool▁calls▁begin｜>") && tools.contains("<｜tool▁output▁begin｜>"));
}

/// The built-in templates are the reference files byte for byte, and the built-in path
/// (a model file without a template) renders like the reference.
#[test]
fn builtins_equal_reference_templates() {
    let pairs = [
        (BuiltinTemplate::Gemma3, "gemma3.jinja", "gemma3"),
        (BuiltinTemplate::Llama3, "llama3-instruct.jinja", "llama3"),
        (BuiltinTemplate::ChatMl, "qwen2.5-instruct.jinja", "qwen2.5"),
        (BuiltinTemplate::Qwen3, "qwen3.jinja", "qwen3"),
        (
            BuiltinTemplate::DeepSeekR1,
            "deepseek-r1-distill-qwen.jinja",
            "deepseek-r1",
        ),
    ];
    assert_eq!(pairs.len(), BuiltinTemplate::ALL.len());
    let (fixtures, expected) = load();
    for (builtin, file, key) in pairs {
        assert_eq!(
            builtin.source(),
            read(file),
            "{builtin:?} differs from {file}"
        );
        let t = &fixtures.templates[key];
        let template = ChatTemplate::with_config(
            builtin.source(),
            &t.bos_token,
            &t.eos_token,
            &config(&fixtures.now),
        )
        .unwrap();
        for case in fixtures.cases.iter().filter(|c| c.template == key) {
            check(&template, case, &expected[&case.name]);
        }
    }
}

/// Gemma 3 270M (base) has no `tokenizer.chat_template`: the engine falls back to Gemma's.
#[test]
fn model_without_template_gets_builtin() {
    let (fixtures, expected) = load();
    let template = ChatTemplate::for_model(
        None,
        "gemma3",
        Some("Gemma 3 270m"),
        "<bos>",
        "<eos>",
        &config(&fixtures.now),
    )
    .unwrap();
    assert_eq!(
        template.origin(),
        TemplateOrigin::Builtin(BuiltinTemplate::Gemma3)
    );
    let case = fixtures
        .cases
        .iter()
        .find(|c| c.name == "gemma_system_multi_turn")
        .unwrap();
    check(&template, case, &expected[&case.name]);

    let embedded = ChatTemplate::for_model(
        Some("{{ messages[0].content }}"),
        "gemma3",
        None,
        "",
        "",
        &TemplateConfig::default(),
    )
    .unwrap();
    assert_eq!(embedded.origin(), TemplateOrigin::Embedded);

    let none = ChatTemplate::for_model(
        Some("  "),
        "mamba",
        None,
        "",
        "",
        &TemplateConfig::default(),
    );
    assert_eq!(
        none.unwrap_err(),
        TemplateError::NoTemplate {
            architecture: "mamba".into()
        }
    );
}

/// What templates see of a message is its JSON as the client sent it: same keys, same
/// order, `content: null` kept, absent fields absent. A Message round-trips every fixture.
#[test]
fn messages_round_trip_as_sent() {
    let (fixtures, _) = load();
    for case in &fixtures.cases {
        let messages: Vec<Message> = serde_json::from_value(case.messages.clone()).unwrap();
        let back = serde_json::to_string(&messages).unwrap();
        assert_eq!(back, case.messages.to_string(), "case {}", case.name);
    }
}

// ---------------------------------------------------------------------------------------
// Hostile templates: bounded, typed errors, no panics.
// ---------------------------------------------------------------------------------------

fn hostile(source: &str, limits: Limits) -> Result<String, TemplateError> {
    let config = TemplateConfig {
        limits,
        clock: Clock::Local,
    };
    ChatTemplate::with_config(source, "<s>", "</s>", &config)?.render(
        &[Message::user("hi")],
        &[],
        true,
    )
}

#[test]
fn endless_loop_runs_out_of_fuel() {
    let source = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in \
                  range(100000) %}{% endfor %}{% endfor %}{% endfor %}";
    let limits = Limits {
        fuel: 100_000,
        ..Limits::default()
    };
    let start = std::time::Instant::now();
    assert_eq!(
        hostile(source, limits),
        Err(TemplateError::OutOfFuel { budget: 100_000 })
    );
    assert!(start.elapsed().as_secs() < 5);
    // With the default budget too, in bounded time.
    let start = std::time::Instant::now();
    assert!(matches!(
        hostile(source, Limits::default()),
        Err(TemplateError::OutOfFuel { .. })
    ));
    eprintln!("default fuel exhausted in {:?}", start.elapsed());
}

#[test]
fn huge_output_is_capped() {
    // 100 × 100 × 1 KB = 10 MB of output against a 1 MB cap.
    let source = "{% set kb = 'x' * 1024 %}{% for a in range(100) %}{% for b in range(100) %}\
                  {{ kb }}{% endfor %}{% endfor %}";
    let limits = Limits {
        max_output_bytes: 1 << 20,
        ..Limits::default()
    };
    assert_eq!(
        hostile(source, limits),
        Err(TemplateError::OutputTooLarge { limit: 1 << 20 })
    );
}

#[test]
fn huge_allocations_run_out_of_fuel() {
    // Neither string repetition nor doubling may allocate past the budget.
    let repeat = "{% set s = 'x' * 4000000000 %}{{ s | length }}";
    assert!(matches!(
        hostile(repeat, Limits::default()),
        Err(TemplateError::OutOfFuel { .. })
    ));
    let doubling = "{% set ns = namespace(s='x') %}{% for i in range(64) %}\
                    {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
    assert!(matches!(
        hostile(doubling, Limits::default()),
        Err(TemplateError::OutOfFuel { .. })
    ));
}

#[test]
fn deep_recursion_is_bounded() {
    let source = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    assert!(matches!(
        hostile(source, Limits::default()),
        Err(TemplateError::RecursionLimit { limit: 100 })
    ));
}

/// Regression: `{% set ns.x = [ns.x] %}` in a loop built a list nested ~10^6 deep within the
/// fuel budget, and dropping it overflowed the stack (abort, not an error).
#[test]
fn deeply_nested_values_are_bounded() {
    let wrap = |inner: &str, n: usize| format!("{}{inner}{}", "[".repeat(n), "]".repeat(n));
    let loop_carried = [
        "{% set ns.x = [ns.x] %}".to_string(),
        format!("{{% set ns.x = {} %}}", wrap("ns.x", 40)),
        "{% set ns.x = dict(a=ns.x) | items %}".to_string(),
        "{% set ns.x = namespace(a=ns.x) %}".to_string(),
        "{% set ns.x, ns.y = [ns.x], 1 %}".to_string(),
        "{%set ns.x=[ns.x]%}".to_string(),
        "{%- set\nns.x\n=\n[ns.x]\n-%}".to_string(),
    ];
    for body in &loop_carried {
        let source = format!(
            "{{% set ns = namespace(x=[], y=0) %}}{{% for i in range(100000) %}}{body}\
             {{% endfor %}}{{{{ ns.x == ns.x }}}}"
        );
        let err = hostile(&source, Limits::default()).unwrap_err();
        assert!(
            err.to_string().contains("nested deeper than 256"),
            "{body}: {err}"
        );
    }
    // Filter chains in one expression.
    let chain = format!("{{{{ [1]{} | length }}}}", "|batch(1)".repeat(1000));
    let err = hostile(&chain, Limits::default()).unwrap_err();
    assert!(err.to_string().contains("nested deeper than 256"), "{err}");

    // What is left, literals through recursion (macros, recursive loops), stays within the
    // render thread's stack; the values are dropped, compared and printed without a crash.
    let via_macro = format!(
        "{{% macro f(x, n) %}}{{% if n > 0 %}}{{{{ f({}, n - 1) }}}}{{% else %}}\
         {{{{ x == x }}}}{{{{ x | length }}}}{{% endif %}}{{% endmacro %}}{{{{ f([], 1000) }}}}",
        wrap("x", 40)
    );
    let via_loop = format!(
        "{{% set ns = namespace(deep=none) %}}{{% for x in [[]] recursive %}}\
         {{% if loop.depth < 1000 %}}{{{{ loop({}) }}}}{{% endif %}}\
         {{% if loop.depth > 90 %}}{{{{ x == [x] }}}}{{{{ x | string | length }}}}{{% endif %}}\
         {{% endfor %}}",
        wrap("x", 40)
    );
    for source in [via_macro, via_loop] {
        // Ok or a typed error are both fine; reaching this line is the test.
        let result = hostile(&source, Limits::default());
        eprintln!("{:?}", result.map(|s| s.len()));
    }
}

#[test]
fn raise_exception_message_is_surfaced() {
    let source = "{% if messages[0].role != 'system' %}\
                  {{ raise_exception('System message required, got ' ~ messages[0].role) }}\
                  {% endif %}";
    let err = hostile(source, Limits::default()).unwrap_err();
    assert_eq!(
        err,
        TemplateError::Raised("System message required, got user".into())
    );
    assert_eq!(
        err.to_string(),
        "chat template rejected the conversation: System message required, got user"
    );
    // From inside a macro too.
    let nested = "{% macro check() %}{{ raise_exception('nope') }}{% endmacro %}{{ check() }}";
    assert_eq!(
        hostile(nested, Limits::default()),
        Err(TemplateError::Raised("nope".into()))
    );
}

#[test]
fn no_file_or_environment_access() {
    for source in [
        "{% include '/etc/passwd' %}",
        "{% import 'x.jinja' as x %}",
        "{% extends 'base.jinja' %}",
        "{% from 'x' import y %}",
    ] {
        assert!(hostile(source, Limits::default()).is_err(), "{source}");
    }
    // No Python escape hatches either: these are just undefined.
    let out = hostile(
        "[{{ ''.__class__ }}][{{ cycler }}][{{ self }}][{{ env }}]",
        Limits::default(),
    );
    assert_eq!(out.as_deref(), Ok("[][][][]"));
}

#[test]
fn broken_templates_are_typed_errors() {
    let err = hostile("line one\n{% if %}", Limits::default()).unwrap_err();
    assert!(
        matches!(err, TemplateError::Syntax { line: Some(2), .. }),
        "{err}"
    );
    let err = hostile("{% for %}{% endif %}", Limits::default()).unwrap_err();
    assert!(matches!(err, TemplateError::Syntax { .. }), "{err}");
    let err = hostile("{{ messages[0].nope.deeper }}", Limits::default()).unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err}");
    let err = hostile("{{ 'a' + none }}", Limits::default()).unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err}");
    let err = hostile("{{ strftime_now('%Q') }}", Limits::default()).unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err}");
    let big = "x".repeat(2 << 20);
    let err = hostile(&big, Limits::default()).unwrap_err();
    assert!(matches!(err, TemplateError::SourceTooLarge { .. }), "{err}");
    // Deeply nested expressions stop at the parser's own limit.
    let parens = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(hostile(&parens, Limits::default()).is_err());
}

#[test]
fn engine_variables_cannot_be_overridden() {
    let template =
        ChatTemplate::new("{{ bos_token }}{{ messages | length }}", "<s>", "</s>").unwrap();
    let mut options = RenderOptions::default();
    options
        .extra
        .insert("messages".into(), serde_json::json!([]));
    assert_eq!(
        template.render_with(&[Message::user("hi")], &[], &options),
        Err(TemplateError::ReservedVariable("messages".into()))
    );
    // Special tokens may be replaced, as transformers' kwargs may.
    let mut options = RenderOptions::default();
    options
        .extra
        .insert("bos_token".into(), serde_json::json!("<BOS>"));
    assert_eq!(
        template
            .render_with(&[Message::user("hi")], &[], &options)
            .as_deref(),
        Ok("<BOS>1")
    );
}

/// The default limits must not get in the way of real use: a long, tool-using conversation
/// of ~2 MB through the heaviest fixture template.
#[test]
fn long_conversation_fits_default_limits() {
    let mut messages = vec![Message::system("You are helpful.")];
    let filler = "lorem ipsum dolor sit amet ".repeat(75); // ~2 KB
    for i in 0..500 {
        messages.push(Message::user(format!("question {i}: {filler}")));
        messages.push(Message::assistant(format!(
            "<think>\nthinking {i}\n</think>\n\nanswer {i}: {filler}"
        )));
    }
    let template = ChatTemplate::new(&read("qwen3.jinja"), "", "<|im_end|>").unwrap();
    let start = std::time::Instant::now();
    let out = template.render(&messages, &[], true).unwrap();
    eprintln!("{} bytes rendered in {:?}", out.len(), start.elapsed());
    assert!(out.len() > 2_000_000);
    // The same on a quarter of the default budget: the default leaves ample headroom.
    let tight = TemplateConfig {
        limits: Limits {
            fuel: Limits::default().fuel / 4,
            ..Limits::default()
        },
        clock: Clock::Local,
    };
    let template =
        ChatTemplate::with_config(&read("qwen3.jinja"), "", "<|im_end|>", &tight).unwrap();
    assert_eq!(template.render(&messages, &[], true).unwrap(), out);
}
