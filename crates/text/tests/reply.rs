//! The reply parser of every family: whole replies, the same replies pushed in two and
//! three pieces split at every character boundary, malformed calls, and the formats
//! detected from templates.

use text::{ParseOptions, ReplyFormat, ReplyParser, ReplyPart, ToolCall, ToolSyntax};

fn format(tools: ToolSyntax, think_tags: bool) -> ReplyFormat {
    ReplyFormat {
        tools: Some(tools),
        think_tags,
    }
}

const ALL: ParseOptions = ParseOptions {
    reasoning: true,
    tools: true,
    starts_in_thinking: false,
};

fn content(s: &str) -> ReplyPart {
    ReplyPart::Content(s.into())
}
fn reasoning(s: &str) -> ReplyPart {
    ReplyPart::Reasoning(s.into())
}
fn call(name: &str, arguments: &str) -> ReplyPart {
    ReplyPart::ToolCall(ToolCall {
        id: String::new(),
        name: name.into(),
        arguments: arguments.into(),
    })
}

fn pieces(f: ReplyFormat, o: ParseOptions, parts: &[&str]) -> Vec<ReplyPart> {
    let mut p = ReplyParser::new(f, o);
    let mut out = Vec::new();
    for s in parts {
        p.push(s, &mut out);
    }
    p.finish(&mut out);
    text::merge_parts(out)
}

