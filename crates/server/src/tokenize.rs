//! llama-server's `POST /tokenize` and `POST /detokenize`, with the model's own
//! tokenizer.
//!
//! - `/tokenize` `{content, add_special = false, parse_special = true, with_pieces =
//!   false}` → `{"tokens": [ids]}`, or with pieces `{"tokens": [{"id", "piece"}]}` where a
//!   piece that is not valid UTF-8 on its own (part of a character) is its list of bytes.
//! - `/detokenize` `{tokens}` → `{"content"}`; an id outside the vocabulary is a 400.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{json_ok, parse_json, ApiError, AppState, Flavor};

const FLAVOR: Flavor = Flavor::OpenAi;

#[derive(Deserialize, Debug)]
struct TokenizeRequest {
    content: Option<String>,
    #[serde(default)]
    add_special: bool,
    /// Special-token text (`<|im_start|>`) becomes the special token (llama-server's
    /// default); `false` keeps it as plain text.
    parse_special: Option<bool>,
    #[serde(default)]
    with_pieces: bool,
}

#[derive(Deserialize, Debug)]
struct DetokenizeRequest {
    tokens: Option<Vec<u32>>,
}

/// Runs `f` with the tokenizer on a blocking thread (a long text takes a while).
async fn with_tokenizer<T: Send + 'static>(
    st: &Arc<AppState>,
    f: impl FnOnce(&text::Tokenizer) -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = st.engine.clone();
    tokio::task::spawn_blocking(move || match engine.tokenizer.as_ref() {
        Some(tok) => f(tok),
        None => Err("this model file has no tokenizer".to_string()),
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task: {e}")).with_flavor(FLAVOR))?
    .map_err(|e| ApiError::bad_request(e).with_flavor(FLAVOR))
}

/// `POST /tokenize`.
pub(crate) async fn tokenize(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: TokenizeRequest = parse_json(&headers, &body, FLAVOR)?;
    let content = req
        .content
        .ok_or_else(|| ApiError::bad_request("'content' is required").with_flavor(FLAVOR))?;
    let parse_special = req.parse_special.unwrap_or(true);
    let (add_special, with_pieces) = (req.add_special, req.with_pieces);
    let tokens = with_tokenizer(&st, move |tok| {
        let ids = if parse_special {
            tok.encode(&content, add_special)
        } else {
            // The whole content is one text span: no special tokens in it.
            let all = 0..content.len();
            tok.encode_with_text_spans(&content, add_special, std::slice::from_ref(&all))
        }
        .map_err(|e| e.to_string())?;
        if !with_pieces {
            return Ok(json!(ids));
        }
        let pieces: Vec<Value> = ids
            .iter()
            .map(|&id| {
                let bytes = tok.token_to_piece(id);
                let piece = match std::str::from_utf8(bytes) {
                    Ok(s) => json!(s),
                    Err(_) => json!(bytes),
                };
                json!({"id": id, "piece": piece})
            })
            .collect();
        Ok(Value::Array(pieces))
    })
    .await?;
    Ok(json_ok(json!({ "tokens": tokens })))
}

/// `POST /detokenize`.
pub(crate) async fn detokenize(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: DetokenizeRequest = parse_json(&headers, &body, FLAVOR)?;
    let ids = req
        .tokens
        .ok_or_else(|| ApiError::bad_request("'tokens' is required").with_flavor(FLAVOR))?;
    let content = with_tokenizer(&st, move |tok| {
        let n_vocab = tok.vocab_size();
        if let Some((i, bad)) = ids.iter().enumerate().find(|(_, &t)| t as usize >= n_vocab) {
            return Err(format!(
                "tokens[{i}]: token id {bad} is outside the vocabulary (size {n_vocab})"
            ));
        }
        // Special tokens are shown as their text, as llama-server does.
        Ok(tok.decode(&ids, false))
    })
    .await?;
    Ok(json_ok(json!({ "content": content })))
}
