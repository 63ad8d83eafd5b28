//! Tool calling and reasoning, shared by the APIs: what a request asks for (tools, tool
//! choice, thinking on or off) → the prompt's render options and the reply parser; the
//! parsed reply → the parts each API sends (content, reasoning, calls with ids).
//!
//! Every API maps its own shapes onto [`text::ChatMessage`] / [`text::ToolSpec`] /
//! [`text::ToolCall`] (OpenAI in openai.rs, Ollama in ollama.rs, Anthropic in
//! anthropic.rs), then:
//! 1. fills a [`ChatSetup`] (tools, template variables such as `enable_thinking`, the
//!    reasoning format) and calls [`ChatSetup::check_tools`];
//! 2. renders and tokenizes with `gen::chat_prompt(.., &setup, ..)`, which gives the
//!    rendered text too;
//! 3. gets the reply parser with [`ChatSetup::reply`] (None: plain text) and, when there
//!    is one, sets the request's `keep_special` to [`keep_special`]; a
//!    `tool_choice` that forces a call becomes the request's constraint ([`forced_call`]);
//! 4. turns generated text into [`Piece`]s with [`Reply::push`] / [`Reply::finish`]
//!    while streaming, or [`Parsed::new`] for a whole answer (the same parts).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use text::{ParseOptions, ReplyFormat, ReplyParser, ReplyPart, ToolCall, ToolSpec};

use crate::{ApiError, AppState, Flavor};

/// `--reasoning-format`: what happens to a model's reasoning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReasoningFormat {
    /// Left in the content as the model wrote it (`<think>…</think>` included).
    None,
    /// Separated: OpenAI's `reasoning_content`, Ollama's `thinking` (as DeepSeek's API
    /// and llama-server do).
    #[default]
    DeepSeek,
}

impl ReasoningFormat {
    /// The flag's and the request field's values: "none", "deepseek" (llama-server's
    /// "auto" is "deepseek").
    pub fn parse(s: &str) -> Option<ReasoningFormat> {
        match s {
            "none" => Some(ReasoningFormat::None),
            "deepseek" | "auto" => Some(ReasoningFormat::DeepSeek),
            _ => None,
        }
    }
}

/// A function tool as OpenAI and Ollama send it:
/// `{"type": "function", "function": {"name", "description", "parameters"}}`.
#[derive(Deserialize, Debug)]
pub(crate) struct ApiTool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: Option<ApiFunction>,
}

#[derive(Deserialize, Debug)]
struct ApiFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// Kept as written: the template shows the schema with its keys in this order.
    #[serde(default)]
    parameters: Option<Box<RawValue>>,
}

/// The tools of a request, checked: functions with names.
pub(crate) fn tool_specs(tools: Vec<ApiTool>, flavor: Flavor) -> Result<Vec<ToolSpec>, ApiError> {
    let bad = |m: String| ApiError::bad_request(m).with_flavor(flavor);
    tools
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            match t.kind.as_deref() {
                None | Some("function") => {}
                Some(other) => {
                    return Err(bad(format!(
                        "tools[{i}].type: '{other}' is not supported (function only)"
                    )))
                }
            }
            let f = t
                .function
                .ok_or_else(|| bad(format!("tools[{i}].function is required")))?;
            if f.name.trim().is_empty() {
                return Err(bad(format!("tools[{i}].function.name must not be empty")));
            }
            let parameters = match f.parameters {
                None => None,
                Some(p) if p.get().trim_start().starts_with('{') => Some(p.get().to_string()),
                Some(p) if p.get().trim() == "null" => None,
                Some(_) => {
                    return Err(bad(format!(
                        "tools[{i}].function.parameters must be a JSON Schema object"
                    )))
                }
            };
            Ok(ToolSpec {
                name: f.name,
                description: f.description,
                parameters,
            })
        })
        .collect()
}

