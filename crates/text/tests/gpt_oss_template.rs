//! The gpt-oss (harmony) chat template, as the tiny gpt-oss GGUF carries it (the real
//! gpt-oss-120b template), renders what HF's `apply_chat_template` renders
//! (tests/data/tiny/gpt-oss-tiny/chat_ref.json, made by its chat_ref.py), today's date
//! included.

use std::path::PathBuf;

use text::{ChatMessage, ChatTemplate};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/tiny/gpt-oss-tiny")
}

/// Replaces the `Current date: YYYY-MM-DD` the template writes by `DATE`, checking its form.
fn without_date(text: &str) -> String {
    const KEY: &str = "Current date: ";
    let Some(at) = text.find(KEY) else {
        return text.to_string();
    };
    let date = &text[at + KEY.len()..at + KEY.len() + 10];
    assert!(
        date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 {
            b == b'-'
        } else {
            b.is_ascii_digit()
        }),
        "a date: {date}"
    );
    format!(
        "{}DATE{}",
        &text[..at + KEY.len()],
        &text[at + KEY.len() + 10..]
    )
}

#[test]
fn harmony_template_renders_as_hf() {
    let file = gguf::Gguf::open(data().join("gpt-oss-tiny-MXFP4_MOE.gguf")).unwrap();
    let tmpl = ChatTemplate::from_gguf(file.metadata()).unwrap();
    assert!(!tmpl.is_fallback());
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("chat_ref.json")).unwrap())
            .unwrap();
    let conversations = reference["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 3);
    for (i, c) in conversations.iter().enumerate() {
        let messages: Vec<ChatMessage> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let add = c["add_generation_prompt"].as_bool().unwrap();
        let ours = tmpl.render(&messages, add).unwrap();
        assert_eq!(
            without_date(&ours),
            c["text"].as_str().unwrap(),
            "conversation {i}"
        );
        assert!(ours.contains("<|start|>assistant"), "harmony turns");
    }
}
