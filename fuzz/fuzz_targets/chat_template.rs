//! Arbitrary chat-template source (a hostile model file's `tokenizer.chat_template`),
//! rendered against a fixed conversation with tools: compiling and rendering must
//! succeed or fail with a `TemplateError`, never panic, and stay within the renderer's
//! limits (fuel, output size, nesting), which bound its time and memory.

#![no_main]

use hearth_engine::chat_template::{ChatTemplate, Message, RenderOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let messages = [
        Message::system("Be brief."),
        Message::user("What is 2+2? <|im_end|>"),
        Message::assistant("4"),
        Message::tool("call_1", "{\"ok\": true}"),
    ];
    let tools = [serde_json::json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}})];
    for add_generation_prompt in [false, true] {
        let options = RenderOptions {
            add_generation_prompt,
            ..RenderOptions::default()
        };
        let _ = template.render_with(&messages, &tools, &options);
    }
});