/// OpenAI's `tool_choice` (Anthropic's `any` is `Required`, its `tool` is `Named`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    Auto,
    None,
    /// The reply must be a call (of any of the tools).
    Required,
    /// The reply must be a call of this function.
    Named(String),
}

/// `tool_choice`: "auto", "none", "required" or `{"type": "function", "function":
/// {"name": ...}}`. The last two are enforced by constraining the reply to the model's
/// call syntax ([`forced_call`]).
pub(crate) fn tool_choice(v: Option<&Value>, flavor: Flavor) -> Result<ToolChoice, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m).with_flavor(flavor));
    match v {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) if s == "auto" => Ok(ToolChoice::Auto),
        Some(Value::String(s)) if s == "none" => Ok(ToolChoice::None),
        Some(Value::String(s)) if s == "required" => Ok(ToolChoice::Required),
        Some(Value::Object(o)) => match o.get("function").and_then(|f| f.get("name")) {
            Some(Value::String(name)) => Ok(ToolChoice::Named(name.clone())),
            _ => bad("tool_choice as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}".into()),
        },
        Some(other) => bad(format!(
            "tool_choice must be \"auto\", \"none\", \"required\" or a function, got {other}"
        )),
    }
}

/// The constraint that makes the reply one call of `tools` (all of them, or the one
/// `choice` names) in the model's own call syntax, with arguments that follow the tool's
/// JSON schema: a grammar for llguidance, one alternative per tool (`%json` embeds the
/// schema), for every syntax the reply parser reads (Hermes, DeepSeek V3/R1 and V3.1,
/// Kimi-K2, GLM-4.5, harmony).
pub(crate) fn forced_call(
    st: &AppState,
    tools: &[ToolSpec],
    choice: &ToolChoice,
    flavor: Flavor,
) -> Result<Option<engine::ConstraintSpec>, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m).with_flavor(flavor));
    let chosen: Vec<&ToolSpec> = match choice {
        ToolChoice::Auto | ToolChoice::None => return Ok(None),
        ToolChoice::Required => tools.iter().collect(),
        ToolChoice::Named(name) => tools.iter().filter(|t| &t.name == name).collect(),
    };
    if chosen.is_empty() {
        return match choice {
            ToolChoice::Named(name) => bad(format!(
                "tool_choice names '{name}', which is not one of the tools"
            )),
            _ => bad("tool_choice requires a call, but no tools were given".into()),
        };
    }
    let Some(syntax) = reply_format(st).tools else {
        return Ok(None); // check_tools refuses the tools themselves
    };
    let template = st.engine.template.as_ref().map_or("", |t| t.source());
    // V3/R1 write `function<｜tool▁sep｜>NAME` and a fenced block; V3.1 `NAME<｜tool▁sep｜>{..}`.
    let fenced = template.contains("```json");
    let is_special = |marker: &str| {
        st.engine
            .tokenizer
            .as_ref()
            .and_then(|tok| tok.token_id(marker).filter(|&id| tok.is_special(id)))
            .is_some()
    };
    Ok(Some(engine::ConstraintSpec::Lark(call_grammar(
        syntax,
        fenced,
        &chosen,
        &is_special,
    ))))
}

