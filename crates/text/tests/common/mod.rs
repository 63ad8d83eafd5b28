//! Shared helpers: load the vocab-only GGUFs and their HF reference files.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;

use serde::Deserialize;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// Parses `tests/data/tokenizers/<name>-vocab.gguf.gz`.
pub fn load_vocab_gguf(name: &str) -> gguf::Gguf {
    let path = data_dir().join(format!("tokenizers/{name}-vocab.gguf.gz"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .expect("gunzip");
    gguf::Gguf::from_bytes(bytes, &format!("{name}-vocab.gguf")).expect("parse GGUF")
}

#[derive(Deserialize, Debug)]
pub struct RefString {
    pub text: String,
    pub ids_add_special_false: Vec<u32>,
    pub ids_add_special_true: Vec<u32>,
    pub decode_skip_special_false: String,
    pub decode_skip_special_true: String,
    pub roundtrip_exact: bool,
    pub llamacpp_ids_add_special_false: Vec<u32>,
    pub llamacpp_matches_hf: bool,
}

#[derive(Deserialize, Debug)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Deserialize, Debug)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub add_generation_prompt: bool,
    pub rendered: String,
    pub ids: Vec<u32>,
}

#[derive(Deserialize, Debug)]
pub struct MistralRendering {
    pub messages: Vec<Message>,
    pub ids: Vec<u32>,
    pub text: String,
}

#[derive(Deserialize, Debug, Default)]
pub struct Chat {
    pub chat_template: Option<String>,
    pub conversation: Option<Conversation>,
    pub conversation_no_system: Option<Conversation>,
    pub mistral_common_v1: Option<MistralRendering>,
}

#[derive(Deserialize, Debug)]
pub struct Reference {
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub strings: Vec<RefString>,
    #[serde(default)]
    pub chat: Chat,
    pub llamacpp_vs_hf_mismatches: Vec<usize>,
}

pub fn load_reference(name: &str) -> Reference {
    let path = data_dir().join(format!("tokenizers/{name}.tokenizer-ref.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference json")
}

pub fn to_chat(messages: &[Message]) -> Vec<text::ChatMessage> {
    messages
        .iter()
        .map(|m| text::ChatMessage::new(&m.role, &m.content))
        .collect()
}
