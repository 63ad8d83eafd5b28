//! Tool conversations rendered with real templates (those of the vocab-only GGUFs in
//! tests/data/tokenizers, and Qwen3, DeepSeek-R1/V3.1, Kimi-K2, GLM-4.6, gpt-oss in
//! tests/data/templates/real) against transformers' own rendering
//! (tests/data/tokenizers/chat_tools_ref.py), the reply format detected in each, and
//! template variables (`enable_thinking`) reaching the template.

mod common;

use serde_json::Value;
use text::{
    ChatMessage, ChatTemplate, ParseOptions, RenderOptions, ReplyFormat, ReplyParser, ReplyPart,
    ToolCall, ToolSpec, ToolSyntax,
};

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

/// What the template writes for an assistant turn of calls is what the model learnt to
/// write: parsed back, it gives the same calls. The turn is the text after the
/// generation prompt (where the history leaves it), up to the end-of-turn marker.
#[test]
fn each_template_s_own_call_syntax_parses_back_to_the_calls() {
    let calls = vec![
        ToolCall {
            id: "functions.get_weather:0".into(),
            name: "get_weather".into(),
            arguments: r#"{"city": "Paris", "days": 2}"#.into(),
        },
        ToolCall {
            id: "functions.get_time:1".into(),
            name: "get_time".into(),
            arguments: "{}".into(),
        },
    ];
    let tools = [ToolSpec {
        name: "get_weather".into(),
        description: Some("The weather.".into()),
        parameters: Some(
            r#"{"type": "object", "properties": {"city": {"type": "string"}}}"#.into(),
        ),
    }];
    let user = ChatMessage::user("Weather in Paris?");
    let turn = ChatMessage {
        tool_calls: calls.clone(),
        ..ChatMessage::new("assistant", "")
    };
    // End-of-turn texts after the last call (EOG tokens the model stops at).
    const ENDS: [&str; 4] = [
        "<|im_end|>",
        "<｜end▁of▁sentence｜>",
        "<|call|>",
        "<|user|>",
    ];
    let dir = common::data_dir().join("templates/real");
    let mut checked = 0;
    for name in [
        "Qwen-Qwen3-0.6B",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
        "deepseek-ai-DeepSeek-V3.1",
        "moonshotai-Kimi-K2",
        "GLM-4.6",
        "openai-gpt-oss-120b",
    ] {
        let source = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        let tmpl = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let thinking = [("enable_thinking".to_string(), Value::Bool(false))];
        let opts = |gen: bool| RenderOptions {
            add_generation_prompt: gen,
            tools: &tools,
            kwargs: &thinking,
        };
        let prompt = tmpl
            .render_with(std::slice::from_ref(&user), &opts(true))
            .unwrap();
        let whole = tmpl
            .render_with(&[user.clone(), turn.clone()], &opts(false))
            .unwrap();
        // The turn starts where the history leaves the generation prompt (R1's prompt
        // adds an empty reasoning that earlier turns do not show).
        let common = prompt
            .char_indices()
            .zip(whole.chars())
            .find(|((_, a), b)| a != b)
            .map_or(prompt.len(), |((i, _), _)| i);
        assert!(common > prompt.len() / 2, "{name}: {prompt:?} vs {whole:?}");
        // A marker both start with (`<`) is not common: back to the last one's end.
        let common = if common == prompt.len() {
            common
        } else {
            whole[..common].rfind('>').map_or(common, |i| i + 1)
        };
        let reply = &whole[common..];
        let end = ENDS
            .iter()
            .filter_map(|e| reply.find(e))
            .min()
            .unwrap_or(reply.len());
        let reply = &reply[..end];
        let format = ReplyFormat::detect(tmpl.source());
        let opts = ParseOptions {
            reasoning: true,
            tools: true,
            starts_in_thinking: format.prompt_opens_thinking(&prompt),
        };
        let parts = ReplyParser::parse_all(format, opts, reply);
        let got: Vec<(String, Value)> = parts
            .iter()
            .filter_map(|p| match p {
                ReplyPart::ToolCall(c) => {
                    Some((c.name.clone(), serde_json::from_str(&c.arguments).unwrap()))
                }
                ReplyPart::Content(t) => panic!("{name}: content {t:?} in {reply:?}"),
                ReplyPart::Reasoning(_) => None,
            })
            .collect();
        // gpt-oss's template writes only the first call of a turn.
        let want: Vec<(String, Value)> = calls
            .iter()
            .map(|c| (c.name.clone(), serde_json::from_str(&c.arguments).unwrap()))
            .take(if name == "openai-gpt-oss-120b" { 1 } else { 2 })
            .collect();
        assert_eq!(got, want, "{name}: {reply:?}");
        checked += 1;
    }
    assert_eq!(checked, 6);
}