/// The Lark grammar of one call of one of `tools` in `syntax` (`fenced`: DeepSeek V3/R1's
/// fenced arguments). A marker that the vocabulary has as a special token (`is_special`)
/// is written as that token (`<|channel|>`: llguidance's reference to a special token;
/// the model emits it as one token, and grammar text never matches a special token),
/// else as text.
fn call_grammar(
    syntax: text::ToolSyntax,
    fenced: bool,
    tools: &[&ToolSpec],
    is_special: &dyn Fn(&str) -> bool,
) -> String {
    let m = |marker: &str| {
        if is_special(marker) {
            marker.to_string()
        } else {
            lark_string(marker)
        }
    };
    let mut rules = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let args = t
            .parameters
            .as_deref()
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .unwrap_or_else(|| serde_json::json!({"type": "object"}));
        let name = lark_string(&t.name);
        let body = match syntax {
            text::ToolSyntax::Hermes => {
                let call = serde_json::json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, "arguments": args},
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                });
                format!(
                    "{} \"\\n\" %json {} \"\\n\" {}",
                    m("<tool_call>"),
                    compact(call),
                    m("</tool_call>")
                )
            }
            text::ToolSyntax::DeepSeek if fenced => format!(
                "{} {} \"function\" {} {} \"\\n```json\\n\" %json {} \"\\n```\" {} {}",
                m("<｜tool▁calls▁begin｜>"),
                m("<｜tool▁call▁begin｜>"),
                m("<｜tool▁sep｜>"),
                name,
                compact(args),
                m("<｜tool▁call▁end｜>"),
                m("<｜tool▁calls▁end｜>")
            ),
            text::ToolSyntax::DeepSeek => format!(
                "{} {} {} {} %json {} {} {}",
                m("<｜tool▁calls▁begin｜>"),
                m("<｜tool▁call▁begin｜>"),
                name,
                m("<｜tool▁sep｜>"),
                compact(args),
                m("<｜tool▁call▁end｜>"),
                m("<｜tool▁calls▁end｜>")
            ),
            text::ToolSyntax::KimiK2 => format!(
                "{} {} {} {} %json {} {} {}",
                m("<|tool_calls_section_begin|>"),
                m("<|tool_call_begin|>"),
                lark_string(&format!("functions.{}:0", t.name)),
                m("<|tool_call_argument_begin|>"),
                compact(args),
                m("<|tool_call_end|>"),
                m("<|tool_calls_section_end|>")
            ),
            // After the generation prompt `<|start|>assistant`; the call ends at an
            // end-of-generation token (`<|call|>`), which the complete grammar allows.
            text::ToolSyntax::Harmony => format!(
                "{} {} {} \"json\" {} %json {}",
                m("<|channel|>"),
                lark_string(&format!("commentary to=functions.{} ", t.name)),
                m("<|constrain|>"),
                m("<|message|>"),
                compact(args)
            ),
            // `<tool_call>NAME` then one `<arg_key>k</arg_key><arg_value>v</arg_value>` per
            // required argument, in the schema's order (optional ones are left out). Every
            // value is JSON, strings quoted: the template writes strings bare, but a bare
            // string could not be held to its schema, and the parser reads both.
            text::ToolSyntax::Glm45 => {
                let required: Vec<&str> = args["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut body = format!("{} {} \"\\n\"", m("<tool_call>"), name);
                for key in required {
                    let schema = args["properties"][key].clone();
                    let schema = if schema.is_object() {
                        schema
                    } else {
                        serde_json::json!({})
                    };
                    body.push_str(&format!(
                        " {} {} {} \"\\n\" {} %json {} {} \"\\n\"",
                        m("<arg_key>"),
                        lark_string(key),
                        m("</arg_key>"),
                        m("<arg_value>"),
                        compact(schema),
                        m("</arg_value>")
                    ));
                }
                body.push_str(&format!(" {}", m("</tool_call>")));
                body
            }
        };
        rules.push(format!("call{i}: {body}"));
    }
    let alternatives: Vec<String> = (0..tools.len()).map(|i| format!("call{i}")).collect();
    format!(
        "%llguidance {{}}\nstart: {}\n{}\n",
        alternatives.join(" | "),
        rules.join("\n")
    )
}

/// A schema with compact JSON, as the templates write calls (`{"a": 1, "b": 2}`):
/// llguidance's flexible whitespace would let a weak model pad a call forever.
fn compact(mut schema: Value) -> Value {
    if let Value::Object(o) = &mut schema {
        o.insert(
            "x-guidance".into(),
            serde_json::json!({"whitespace_flexible": false, "key_separator": ": ", "item_separator": ", "}),
        );
    }
    schema
}

