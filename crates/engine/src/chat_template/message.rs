//! The conversation a chat template renders, shaped like the OpenAI chat-completions request
//! body so that a server can deserialize `messages` straight into [`Message`]s.
//!
//! Templates index messages as Python dicts (`message['content']`, `'tool_calls' in message`,
//! `message.content is none`), so how a [`Message`] serializes is part of the contract:
//! `role` and `content` are always present (`content` as `null` when absent, which is what
//! the DeepSeek-R1 template tests for on tool-call turns), every other field only when set,
//! and fields appear in declaration order.

use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant`, `tool`, or anything the template knows
    /// (Llama 3.x also uses `ipython`). Passed through unchanged.
    pub role: String,
    /// The text, as one string or a list of typed parts. `None` serializes as `null`.
    #[serde(default)]
    pub content: Option<Content>,
    /// An assistant turn's reasoning ("thinking") kept apart from its answer; Qwen3-style
    /// templates read it, others ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The tool calls an assistant turn made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// On a `tool` turn: the id of the call this is the result of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A participant or tool name, where the client gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    /// A message with a role and text content.
    pub fn new(role: impl Into<String>, text: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: Some(Content::Text(text.into())),
            ..Message::default()
        }
    }

    /// A `system` message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new("system", text)
    }

    /// A `user` message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new("user", text)
    }

    /// An `assistant` message with text content.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new("assistant", text)
    }

    /// An `assistant` turn that only calls tools (`content` is `null`, as OpenAI sends it).
    pub fn assistant_tool_calls(calls: Vec<ToolCall>) -> Self {
        Message {
            role: "assistant".into(),
            tool_calls: Some(calls),
            ..Message::default()
        }
    }

    /// A `tool` message carrying the result of the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, text: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new("tool", text)
        }
    }
}

/// Message content: a plain string, or OpenAI's list of typed parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// `"content": "..."`.
    Text(String),
    /// `"content": [{"type": "text", "text": "..."}, ...]`.
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text parts joined with `"\n"` (what vLLM and llama.cpp do for templates that only
    /// take strings); non-text parts are dropped.
    pub fn joined_text(&self) -> String {
        match self {
            Content::Text(text) => text.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One typed part of a message's content. Only text is modelled: this engine is text-only,
/// so a server should reject other part types before rendering. Unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// The part's type, `"text"` for text.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `"text"` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl ContentPart {
    /// A `{"type": "text", "text": ...}` part.
    pub fn text(text: impl Into<String>) -> Self {
        ContentPart {
            kind: "text".into(),
            text: Some(text.into()),
        }
    }
}

/// A tool call made by an assistant turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, which the `tool` turn answering it repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always `"function"` in the OpenAI API.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// Which function, with which arguments.
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

impl ToolCall {
    /// A `function` tool call.
    pub fn function(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: serde_json::Value,
    ) -> Self {
        ToolCall {
            id: Some(id.into()),
            kind: function_kind(),
            function: FunctionCall {
                name: name.into(),
                arguments,
            },
        }
    }
}

/// The function part of a [`ToolCall`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments, passed to the template as given. OpenAI clients send a JSON *string*
    /// (which the DeepSeek-R1 template concatenates); Hugging Face templates such as
    /// Qwen2.5's and Llama 3.2's apply `tojson` and expect an *object*. Choosing between the
    /// two is the caller's job; this type keeps whichever it was given.
    pub arguments: serde_json::Value,
}