/// Parses `text` whole, then split in two and in three at every character boundary and
/// one character at a time: all must give `want`.
fn check(f: ReplyFormat, o: ParseOptions, text: &str, want: &[ReplyPart]) {
    assert_eq!(ReplyParser::parse_all(f, o, text), want, "whole: {text:?}");
    let cuts: Vec<usize> = (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    for &i in &cuts {
        let got = pieces(f, o, &[&text[..i], &text[i..]]);
        assert_eq!(
            got,
            want,
            "split at {i}: {:?} | {:?}",
            &text[..i],
            &text[i..]
        );
    }
    // Three pieces: every pair of cuts (the texts are short).
    for (a, &i) in cuts.iter().enumerate() {
        for &j in &cuts[a..] {
            let got = pieces(f, o, &[&text[..i], &text[i..j], &text[j..]]);
            assert_eq!(got, want, "split at {i},{j}");
        }
    }
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(pieces(f, o, &refs), want, "char by char");
}

#[test]
fn hermes_calls_with_text_before() {
    let f = format(ToolSyntax::Hermes, false);
    let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    check(
        f,
        ALL,
        text,
        &[
            content("Let me check."),
            call("get_weather", r#"{"city": "Paris", "days": 2}"#),
            call("get_time", "{}"),
        ],
    );
}

#[test]
fn hermes_quoted_arguments_and_no_arguments() {
    let f = format(ToolSyntax::Hermes, false);
    check(
        f,
        ALL,
        r#"<tool_call>{"name": "f", "arguments": "{\"a\": 1}"}</tool_call>"#,
        &[call("f", r#"{"a": 1}"#)],
    );
    check(
        f,
        ALL,
        r#"<tool_call>{"name": "g"}</tool_call>"#,
        &[call("g", "{}")],
    );
}

#[test]
fn hermes_malformed_calls_are_text() {
    let f = format(ToolSyntax::Hermes, false);
    for text in [
        "<tool_call>{\"name\": oops}</tool_call> after",
        "<tool_call>{\"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>",
        "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>",
        "Sure: <tool_call>{\"name\": \"f\", \"argu",
    ] {
        let got = ReplyParser::parse_all(f, ALL, text);
        let joined: String = got
            .iter()
            .map(|p| match p {
                ReplyPart::Content(c) => c.as_str(),
                other => panic!("{text:?} gave {other:?}"),
            })
            .collect();
        // As written, but for the whitespace between text and the call.
        assert_eq!(joined.replace(' ', ""), text.replace(' ', ""), "{text:?}");
    }
    check(
        f,
        ALL,
        "<tool_call>{\"name\": oops}</tool_call> after",
        &[content("<tool_call>{\"name\": oops}</tool_call> after")],
    );
}

#[test]
fn hermes_calls_without_tags() {
    let f = format(ToolSyntax::Hermes, false);
    check(
        f,
        ALL,
        "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
        &[call("get_weather", r#"{"city": "Paris"}"#)],
    );
    check(
        f,
        ALL,
        "\n```json\n{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {\"x\": 1}}\n```\n",
        &[call("a", "{}"), call("b", r#"{"x": 1}"#)],
    );
    // JSON that is not a call, or a call with more after it, is content.
    for text in [
        "{\"answer\": 42}",
        "{\"name\": \"a\", \"arguments\": {}} and then text",
        "{\"name\": \"a\", \"arguments\": {}, \"extra\": 1}",
        "```python\nprint(1)\n```",
        "```\n{\"name\": \"a\", \"arguments\": {}}\n```",
        "``` json",
        "`code` here",
    ] {
        check(f, ALL, text, &[content(text)]);
    }
    // A code answer streams as it comes (nothing held back past its first line).
    let mut p = ReplyParser::new(f, ALL);
    let mut out = Vec::new();
    p.push("```python\nprint(", &mut out);
    assert_eq!(out, [content("```python\nprint(")]);
    // Without tools offered, nothing is held.
    let off = ParseOptions {
        tools: false,
        ..ALL
    };
    let text = "{\"name\": \"a\", \"arguments\": {}}";
    check(f, off, text, &[content(text)]);
}

#[test]
fn an_unclosed_valid_call_at_the_end_is_a_call() {
    let f = format(ToolSyntax::Hermes, false);
    check(
        f,
        ALL,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": true}}",
        &[call("f", r#"{"x": true}"#)],
    );
}

#[test]
fn without_tools_calls_stay_text() {
    let f = format(ToolSyntax::Hermes, true);
    let off = ParseOptions {
        reasoning: false,
        tools: false,
        starts_in_thinking: false,
    };
    let text = " <think>x</think> <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call> ";
    check(f, off, text, &[content(text)]);
}

#[test]
fn plain_text_passes_unchanged() {
    let f = format(ToolSyntax::Hermes, true);
    for text in [
        "  Hello <b>there</b>\n\n",
        "a < b and c <tool x",
        "💡 ünïcode <thin",
    ] {
        check(f, ALL, text, &[content(text)]);
    }
}

#[test]
fn thinking_opened_by_the_prompt() {
    let f = format(ToolSyntax::Hermes, true);
    let o = ParseOptions {
        starts_in_thinking: true,
        ..ALL
    };
    check(
        f,
        o,
        "\nThe user greets me.\n</think>\n\nHello!",
        &[reasoning("The user greets me."), content("Hello!")],
    );
    // Cut off while thinking: all reasoning.
    check(
        f,
        o,
        "Still thinking <b>",
        &[reasoning("Still thinking <b>")],
    );
}

#[test]
fn thinking_opened_by_the_model_then_a_call() {
    let f = format(ToolSyntax::Hermes, true);
    check(
        f,
        ALL,
        "\n<think>\nI need the weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
        &[
            reasoning("I need the weather."),
            call("get_weather", r#"{"city": "Oslo"}"#),
        ],
    );
}

#[test]
fn think_after_text_is_text() {
    let f = format(ToolSyntax::Hermes, true);
    check(
        f,
        ALL,
        "Hi <think>no</think>",
        &[content("Hi <think>no</think>")],
    );
}

#[test]
fn reasoning_format_none_keeps_thinking_in_content() {
    let f = format(ToolSyntax::Hermes, true);
    let o = ParseOptions {
        reasoning: false,
        ..ALL
    };
    check(
        f,
        o,
        "<think>hmm</think>Answer",
        &[content("<think>hmm</think>Answer")],
    );
}

#[test]
fn deepseek_r1_calls() {
    let f = format(ToolSyntax::DeepSeek, true);
    let text = "I will look.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    check(
        f,
        ALL,
        text,
        &[
            content("I will look."),
            call("get_weather", r#"{"city": "Paris"}"#),
            call("get_time", "{}"),
        ],
    );
    // R1: the prompt opened <think>; no section end before the stream ends.
    let o = ParseOptions {
        starts_in_thinking: true,
        ..ALL
    };
    check(
        f,
        o,
        "Weather needed.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Rome\"}\n```<｜tool▁call▁end｜>",
        &[
            reasoning("Weather needed."),
            call("get_weather", r#"{"city": "Rome"}"#),
        ],
    );
}

#[test]
fn deepseek_v31_calls() {
    let f = format(ToolSyntax::DeepSeek, true);
    check(
        f,
        ALL,
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"tz\": \"UTC\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        &[
            call("get_weather", r#"{"city": "Paris"}"#),
            call("get_time", r#"{"tz": "UTC"}"#),
        ],
    );
}

#[test]
fn deepseek_malformed_is_text() {
    let f = format(ToolSyntax::DeepSeek, false);
    let text = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": Paris}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    check(f, ALL, text, &[content(text)]);
}

#[test]
fn kimi_k2_calls_keep_their_ids() {
    let f = format(ToolSyntax::KimiK2, true);
    let text = "Checking.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>";
    let mut want = vec![content("Checking.")];
    for (id, name, args) in [
        (
            "functions.get_weather:0",
            "get_weather",
            r#"{"city": "Paris"}"#,
        ),
        ("functions.get_time:1", "get_time", "{}"),
    ] {
        want.push(ReplyPart::ToolCall(ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: args.into(),
        }));
    }
    check(f, ALL, text, &want);
    let bad = "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0{}<|tool_call_end|><|tool_calls_section_end|>";
    check(f, ALL, bad, &[content(bad)]);
}

#[test]
fn glm45_calls_with_typed_values() {
    let f = format(ToolSyntax::Glm45, true);
    let text = "<think>Need it.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>New York</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n<arg_key>opts</arg_key>\n<arg_value>{\"unit\": \"C\"}</arg_value>\n</tool_call>";
    check(
        f,
        ALL,
        text,
        &[
            reasoning("Need it."),
            call(
                "get_weather",
                r#"{"city": "New York", "days": 3, "opts": {"unit": "C"}}"#,
            ),
        ],
    );
    check(f, ALL, "<tool_call>now\n</tool_call>", &[call("now", "{}")]);
    let bad = "<tool_call>f\n<arg_key>a</arg_key>oops</tool_call>";
    check(f, ALL, bad, &[content(bad)]);
}

#[test]
fn harmony_analysis_then_call() {
    let f = format(ToolSyntax::Harmony, false);
    check(
        f,
        ALL,
        "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}",
        &[
            reasoning("Need the weather."),
            call("get_weather", r#"{"city":"Paris"}"#),
        ],
    );
    // The recipient in the role part, and a call ended by <|call|>.
    check(
        f,
        ALL,
        "<|channel|>analysis<|message|>x<|end|><|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}<|call|>",
        &[reasoning("x"), call("f", "{}")],
    );
}

#[test]
fn harmony_final_answer() {
    let f = format(ToolSyntax::Harmony, false);
    check(
        f,
        ALL,
        "<|channel|>analysis<|message|>Simple.<|end|><|start|>assistant<|channel|>final<|message|>Hello there.",
        &[reasoning("Simple."), content("Hello there.")],
    );
    // Not harmony at all: content.
    check(f, ALL, "just text", &[content("just text")]);
    let bad = "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{oops";
    check(f, ALL, bad, &[content(bad)]);
}

#[test]
fn formats_detected_from_templates() {
    let hermes = "{% if tools %}<tool_call>{% endif %}";
    assert_eq!(
        ReplyFormat::detect(hermes),
        format(ToolSyntax::Hermes, false)
    );
    let qwen3 = "<tool_call> {{ '<think>' }} </think>";
    assert_eq!(ReplyFormat::detect(qwen3), format(ToolSyntax::Hermes, true));
    let glm = "<tool_call>{{ name }}<arg_key></arg_key></think>";
    assert_eq!(ReplyFormat::detect(glm), format(ToolSyntax::Glm45, true));
    let ds = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>";
    assert_eq!(ReplyFormat::detect(ds), format(ToolSyntax::DeepSeek, false));
    let kimi = "<|tool_calls_section_begin|><|tool_call_begin|>";
    assert_eq!(ReplyFormat::detect(kimi), format(ToolSyntax::KimiK2, false));
    let oss = "<|start|>assistant<|channel|>analysis<|message|>";
    assert_eq!(ReplyFormat::detect(oss), format(ToolSyntax::Harmony, false));
    assert_eq!(
        ReplyFormat::detect("{{ messages }}"),
        ReplyFormat {
            tools: None,
            think_tags: false
        }
    );
    let r1 = format(ToolSyntax::DeepSeek, true);
    assert!(r1.prompt_opens_thinking("<｜Assistant｜><think>\n"));
    assert!(!r1.prompt_opens_thinking("<｜Assistant｜><think>\n\n</think>\n\n"));
}