/// A string literal of llguidance's Lark syntax (JSON's quoting).
fn lark_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// What a chat request renders and parses: its tools (empty: none offered or
/// `tool_choice: "none"`), template variables, and how the reply is taken apart.
#[derive(Debug, Default)]
pub(crate) struct ChatSetup {
    pub tools: Vec<ToolSpec>,
    pub kwargs: Vec<(String, Value)>,
    pub reasoning: ReasoningFormat,
}

impl ChatSetup {
    /// Checks that the model's template can take tools and that the server can read its
    /// calls back: a template that shows no tool-call syntax we parse is a 400, so that a
    /// client never believes it offered tools that were dropped.
    pub fn check_tools(&self, st: &AppState, flavor: Flavor) -> Result<(), ApiError> {
        if self.tools.is_empty() {
            return Ok(());
        }
        if reply_format(st).tools.is_none() {
            return Err(ApiError::bad_request(
                "this model's chat template has no tool-call format that this server parses \
                 (Hermes <tool_call>, DeepSeek, Kimi-K2, GLM-4.5, gpt-oss); 'tools' cannot be used",
            )
            .with_flavor(flavor));
        }
        Ok(())
    }

    /// Sets a template variable (`enable_thinking`, ...), the request's own
    /// `chat_template_kwargs` winning over the API's switches.
    pub fn set_kwarg(&mut self, name: &str, value: Value) {
        if !self.kwargs.iter().any(|(k, _)| k == name) {
            self.kwargs.push((name.to_string(), value));
        }
    }

    /// The reply parser for a prompt rendered as `prompt`, or None when the text needs no
    /// parsing (no tools offered, reasoning not separated or not in this format).
    pub fn reply(&self, st: &AppState, prompt: &str) -> Option<Reply> {
        let format = reply_format(st);
        let opts = ParseOptions {
            reasoning: self.reasoning == ReasoningFormat::DeepSeek && format.has_reasoning(),
            tools: !self.tools.is_empty() && format.tools.is_some(),
            starts_in_thinking: format.prompt_opens_thinking(prompt),
        };
        if !opts.reasoning && !opts.tools {
            return None;
        }
        Some(Reply {
            parser: ReplyParser::new(format, opts),
            calls: 0,
        })
    }
}

/// The special tokens the reply parser must see as text (they are dropped from generated
/// text otherwise): the markers of the model's reply format. Only for a request whose
/// reply is parsed: without a parser they would show up in the content.
pub(crate) fn keep_special(st: &AppState) -> Vec<u32> {
    let Some(tok) = st.engine.tokenizer.as_ref() else {
        return Vec::new();
    };
    reply_format(st)
        .markers()
        .into_iter()
        .filter_map(|m| tok.token_id(m))
        .filter(|&id| tok.is_special(id) && !tok.is_eog(id))
        .collect()
}

/// The model's reply format, from its chat template.
pub(crate) fn reply_format(st: &AppState) -> ReplyFormat {
    match st.engine.template.as_ref() {
        Some(t) if !t.is_fallback() => ReplyFormat::detect(t.source()),
        _ => ReplyFormat::detect(""),
    }
}

/// `chat_template_kwargs`: an object of template variables.
pub(crate) fn template_kwargs(
    v: Option<Value>,
    flavor: Flavor,
) -> Result<Vec<(String, Value)>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(m.into_iter().collect()),
        Some(_) => {
            Err(ApiError::bad_request("chat_template_kwargs must be an object").with_flavor(flavor))
        }
    }
}

/// A piece of a reply as the APIs send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Content(String),
    Reasoning(String),
    /// The `index`-th call of the reply, with its id.
    Call {
        index: usize,
        call: ToolCall,
    },
}

/// One reply being parsed: the parser and the calls numbered so far.
#[derive(Debug)]
pub(crate) struct Reply {
    parser: ReplyParser,
    calls: usize,
}

