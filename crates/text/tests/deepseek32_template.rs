//! DeepSeek-V3.2's chat template as llama.cpp ships it (the released model has a Python
//! encoder and no Jinja template; the GGUFs llama.cpp converts carry this one) renders
//! exactly as HF transformers' `apply_chat_template` does, with thinking off and on:
//! tests/data/templates/deepseek-v3.2.chat-ref.json, made by
//! tests/data/templates/make_deepseek32_ref.py.

mod common;

use common::data_dir;
use serde_json::Value;
use text::{ChatMessage, ChatTemplate, RenderOptions};

#[test]
fn deepseek_v3_2_template_renders_as_hf_with_and_without_thinking() {
    let path = data_dir().join("templates/deepseek-v3.2.chat-ref.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let tmpl = ChatTemplate::new(
        r["chat_template"].as_str().unwrap(),
        r["bos_token"].as_str().unwrap(),
        r["eos_token"].as_str().unwrap(),
    )
    .unwrap();
    let convs = r["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 6, "reference conversations");
    let mut seen_thinking = [false; 2];
    for (i, c) in convs.iter().enumerate() {
        let messages: Vec<ChatMessage> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let thinking = c["thinking"].as_bool().unwrap();
        seen_thinking[usize::from(thinking)] = true;
        let kwargs = [("thinking".to_string(), Value::Bool(thinking))];
        let rendered = tmpl
            .render_with(
                &messages,
                &RenderOptions {
                    add_generation_prompt: c["add_generation_prompt"].as_bool().unwrap(),
                    tools: &[],
                    kwargs: &kwargs,
                },
            )
            .unwrap();
        assert_eq!(
            rendered,
            c["rendered"].as_str().unwrap(),
            "conversation {i} (thinking {thinking})"
        );
    }
    assert_eq!(seen_thinking, [true, true]);
}
