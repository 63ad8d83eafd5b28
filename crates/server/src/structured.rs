//! Structured output: the request fields that constrain what the model may write
//! (OpenAI `response_format`, llama-server's `grammar` and `json_schema`, Ollama's
//! `format`) turned into an engine [`Constraint`], compiled off the async threads; and
//! `logit_bias`. An invalid schema or grammar is a 400 with the grammar engine's message.

use std::collections::HashMap;
use std::sync::Arc;

use engine::{Constraint, ConstraintSpec};
use serde_json::Value;

use crate::{ApiError, AppState, Flavor};

/// OpenAI's `response_format` (`text`, `json_object`, or `json_schema` with its
/// `json_schema.schema`), llama-server's `grammar` (GBNF, or Lark after `%llguidance`)
/// and `json_schema` (a bare schema): at most one of them may constrain the output.
pub(crate) fn openai_spec(
    response_format: Option<&Value>,
    grammar: Option<&str>,
    json_schema: Option<&Value>,
) -> Result<Option<ConstraintSpec>, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    let from_format =
        match response_format {
            None | Some(Value::Null) => None,
            Some(Value::Object(f)) => match f.get("type").and_then(Value::as_str) {
                Some("text") => None,
                // llama-server also takes a schema here.
                Some("json_object") => Some(match f.get("schema") {
                    Some(s) if !s.is_null() => ConstraintSpec::JsonSchema(s.clone()),
                    _ => ConstraintSpec::JsonObject,
                }),
                Some("json_schema") => {
                    let inner = f.get("json_schema").and_then(Value::as_object);
                    match inner.and_then(|j| j.get("schema")) {
                        Some(s) => Some(ConstraintSpec::JsonSchema(s.clone())),
                        None => return bad(
                            "response_format.json_schema.schema is required for type 'json_schema'"
                                .into(),
                        ),
                    }
                }
                Some(other) => {
                    return bad(format!(
                "response_format.type '{other}' is not one of 'text', 'json_object', 'json_schema'"
            ))
                }
                None => return bad("response_format.type is required".into()),
            },
            Some(_) => return bad("response_format must be an object".into()),
        };
    let from_grammar = grammar.map(ConstraintSpec::grammar);
    let from_schema = json_schema
        .filter(|s| !s.is_null())
        .map(|s| ConstraintSpec::JsonSchema(s.clone()));
    let mut set = [from_format, from_grammar, from_schema]
        .into_iter()
        .flatten();
    let spec = set.next();
    if set.next().is_some() {
        return bad(
            "only one of response_format (json_object or json_schema), grammar and json_schema may be given"
                .into(),
        );
    }
    Ok(spec)
}

/// Ollama's `format`: `"json"` (any JSON object), a JSON schema object, or `""`/absent.
pub(crate) fn ollama_spec(format: Option<&Value>) -> Result<Option<ConstraintSpec>, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m).with_flavor(Flavor::Ollama));
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(ConstraintSpec::JsonObject)),
        Some(Value::String(s)) => bad(format!(
            "format must be \"json\" or a JSON schema object, got \"{s}\""
        )),
        Some(Value::Object(_)) => Ok(format.cloned().map(ConstraintSpec::JsonSchema)),
        Some(_) => bad("format must be \"json\" or a JSON schema object".into()),
    }
}

/// Compiles `spec` for the served model on a blocking thread (the first one builds the
/// vocabulary's token trie; a large schema takes milliseconds).
pub(crate) async fn compile(
    st: &Arc<AppState>,
    spec: Option<ConstraintSpec>,
    flavor: Flavor,
) -> Result<Option<Constraint>, ApiError> {
    let Some(spec) = spec else { return Ok(None) };
    let engine = st.engine.clone();
    let compiled = tokio::task::spawn_blocking(move || engine.compile_constraint(&spec))
        .await
        .map_err(|e| ApiError::internal(format!("grammar task: {e}")).with_flavor(flavor))?;
    match compiled {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.is_input() => Err(ApiError::bad_request(e.to_string()).with_flavor(flavor)),
        Err(e) => Err(ApiError::internal(e.to_string()).with_flavor(flavor)),
    }
}