impl Reply {
    /// Generated text in, pieces out.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut parts = Vec::new();
        self.parser.push(text, &mut parts);
        self.pieces(parts)
    }

    /// The end of the reply: what was held back.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut parts = Vec::new();
        self.parser.finish(&mut parts);
        self.pieces(parts)
    }

    /// Calls made so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    fn pieces(&mut self, parts: Vec<ReplyPart>) -> Vec<Piece> {
        parts
            .into_iter()
            .map(|p| match p {
                ReplyPart::Content(t) => Piece::Content(t),
                ReplyPart::Reasoning(t) => Piece::Reasoning(t),
                ReplyPart::ToolCall(mut call) => {
                    if call.id.is_empty() {
                        call.id = format!("call_{:016x}", rand::random::<u64>());
                    }
                    let index = self.calls;
                    self.calls += 1;
                    Piece::Call { index, call }
                }
            })
            .collect()
    }
}

/// A whole reply: content, reasoning and calls.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub content: String,
    pub reasoning: String,
    pub calls: Vec<ToolCall>,
}

impl Parsed {
    /// The whole text parsed by `reply` (or all content without one).
    pub fn new(reply: Option<Reply>, text: String) -> Parsed {
        let Some(mut reply) = reply else {
            return Parsed {
                content: text,
                ..Parsed::default()
            };
        };
        let mut out = Parsed::default();
        let mut pieces = reply.push(&text);
        pieces.extend(reply.finish());
        for p in pieces {
            match p {
                Piece::Content(t) => out.content.push_str(&t),
                Piece::Reasoning(t) => out.reasoning.push_str(&t),
                Piece::Call { call, .. } => out.calls.push(call),
            }
        }
        out
    }
}

/// Tool calls' arguments as a JSON object (Ollama's shape); text that is not JSON
/// (which the parser never lets through) becomes an empty object.
pub(crate) fn arguments_object(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::Object(Default::default()))
}

