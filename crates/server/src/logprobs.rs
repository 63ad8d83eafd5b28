//! Log-probabilities in each API's shape. The engine reports, per generated token, the
//! model's own log-softmax (of the raw logits: before penalties, `logit_bias`, grammar
//! and temperature — OpenAI's meaning) and the best alternatives; the scheduler thread
//! appends them to a [`LogprobBuffer`] just before it sends the text of that step, and
//! the response takes what has arrived with each piece of text it writes.

use std::sync::{Arc, Mutex};

use engine::{TokenLogprobs, Tokenizer};
use serde_json::{json, Map, Value};

/// The tokens' log-probabilities not yet written to the response.
pub(crate) type LogprobBuffer = Arc<Mutex<Vec<TokenLogprobs>>>;

/// Everything the buffer holds now (nothing when log-probabilities were not asked for).
pub(crate) fn take(buf: Option<&LogprobBuffer>) -> Vec<TokenLogprobs> {
    buf.map(|b| std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner())))
        .unwrap_or_default()
}

/// A log-probability as JSON: OpenAI's −9999 for one too small to write.
fn number(lp: f32) -> Value {
    json!(if lp.is_finite() { lp } else { -9999.0 })
}

/// A token's text (invalid UTF-8 of a partial character becomes U+FFFD; `bytes` keeps
/// the exact bytes) and bytes.
fn token(tok: &Tokenizer, id: u32) -> (String, &[u8]) {
    let bytes = tok.token_to_piece(id);
    (String::from_utf8_lossy(bytes).into_owned(), bytes)
}

fn entry(tok: &Tokenizer, id: u32, lp: f32) -> Map<String, Value> {
    let (text, bytes) = token(tok, id);
    let mut m = Map::new();
    m.insert("token".into(), json!(text));
    m.insert("logprob".into(), number(lp));
    m.insert("bytes".into(), json!(bytes));
    m
}

/// OpenAI chat's `logprobs.content` (and Ollama's `logprobs`): per token, its text,
/// log-probability, bytes and `top_logprobs`.
pub(crate) fn content(tok: &Tokenizer, entries: &[TokenLogprobs]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut m = entry(tok, e.token, e.logprob);
                let top: Vec<Value> = e
                    .top
                    .iter()
                    .map(|&(id, lp)| Value::Object(entry(tok, id, lp)))
                    .collect();
                m.insert("top_logprobs".into(), Value::Array(top));
                Value::Object(m)
            })
            .collect(),
    )
}

/// The legacy `/v1/completions` shape: parallel lists of the tokens, their
/// log-probabilities, `{token: logprob}` of the alternatives, and each token's offset (in
/// characters) into the generated text; `offset` carries across streamed chunks.
pub(crate) fn legacy(tok: &Tokenizer, entries: &[TokenLogprobs], offset: &mut usize) -> Value {
    let mut tokens = Vec::with_capacity(entries.len());
    let mut lps = Vec::with_capacity(entries.len());
    let mut tops = Vec::with_capacity(entries.len());
    let mut offsets = Vec::with_capacity(entries.len());
    for e in entries {
        let (text, _) = token(tok, e.token);
        offsets.push(*offset);
        *offset += text.chars().count();
        tokens.push(text);
        lps.push(number(e.logprob));
        let top: Map<String, Value> = e
            .top
            .iter()
            .map(|&(id, lp)| (token(tok, id).0, number(lp)))
            .collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// A streamed response's log-probabilities: what arrived since the last piece of text.
pub(crate) struct LogprobStream {
    buf: LogprobBuffer,
    tok: Tokenizer,
    /// Characters of generated text before the next token (legacy `text_offset`).
    offset: usize,
}

impl LogprobStream {
    /// The stream of a running job that asked for log-probabilities.
    pub(crate) fn of(run: &crate::gen::Running, tok: Option<&Tokenizer>) -> Option<LogprobStream> {
        Some(LogprobStream {
            buf: run.logprobs.clone()?,
            tok: tok?.clone(),
            offset: 0,
        })
    }

    /// The tokens that arrived, in the chat shape (`None` when there are none).
    pub(crate) fn content(&mut self) -> Option<Value> {
        let entries = take(Some(&self.buf));
        (!entries.is_empty()).then(|| content(&self.tok, &entries))
    }

    /// The tokens that arrived, in the legacy completion shape.
    pub(crate) fn legacy(&mut self) -> Option<Value> {
        let entries = take(Some(&self.buf));
        (!entries.is_empty()).then(|| legacy(&self.tok, &entries, &mut self.offset))
    }
}

/// What a chat request asks for: OpenAI chat's `logprobs: true` with `top_logprobs`
/// (0..=20), or Ollama's `logprobs`/`top_logprobs` (same meaning).
pub(crate) fn chat_request(
    logprobs: Option<&Value>,
    top_logprobs: Option<i64>,
) -> Result<Option<usize>, String> {
    let on = match logprobs {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("logprobs must be true or false".into()),
    };
    match (on, top_logprobs) {
        (false, Some(n)) if n > 0 => Err("top_logprobs needs logprobs: true".into()),
        (false, _) => Ok(None),
        (true, n) => top_count(n.unwrap_or(0), "top_logprobs").map(Some),
    }
}

/// `/v1/completions`' `logprobs: N` (0..=20 alternatives).
pub(crate) fn completion_request(logprobs: Option<&Value>) -> Result<Option<usize>, String> {
    match logprobs {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) => top_count(n, "logprobs").map(Some),
            None => Err(format!("logprobs must be an integer in [0, 20], got {n}")),
        },
        Some(other) => Err(format!(
            "logprobs must be an integer in [0, 20], got {other}"
        )),
    }
}

fn top_count(n: i64, name: &str) -> Result<usize, String> {
    let max = engine::MAX_TOP_LOGPROBS as i64;
    if (0..=max).contains(&n) {
        Ok(n as usize)
    } else {
        Err(format!("{name} must be in [0, {max}], got {n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields_are_checked() {
        assert_eq!(chat_request(None, None), Ok(None));
        assert_eq!(chat_request(Some(&json!(true)), None), Ok(Some(0)));
        assert_eq!(chat_request(Some(&json!(true)), Some(5)), Ok(Some(5)));
        assert!(chat_request(Some(&json!(true)), Some(21)).is_err());
        assert!(chat_request(Some(&json!(false)), Some(3)).is_err());
        assert!(chat_request(Some(&json!(3)), None).is_err());
        assert_eq!(completion_request(Some(&json!(2))), Ok(Some(2)));
        assert!(completion_request(Some(&json!(-1))).is_err());
        assert!(completion_request(Some(&json!(true))).is_err());
    }
}
