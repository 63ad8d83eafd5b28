//! Tool conversations rendered with the real templates shipped in tests/data/tokenizers,
//! against transformers' own rendering (tests/data/tokenizers/chat_tools_ref.py), and
//! template variables (`enable_thinking`) reaching the template.

mod common;

use serde_json::Value;
use text::{ChatMessage, ChatTemplate, RenderOptions, ToolCall, ToolSpec};

/// An OpenAI-style message of the reference → the crate's message (arguments as the
/// JSON text a client sends, whatever shape the reference gave the template).
fn message(m: &Value) -> ChatMessage {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let tool_calls = m["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    let args = &c["function"]["arguments"];
                    ToolCall {
                        id: c["id"].as_str().unwrap().into(),
                        name: c["function"]["name"].as_str().unwrap().into(),
                        arguments: match args.as_str() {
                            Some(s) => s.to_string(),
                            None => args.to_string(),
                        },
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    ChatMessage {
        role: m["role"].as_str().unwrap().into(),
        content: text(&m["content"]).unwrap_or_default(),
        tool_calls,
        tool_call_id: text(&m["tool_call_id"]),
        ..ChatMessage::default()
    }
}

fn tool(t: &Value) -> ToolSpec {
    let f = &t["function"];
    ToolSpec {
        name: f["name"].as_str().unwrap().into(),
        description: f["description"].as_str().map(str::to_string),
        // serde_json sorts keys; the reference's schema has them in document order, so
        // take the text from the file, not from the parsed value.
        parameters: None,
    }
}

/// The `parameters` objects of the reference file's tools, as written in the file.
fn parameter_texts(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(at) = rest.find("\"parameters\":") {
        let start = at + "\"parameters\":".len();
        let mut de = serde_json::Deserializer::from_str(&rest[start..]).into_iter::<Value>();
        de.next().unwrap().unwrap();
        let end = start + de.byte_offset();
        out.push(rest[start..end].trim().to_string());
        rest = &rest[end..];
    }
    out
}

#[test]
fn tool_conversations_match_transformers() {
    let path = common::data_dir().join("tokenizers/chat-tools-ref.json");
    let raw = std::fs::read_to_string(&path).unwrap();
    let reference: Value = serde_json::from_str(&raw).unwrap();
    let params = parameter_texts(&raw);
    let tools: Vec<ToolSpec> = reference["tools"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&params)
        .map(|(t, p)| ToolSpec {
            parameters: Some(p.clone()),
            ..tool(t)
        })
        .collect();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let name = case["tokenizer"].as_str().unwrap();
        let file = common::load_vocab_gguf(name);
        let tmpl = ChatTemplate::from_gguf(file.metadata()).unwrap();
        assert_eq!(
            tmpl.wants_string_arguments(),
            case["string_arguments"].as_bool().unwrap(),
            "{name}: how arguments reach the template"
        );
        let msgs: Vec<ChatMessage> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(message)
            .collect();
        let opts = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            tools: &tools,
            kwargs: &[],
        };
        let rendered = tmpl.render_with(&msgs, &opts).unwrap();
        assert_eq!(rendered, case["rendered"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn template_variables_reach_the_template() {
    let t = ChatTemplate::new(
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>{% endif %}{{ messages[0].content }}",
        "",
        "",
    )
    .unwrap();
    let msgs = [ChatMessage::user("hi")];
    let off = [("enable_thinking".to_string(), Value::Bool(false))];
    let opts = RenderOptions {
        kwargs: &off,
        ..RenderOptions::default()
    };
    assert_eq!(
        t.render_with(&msgs, &opts).unwrap(),
        "<think>\n\n</think>hi"
    );
    assert_eq!(t.render(&msgs, false).unwrap(), "hi");
    // The fixed variables are not a request's to change.
    let bad = [("messages".to_string(), Value::Null)];
    let opts = RenderOptions {
        kwargs: &bad,
        ..RenderOptions::default()
    };
    assert!(t.render_with(&msgs, &opts).is_err());
}

#[test]
fn bad_arguments_json_is_an_error_not_a_panic() {
    let file = common::load_vocab_gguf("qwen2.5");
    let tmpl = ChatTemplate::from_gguf(file.metadata()).unwrap();
    let msgs = [ChatMessage {
        tool_calls: vec![ToolCall {
            id: "c".into(),
            name: "f".into(),
            arguments: "{not json".into(),
        }],
        ..ChatMessage::new("assistant", "")
    }];
    let e = tmpl.render(&msgs, false).unwrap_err().to_string();
    assert!(e.contains("not JSON"), "{e}");
}
