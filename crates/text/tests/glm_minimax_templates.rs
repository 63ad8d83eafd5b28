//! GLM-4.5/4.6's and MiniMax-M2's chat templates (as llama.cpp ships them; the real
//! tokenizers are not obtainable here) render exactly as HF transformers'
//! `apply_chat_template` does: tests/data/templates/*.chat-ref.json, made by
//! tests/data/templates/make_glm_minimax_refs.py. Covers system prompts, the generation
//! prompt, and earlier assistant turns whose `<think>` reasoning the templates drop or keep.

mod common;

use common::data_dir;
use serde_json::Value;
use text::{ChatMessage, ChatTemplate};

fn check(name: &str) {
    let path = data_dir().join(format!("templates/{name}.chat-ref.json"));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let tmpl = ChatTemplate::new(
        r["chat_template"].as_str().unwrap(),
        r["bos_token"].as_str().unwrap(),
        r["eos_token"].as_str().unwrap(),
    )
    .unwrap();
    let convs = r["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 3, "{name}: reference conversations");
    for (i, c) in convs.iter().enumerate() {
        let messages: Vec<ChatMessage> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let rendered = tmpl
            .render(&messages, c["add_generation_prompt"].as_bool().unwrap())
            .unwrap();
        assert_eq!(
            rendered,
            c["rendered"].as_str().unwrap(),
            "{name}: conversation {i}"
        );
    }
}

#[test]
fn glm_4_6_template_renders_as_hf() {
    check("glm-4.6");
}

#[test]
fn minimax_m2_template_renders_as_hf() {
    check("minimax-m2");
}
