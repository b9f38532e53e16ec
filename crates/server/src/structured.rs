//! The request fields that shape an answer beyond sampling: `response_format` (JSON,
//! a JSON schema, and two extensions, a Lark grammar and a regex), the reasoning
//! controls (`reasoning_effort`, the `reasoning_budget` extension) and
//! `chat_template_kwargs`.
//!
//! Whether a schema can be enforced is decided by the engine, which compiles it against
//! the model's vocabulary; a schema feature it cannot enforce comes back as a 400 that
//! names the feature.

use hearth_engine::grammar::Constraint;
use hearth_engine::tools::{ToolChoice, Tools};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Thinking-token budgets of `reasoning_effort`: `minimal`/`none` close the reasoning
/// at once, `low` and `medium` cap it, `high` leaves it to the model (and `max_tokens`).
pub const EFFORT_BUDGETS: [(&str, Option<usize>); 5] = [
    ("none", Some(0)),
    ("minimal", Some(0)),
    ("low", Some(512)),
    ("medium", Some(2048)),
    ("high", None),
];

/// The longest grammar or regex text accepted (schemas are bounded by the body size and
/// by the grammar engine's own limits).
pub const MAX_GRAMMAR_BYTES: usize = 256 * 1024;

/// `response_format`: `None` for free text.
pub fn response_format(obj: &Map<String, Value>) -> Result<Option<Constraint>, ApiError> {
    let param = "response_format";
    let rf = match obj.get(param) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::invalid(
                param,
                "'response_format' must be an object",
            ))
        }
    };
    let text_field = |key: &str| -> Result<String, ApiError> {
        match rf.get(key) {
            Some(Value::String(s)) if s.len() <= MAX_GRAMMAR_BYTES => Ok(s.clone()),
            Some(Value::String(_)) => Err(ApiError::invalid(
                format!("{param}.{key}"),
                format!("'{param}.{key}' is longer than {MAX_GRAMMAR_BYTES} bytes"),
            )),
            _ => Err(ApiError::invalid(
                format!("{param}.{key}"),
                format!("'{param}.{key}' must be a string"),
            )),
        }
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::JsonObject)),
        Some("json_schema") => {
            let js = match rf.get("json_schema") {
                Some(Value::Object(js)) => js,
                _ => {
                    return Err(ApiError::invalid(
                        "response_format.json_schema",
                        "'response_format.json_schema' must be an object with a 'schema'",
                    ))
                }
            };
            if !matches!(js.get("name"), None | Some(Value::String(_))) {
                return Err(ApiError::invalid(
                    "response_format.json_schema.name",
                    "'response_format.json_schema.name' must be a string",
                ));
            }
            if !matches!(js.get("strict"), None | Some(Value::Null | Value::Bool(_))) {
                return Err(ApiError::invalid(
                    "response_format.json_schema.strict",
                    "'response_format.json_schema.strict' must be a boolean",
                ));
            }
            match js.get("schema") {
                Some(schema @ Value::Object(_)) => Ok(Some(Constraint::JsonSchema(schema.clone()))),
                // Without a schema, any JSON value (as llama.cpp does).
                None | Some(Value::Null) => Ok(Some(Constraint::JsonSchema(Value::Object(Map::new())))),
                Some(_) => Err(ApiError::invalid(
                    "response_format.json_schema.schema",
                    "'response_format.json_schema.schema' must be an object",
                )),
            }
        }
        Some("grammar") => Ok(Some(Constraint::Lark(text_field("grammar")?))),
        Some("regex") => Ok(Some(Constraint::Regex(text_field("regex")?))),
        _ => Err(ApiError::invalid(
            "response_format.type",
            "'response_format.type' must be \"text\", \"json_object\", \"json_schema\", \"grammar\" or \"regex\"",
        )),
    }
}

/// The reasoning budget from `reasoning_budget` (an extension: tokens) or
/// `reasoning_effort` (see [`EFFORT_BUDGETS`]); the explicit budget wins.
pub fn reasoning_budget(obj: &Map<String, Value>) -> Result<Option<usize>, ApiError> {
    match obj.get("reasoning_budget") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            return Ok(n.as_u64().map(|n| n.min(usize::MAX as u64) as usize))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "reasoning_budget",
                "'reasoning_budget' must be a non-negative integer (thinking tokens)",
            ))
        }
    }
    match obj.get("reasoning_effort") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(e)) => EFFORT_BUDGETS
            .iter()
            .find(|(name, _)| name == e)
            .map(|&(_, budget)| budget)
            .ok_or_else(effort_error),
        Some(_) => Err(effort_error()),
    }
}

fn effort_error() -> ApiError {
    ApiError::invalid(
        "reasoning_effort",
        "'reasoning_effort' must be \"none\", \"minimal\", \"low\", \"medium\" or \"high\"",
    )
}

/// `chat_template_kwargs`: extra variables for the template.
pub fn template_kwargs(obj: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match obj.get("chat_template_kwargs") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(_) => Err(ApiError::invalid(
            "chat_template_kwargs",
            "'chat_template_kwargs' must be an object",
        )),
    }
}