/// Refuses special-token text (`<|im_end|>`) in tool definitions and calls: unlike
/// message contents, these are not kept apart when tokenizing, so such text would be read
/// as control tokens (unless the server runs with `--special-in-content`).
pub(crate) fn check_special_text(
    st: &AppState,
    tools: &[ToolSpec],
    messages: &[text::ChatMessage],
    flavor: Flavor,
) -> Result<(), ApiError> {
    if st.config.special_in_content {
        return Ok(());
    }
    let Some(tok) = st.engine.tokenizer.as_ref() else {
        return Ok(());
    };
    let tool_texts = tools.iter().flat_map(|t| {
        [
            Some(t.name.as_str()),
            t.description.as_deref(),
            t.parameters.as_deref(),
        ]
        .into_iter()
        .flatten()
    });
    let call_texts = messages.iter().flat_map(|m| {
        m.tool_calls
            .iter()
            .flat_map(|c| [c.name.as_str(), c.arguments.as_str(), c.id.as_str()])
            .chain(m.reasoning.as_deref())
            .chain(m.tool_call_id.as_deref())
            .chain(m.name.as_deref())
    });
    if tool_texts
        .chain(call_texts)
        .any(|t| tok.contains_special_text(t))
    {
        return Err(ApiError::bad_request(
            "a tool definition or tool call holds special-token text (such as '<|im_end|>'), \
             which would be read as control tokens; remove it, or start the server with \
             --special-in-content",
        )
        .with_flavor(flavor));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{ConstraintCompiler, ConstraintSpec};
    use text::{ParseOptions, ReplyParser, ReplyPart, Tokenizer};

    /// A real tokenizer from its vocabulary-only GGUF (tests/data/tokenizers).
    fn vocab(name: &str) -> Tokenizer {
        let gz =
            std::fs::read(testutil::data_dir().join(format!("tokenizers/{name}-vocab.gguf.gz")))
                .unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let path = std::env::temp_dir().join(format!(
            "ferromoe-forced-{name}-{}.gguf",
            std::process::id()
        ));
        std::fs::write(&path, raw).unwrap();
        let file = gguf::Gguf::open(&path).unwrap();
        let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
        let _ = std::fs::remove_file(&path);
        tok
    }

    /// Drives the forced-call grammar of `syntax` over a real vocabulary, taking the
    /// lowest allowed token id at each step (not what a model would write, but every step
    /// the grammar allows), and parses the text back: one call of the tool, its arguments
    /// valid. With these vocabularies the call markers are special tokens, so the
    /// grammar's special-token references are what is exercised.
    #[test]
    fn forced_calls_over_real_vocabularies_parse_back_to_the_call() {
        let tool = ToolSpec {
            name: "get_weather".into(),
            description: None,
            parameters: Some(
                r#"{"type":"object","properties":{"city":{"type":"string","maxLength":6}},"required":["city"],"additionalProperties":false}"#
                    .into(),
            ),
        };
        for (name, syntax, fenced, marker) in [
            (
                "deepseek-v3",
                text::ToolSyntax::DeepSeek,
                true,
                "<｜tool▁calls▁begin｜>",
            ),
            (
                "deepseek-v3",
                text::ToolSyntax::DeepSeek,
                false,
                "<｜tool▁sep｜>",
            ),
            ("gpt-oss", text::ToolSyntax::Harmony, false, "<|channel|>"),
            ("qwen2.5", text::ToolSyntax::Hermes, false, "<tool_call>"),
        ] {
            let tok = vocab(name);
            let is_special = |m: &str| tok.token_id(m).is_some_and(|id| tok.is_special(id));
            if syntax != text::ToolSyntax::Hermes {
                assert!(is_special(marker), "{name}: {marker} is a special token");
            }
            let grammar = call_grammar(syntax, fenced, &[&tool], &is_special);
            let compiler = ConstraintCompiler::new(&tok).unwrap();
            let mut c = compiler
                .compile(&ConstraintSpec::Lark(grammar.clone()))
                .unwrap_or_else(|e| panic!("{name}: {e}\n{grammar}"));
            let mut bytes = Vec::new();
            let mut specials = 0;
            for _ in 0..400 {
                if c.is_stopped() || c.is_accepting() {
                    break;
                }
                let allowed = c.allowed().unwrap();
                let id = (0..tok.vocab_size() as u32)
                    .find(|&id| allowed.is_allowed(id) && !tok.is_eog(id))
                    .unwrap_or_else(|| {
                        panic!(
                            "{name}: no token allowed after {:?}",
                            String::from_utf8_lossy(&bytes)
                        )
                    });
                specials += usize::from(tok.is_special(id));
                bytes.extend_from_slice(tok.token_to_piece(id));
                c.commit(id).unwrap();
            }
            assert!(c.is_accepting(), "{name}: the call is complete");
            let text = String::from_utf8(bytes).unwrap();
            if syntax != text::ToolSyntax::Hermes {
                assert!(
                    specials >= 3,
                    "{name}: the markers came as special tokens: {text:?}"
                );
            }
            let format = ReplyFormat {
                tools: Some(syntax),
                think_tags: false,
            };
            let opts = ParseOptions {
                reasoning: syntax == text::ToolSyntax::Harmony,
                tools: true,
                starts_in_thinking: false,
            };
            let calls: Vec<ToolCall> = ReplyParser::parse_all(format, opts, &text)
                .into_iter()
                .filter_map(|p| match p {
                    ReplyPart::ToolCall(c) => Some(c),
                    _ => None,
                })
                .collect();
            assert_eq!(calls.len(), 1, "{name} ({fenced}): one call in {text:?}");
            assert_eq!(calls[0].name, "get_weather", "{name}: {text:?}");
            let args: Value = serde_json::from_str(&calls[0].arguments).unwrap();
            assert!(args["city"].is_string(), "{name}: {args}");
        }
    }
}
