//! Chat templates shipped with the engine, for model files that carry none
//! (`tokenizer.chat_template` absent: base models such as Gemma 3 270M, or old conversions).
//!
//! Each file under `builtin/` is the model family's official template, byte for byte; the
//! copies under `tests/fixtures/templates/` are rendered by Jinja2 to produce the expected
//! outputs, and a test checks the two copies are identical. Sources:
//!
//! | variant        | file               | origin                                                   |
//! |----------------|--------------------|----------------------------------------------------------|
//! | `Gemma3`       | `gemma3.jinja`     | transformers `models/gemma3/convert_gemma3_weights.py`   |
//! | `Llama3`       | `llama3.jinja`     | `meta-llama/Meta-Llama-3-8B-Instruct` tokenizer_config   |
//! | `ChatMl`       | `qwen2.5.jinja`    | `Qwen/Qwen2.5-0.5B-Instruct` tokenizer_config            |
//! | `Qwen3`        | `qwen3.jinja`      | `Qwen/Qwen3-8B` tokenizer_config                         |
//! | `DeepSeekR1`   | `deepseek-r1.jinja`| GGUF header of DeepSeek-R1-Distill-Qwen-7B               |

/// A template built into the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuiltinTemplate {
    /// Gemma 3 (`<start_of_turn>user … <end_of_turn>`); the system prompt is folded into the
    /// first user turn. Also serves Gemma 1/2, whose turn format is the same.
    Gemma3,
    /// Llama 3 Instruct (`<|start_header_id|>role<|end_header_id|>`), without tool support.
    Llama3,
    /// ChatML as Qwen2.5 Instruct writes it (`<|im_start|>role … <|im_end|>`), with tools and
    /// Qwen's default system prompt.
    ChatMl,
    /// Qwen3: ChatML with `<think>` reasoning and tools.
    Qwen3,
    /// DeepSeek-R1 (`<｜User｜>`/`<｜Assistant｜>`, reasoning dropped from past turns).
    DeepSeekR1,
}

impl BuiltinTemplate {
    /// Every built-in template.
    pub const ALL: [BuiltinTemplate; 5] = [
        BuiltinTemplate::Gemma3,
        BuiltinTemplate::Llama3,
        BuiltinTemplate::ChatMl,
        BuiltinTemplate::Qwen3,
        BuiltinTemplate::DeepSeekR1,
    ];

    /// The Jinja source.
    pub fn source(self) -> &'static str {
        match self {
            BuiltinTemplate::Gemma3 => include_str!("builtin/gemma3.jinja"),
            BuiltinTemplate::Llama3 => include_str!("builtin/llama3.jinja"),
            BuiltinTemplate::ChatMl => include_str!("builtin/qwen2.5.jinja"),
            BuiltinTemplate::Qwen3 => include_str!("builtin/qwen3.jinja"),
            BuiltinTemplate::DeepSeekR1 => include_str!("builtin/deepseek-r1.jinja"),
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinTemplate::Gemma3 => "gemma3",
            BuiltinTemplate::Llama3 => "llama3",
            BuiltinTemplate::ChatMl => "chatml",
            BuiltinTemplate::Qwen3 => "qwen3",
            BuiltinTemplate::DeepSeekR1 => "deepseek-r1",
        }
    }

    /// Picks the template for a model from its GGUF `general.architecture` and, where the
    /// architecture is shared by several families, `general.name`.
    ///
    /// Returns `None` when nothing fits: guessing a turn format for an unknown family would
    /// produce prompts the model was never trained on, so the caller should refuse chat (or
    /// let the user choose) rather than silently pick ChatML.
    pub fn for_model(architecture: &str, name: Option<&str>) -> Option<Self> {
        let arch = architecture.to_ascii_lowercase();
        // "DeepSeek-R1-Distill-Qwen-7B", "deepseek_r1 distill llama": compare on words.
        let name = name
            .unwrap_or_default()
            .to_lowercase()
            .replace(['-', '_', '.'], " ");
        let words: Vec<&str> = name.split_whitespace().collect();
        // The R1 distills keep their base's architecture (qwen2, llama) but not its format.
        if words.contains(&"deepseek") && words.contains(&"r1") {
            return Some(BuiltinTemplate::DeepSeekR1);
        }
        if arch.starts_with("gemma") {
            return Some(BuiltinTemplate::Gemma3);
        }
        if arch.starts_with("qwen3") {
            return Some(BuiltinTemplate::Qwen3);
        }
        if arch.starts_with("qwen2") {
            return Some(BuiltinTemplate::ChatMl);
        }
        // `llama` also covers Llama 2, Mistral, TinyLlama, ...: only Llama 3 has this format.
        let llama3 = name.contains("llama 3") || words.iter().any(|w| w.starts_with("llama3"));
        if arch == "llama" && llama3 {
            return Some(BuiltinTemplate::Llama3);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::BuiltinTemplate as B;

    #[test]
    fn picks_by_architecture_and_name() {
        let cases = [
            ("gemma3", None, Some(B::Gemma3)),
            ("gemma3", Some("Gemma 3 270m"), Some(B::Gemma3)),
            ("gemma2", None, Some(B::Gemma3)),
            ("qwen2", Some("Qwen2.5 0.5B Instruct"), Some(B::ChatMl)),
            (
                "qwen2",
                Some("DeepSeek R1 Distill Qwen 7B"),
                Some(B::DeepSeekR1),
            ),
            (
                "llama",
                Some("DeepSeek-R1-Distill-Llama-8B"),
                Some(B::DeepSeekR1),
            ),
            ("qwen3", Some("Qwen3 0.6B"), Some(B::Qwen3)),
            ("qwen3moe", None, Some(B::Qwen3)),
            ("llama", Some("Meta Llama 3 8B Instruct"), Some(B::Llama3)),
            ("llama", Some("Meta-Llama-3.1-8B-Instruct"), Some(B::Llama3)),
            ("llama", Some("Llama-2-7b-chat"), None),
            ("llama", None, None),
            ("phi3", Some("Phi 3 mini"), None),
        ];
        for (arch, name, want) in cases {
            assert_eq!(B::for_model(arch, name), want, "{arch} {name:?}");
        }
    }
}
