//! Tool conversations rendered with real templates (those of the vocab-only GGUFs in
//! tests/data/tokenizers, and Qwen3, DeepSeek-R1/V3.1, Kimi-K2, GLM-4.6, gpt-oss in
//! tests/data/templates/real) against transformers' own rendering
//! (tests/data/tokenizers/chat_tools_ref.py), the reply format detected in each, and
//! template variables (`enable_thinking`) reaching the template.

mod common;

use serde_json::Value;
use text::{ChatMessage, ChatTemplate, RenderOptions, ReplyFormat, ToolCall, ToolSpec, ToolSyntax};

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
    assert_eq!(cases.len(), 12);
    for case in cases {
        let (name, tmpl) = match case["tokenizer"].as_str() {
            // A shipped vocab-only GGUF: its own template and BOS/EOS.
            Some(name) => {
                let file = common::load_vocab_gguf(name);
                (name, ChatTemplate::from_gguf(file.metadata()).unwrap())
            }
            // A real template of another family (tests/data/templates/real).
            None => {
                let name = case["template"].as_str().unwrap();
                let path = common::data_dir().join(format!("templates/real/{name}.jinja"));
                let source = std::fs::read_to_string(&path).unwrap();
                let tmpl = ChatTemplate::new(
                    source,
                    case["bos_token"].as_str().unwrap(),
                    case["eos_token"].as_str().unwrap(),
                )
                .unwrap();
                (name, tmpl)
            }
        };
        let kwargs: Vec<(String, Value)> = case["kwargs"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
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
            kwargs: &kwargs,
        };
        let rendered = tmpl
            .render_with(&msgs, &opts)
            .unwrap_or_else(|e| panic!("{name} {kwargs:?}: {e}"));
        let want = case["rendered"].as_str().unwrap();
        assert_eq!(blank_date(&rendered), blank_date(want), "{name} {kwargs:?}");
        // The reply format each template teaches, and whether it opens the reasoning.
        let format = ReplyFormat::detect(tmpl.source());
        // R1 (llama.cpp's copy) and V3.1 open <think> when asked to think.
        let asked = kwargs.iter().any(|(_, v)| v == &Value::Bool(true));
        let (syntax, think, opens) = match name {
            "qwen2.5" => (ToolSyntax::Hermes, false, false),
            "deepseek-v3" => (ToolSyntax::DeepSeek, true, false),
            "Qwen-Qwen3-0.6B" => (ToolSyntax::Hermes, true, false),
            "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B" => (ToolSyntax::DeepSeek, true, asked),
            "deepseek-ai-DeepSeek-V3.1" => (ToolSyntax::DeepSeek, true, asked),
            "moonshotai-Kimi-K2" => (ToolSyntax::KimiK2, false, false),
            "GLM-4.6" => (ToolSyntax::Glm45, true, false),
            "openai-gpt-oss-120b" => (ToolSyntax::Harmony, false, false),
            other => panic!("no expectation for {other}"),
        };
        assert_eq!(
            format,
            ReplyFormat {
                tools: Some(syntax),
                think_tags: think
            },
            "{name}"
        );
        assert_eq!(
            format.prompt_opens_thinking(&rendered),
            opens,
            "{name} {kwargs:?}"
        );
    }
}

/// gpt-oss's template writes today's date (`strftime_now`): blanked for comparing.
fn blank_date(text: &str) -> String {
    match text.find("Current date: ") {
        Some(at) => {
            let start = at + "Current date: ".len();
            format!("{}YYYY-MM-DD{}", &text[..start], &text[start + 10..])
        }
        None => text.to_string(),
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
fn tojson_ensure_ascii_as_python() {
    let t = ChatTemplate::new(
        "{{ x | tojson(ensure_ascii=False) }} {{ x | tojson(ensure_ascii=True) }}",
        "",
        "",
    )
    .unwrap();
    let x = [("x".to_string(), Value::String("é😀\"".into()))];
    let opts = RenderOptions {
        kwargs: &x,
        ..RenderOptions::default()
    };
    // json.dumps("é😀\"", ensure_ascii=...) in Python.
    assert_eq!(
        t.render_with(&[], &opts).unwrap(),
        r#""é😀\"" "\u00e9\ud83d\ude00\"""#
    );
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