/// `v.function` as an object (of a tool, or of a message's tool call), else a 400 naming
/// `param.function`.
pub(crate) fn function_of<'a>(
    param: &str,
    v: &'a Value,
) -> Result<&'a Map<String, Value>, ApiError> {
    v.get("function").and_then(Value::as_object).ok_or_else(|| {
        ApiError::invalid(
            format!("{param}.function"),
            format!("'{param}.function' must be an object"),
        )
    })
}

/// The most tools a request may offer.
pub const MAX_TOOLS: usize = 128;

/// `tools`, `tool_choice` and `parallel_tool_calls`: `None` when no tools are offered.
pub fn tools(obj: &Map<String, Value>) -> Result<Option<Tools>, ApiError> {
    let list = match obj.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) if items.len() <= MAX_TOOLS => items,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "tools",
                format!("'tools' takes at most {MAX_TOOLS} tools"),
            ))
        }
        Some(_) => return Err(ApiError::invalid("tools", "'tools' must be an array")),
    };
    let mut names = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let param = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::invalid(
                format!("{param}.type"),
                format!("'{param}.type' must be \"function\""),
            ));
        }
        let f = function_of(&param, t)?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        let valid = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ApiError::invalid(
                format!("{param}.function.name"),
                format!("'{param}.function.name' must be 1 to 64 letters, digits, '_' or '-'"),
            ));
        }
        if names.contains(&name) {
            return Err(ApiError::invalid(
                format!("{param}.function.name"),
                format!("two tools are named '{name}'"),
            ));
        }
        names.push(name);
        if !matches!(
            f.get("parameters"),
            None | Some(Value::Null | Value::Object(_))
        ) {
            return Err(ApiError::invalid(
                format!("{param}.function.parameters"),
                format!("'{param}.function.parameters' must be a JSON schema object"),
            ));
        }
        if !matches!(
            f.get("description"),
            None | Some(Value::Null | Value::String(_))
        ) {
            return Err(ApiError::invalid(
                format!("{param}.function.description"),
                format!("'{param}.function.description' must be a string"),
            ));
        }
    }
    let choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(c)) if c == "none" => ToolChoice::None,
        Some(Value::String(c)) if c == "auto" => ToolChoice::Auto,
        Some(Value::String(c)) if c == "required" => ToolChoice::Required,
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "tool_choice",
                        "'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    )
                })?;
            if !names.contains(&name) {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("'tool_choice' names '{name}', which is not in 'tools'"),
                ));
            }
            ToolChoice::Named(name.to_owned())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "tool_choice",
                "'tool_choice' must be \"none\", \"auto\", \"required\" or a named function",
            ))
        }
    };
    if list.is_empty() && matches!(choice, ToolChoice::Required) {
        return Err(ApiError::invalid(
            "tool_choice",
            "'tool_choice' is \"required\" but 'tools' is empty",
        ));
    }
    let parallel = match obj.get("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "parallel_tool_calls",
                "'parallel_tool_calls' must be a boolean",
            ))
        }
    };
    Ok(Some(Tools {
        tools: list.clone(),
        choice,
        parallel,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn response_formats() {
        let schema = serde_json::json!({"type": "object"});
        let cases = [
            (serde_json::json!({}), None),
            (
                serde_json::json!({"response_format": {"type": "text"}}),
                None,
            ),
            (
                serde_json::json!({"response_format": {"type": "json_object"}}),
                Some(Constraint::JsonObject),
            ),
            (
                serde_json::json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}}),
                Some(Constraint::JsonSchema(schema.clone())),
            ),
            (
                serde_json::json!({"response_format": {"type": "regex", "regex": "a+"}}),
                Some(Constraint::Regex("a+".into())),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(response_format(&obj(body)).unwrap(), want);
        }
        for bad in [
            serde_json::json!({"response_format": "json"}),
            serde_json::json!({"response_format": {"type": "xml"}}),
            serde_json::json!({"response_format": {"type": "json_schema"}}),
            serde_json::json!({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}),
            serde_json::json!({"response_format": {"type": "grammar", "grammar": 1}}),
        ] {
            let e = response_format(&obj(bad.clone())).unwrap_err();
            assert!(
                e.message.contains("response_format"),
                "{bad}: {}",
                e.message
            );
        }
    }

    #[test]
    fn budgets() {
        let b = |v: Value| reasoning_budget(&obj(v));
        assert_eq!(b(serde_json::json!({})).unwrap(), None);
        assert_eq!(
            b(serde_json::json!({"reasoning_effort": "low"})).unwrap(),
            Some(512)
        );
        assert_eq!(
            b(serde_json::json!({"reasoning_effort": "high"})).unwrap(),
            None
        );
        assert_eq!(
            b(serde_json::json!({"reasoning_effort": "low", "reasoning_budget": 7})).unwrap(),
            Some(7)
        );
        assert!(b(serde_json::json!({"reasoning_effort": "extreme"})).is_err());
        assert!(b(serde_json::json!({"reasoning_budget": -1})).is_err());
    }
}