/// OpenAI's `logit_bias`: token ids (as strings) → a bias in [-100, 100], added to the
/// logits before sampling.
pub(crate) fn logit_bias(
    bias: Option<&HashMap<String, f32>>,
    n_vocab: usize,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(bias) = bias else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(bias.len());
    for (k, &v) in bias {
        let id: u32 = k
            .trim()
            .parse()
            .map_err(|_| ApiError::bad_request(format!("logit_bias: '{k}' is not a token id")))?;
        if id as usize >= n_vocab {
            return Err(ApiError::bad_request(format!(
                "logit_bias: token id {id} is outside the vocabulary (size {n_vocab})"
            )));
        }
        if !(-100.0..=100.0).contains(&v) {
            return Err(ApiError::bad_request(format!(
                "logit_bias for token {id} must be in [-100, 100], got {v}"
            )));
        }
        out.push((id, v));
    }
    out.sort_by_key(|e| e.0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_fields_map_to_specs_and_conflicts_are_refused() {
        let spec = |rf: Value| openai_spec(Some(&rf), None, None);
        assert_eq!(spec(json!({"type": "text"})).unwrap(), None);
        assert_eq!(
            spec(json!({"type": "json_object"})).unwrap(),
            Some(ConstraintSpec::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            spec(json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}))
                .unwrap(),
            Some(ConstraintSpec::JsonSchema(schema.clone()))
        );
        assert!(spec(json!({"type": "json_schema", "json_schema": {"name": "x"}})).is_err());
        assert!(spec(json!({"type": "yaml"}))
            .unwrap_err()
            .message
            .contains("'yaml'"));
        assert!(spec(json!("json")).is_err());
        assert_eq!(
            openai_spec(None, Some("root ::= \"a\""), None).unwrap(),
            Some(ConstraintSpec::Gbnf("root ::= \"a\"".into()))
        );
        assert_eq!(
            openai_spec(None, Some("%llguidance {}\nstart: \"a\""), None).unwrap(),
            Some(ConstraintSpec::Lark("%llguidance {}\nstart: \"a\"".into()))
        );
        assert_eq!(
            openai_spec(None, None, Some(&schema)).unwrap(),
            Some(ConstraintSpec::JsonSchema(schema.clone()))
        );
        assert!(openai_spec(
            Some(&json!({"type": "json_object"})),
            Some("root ::= \"a\""),
            None
        )
        .unwrap_err()
        .message
        .contains("only one"));
    }

    #[test]
    fn ollama_format_and_logit_bias_are_checked() {
        assert_eq!(
            ollama_spec(Some(&json!("json"))).unwrap(),
            Some(ConstraintSpec::JsonObject)
        );
        assert_eq!(ollama_spec(Some(&json!(""))).unwrap(), None);
        assert!(ollama_spec(Some(&json!("xml"))).is_err());
        assert!(ollama_spec(Some(&json!(3))).is_err());
        let s = json!({"type": "object"});
        assert_eq!(
            ollama_spec(Some(&s)).unwrap(),
            Some(ConstraintSpec::JsonSchema(s))
        );
        let m = |pairs: &[(&str, f32)]| -> HashMap<String, f32> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert_eq!(
            logit_bias(Some(&m(&[("5", -100.0), ("2", 3.5)])), 10).unwrap(),
            vec![(2, 3.5), (5, -100.0)]
        );
        assert!(logit_bias(Some(&m(&[("10", 1.0)])), 10).is_err());
        assert!(logit_bias(Some(&m(&[("x", 1.0)])), 10).is_err());
        assert!(logit_bias(Some(&m(&[("1", 101.0)])), 10).is_err());
    }
}
