//! Chat templates: the Jinja2 template a GGUF carries in `tokenizer.chat_template`,
//! rendered the way HF transformers' `apply_chat_template` renders it.

use gguf::Metadata;
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};

use crate::jsonvalue::ordered_map;
use crate::TextError;

/// One message of a conversation: what every API (OpenAI, Ollama, Anthropic) maps its
/// messages onto, and what chat templates see (see [`ChatTemplate::render_with`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatMessage {
    /// "system", "user", "assistant", "tool", ...
    pub role: String,
    /// The message text (for an assistant turn: its answer, without the reasoning).
    pub content: String,
    /// The reasoning ("thinking") of an assistant turn, shown to templates that render
    /// it as `reasoning_content` (most drop it from earlier turns).
    pub reasoning: Option<String>,
    /// The calls an assistant turn made.
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the id of the call it answers.
    pub tool_call_id: Option<String>,
    /// For a `tool` message: the name of the function that answered.
    pub name: Option<String>,
}

/// A function call made by the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id (`call_...`), which the tool's answer refers to.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments: the JSON text of an object (as OpenAI carries it).
    pub arguments: String,
}

/// A function the model may call, shown to the template as OpenAI's
/// `{"type": "function", "function": {"name", "description", "parameters"}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolSpec {
    pub name: String,
    pub description: Option<String>,
    /// The JSON Schema of the arguments, as JSON text (its key order is kept, so the
    /// template writes it as the client sent it).
    pub parameters: Option<String>,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..ChatMessage::default()
        }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
    /// A tool's answer to the call `tool_call_id`.
    pub fn tool(content: impl Into<String>, tool_call_id: Option<String>) -> ChatMessage {
        ChatMessage {
            tool_call_id,
            ..ChatMessage::new("tool", content)
        }
    }
}

/// What a rendering may add besides the messages.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions<'a> {
    /// End with the header of an assistant turn, ready for generation.
    pub add_generation_prompt: bool,
    /// The functions the model may call (`tools`; none when empty).
    pub tools: &'a [ToolSpec],
    /// More template variables (transformers' `apply_chat_template(**kwargs)`, e.g.
    /// `enable_thinking`), as JSON values.
    pub kwargs: &'a [(String, serde_json::Value)],
}

/// The ChatML template, used by [`ChatTemplate::chatml`] as an explicit fallback.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template with the BOS/EOS token texts it may refer to.
///
/// Rendering follows transformers: Jinja2 with `trim_blocks` and `lstrip_blocks`,
/// loop controls, Python string methods (`.strip()`, `.startswith()`, `.split()`, ...),
/// `raise_exception(msg)`, `strftime_now(fmt)`, a `tojson` filter that writes JSON the
/// way Python's `json.dumps(ensure_ascii=False)` does, and the variables `messages`,
/// `bos_token`, `eos_token`, `add_generation_prompt`, `tools` = none, `documents` = none.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    is_fallback: bool,
    /// See [`ChatTemplate::wants_string_arguments`].
    string_arguments: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("is_fallback", &self.is_fallback)
            .field("source_len", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// The file's `tokenizer.chat_template`, with `bos_token` / `eos_token` the texts of
    /// the file's BOS/EOS tokens (empty when the file defines none). A file without a
    /// template is an error ([`TextError::MissingChatTemplate`]); use
    /// [`ChatTemplate::chatml`] explicitly if a fallback is wanted.
    pub fn from_gguf(meta: &Metadata) -> Result<ChatTemplate, TextError> {
        let Some(source) = meta.opt_str("tokenizer.chat_template")? else {
            return Err(TextError::MissingChatTemplate {
                file: meta.file().to_owned(),
            });
        };
        let tokens = meta
            .opt_str_array("tokenizer.ggml.tokens")?
            .unwrap_or_default();
        let text_of = |key: &str| -> Result<String, TextError> {
            Ok(match meta.opt_u32(key)? {
                Some(id) => tokens
                    .get(id as usize)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                None => String::new(),
            })
        };
        let bos = text_of("tokenizer.ggml.bos_token_id")?;
        let eos = text_of("tokenizer.ggml.eos_token_id")?;
        ChatTemplate::new(source, bos, eos)
    }

    /// Compiles `source` (Jinja2) with the given BOS/EOS texts.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate, TextError> {
        let source = source.into();
        let mut env = Environment::new();
        // transformers' sandboxed environment: trim_blocks, lstrip_blocks; Jinja2's
        // default of dropping a single trailing newline is minijinja's default too.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TextError::Template(describe(&e)))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| TextError::Template(describe(&e)))?;
        let mut t = ChatTemplate {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            is_fallback: false,
            string_arguments: false,
        };
        t.string_arguments = t.probe_string_arguments();
        Ok(t)
    }

    /// The ChatML template (`<|im_start|>role\ncontent<|im_end|>\n`), for files that
    /// carry no template. [`is_fallback`](Self::is_fallback) reports it as such.
    pub fn chatml(bos_token: impl Into<String>, eos_token: impl Into<String>) -> ChatTemplate {
        let mut t = ChatTemplate::new(CHATML_TEMPLATE, bos_token, eos_token)
            .expect("the built-in ChatML template compiles");
        t.is_fallback = true;
        t
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the header
    /// of an assistant turn, ready for generation.
    ///
    /// Tokenize the result with `add_special = false` (as transformers does): templates
    /// that want a BOS write `bos_token` themselves, and adding another would double it.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        self.render_with(
            messages,
            &RenderOptions {
                add_generation_prompt,
                ..RenderOptions::default()
            },
        )
    }

    /// Renders `messages` with tools and template variables. Messages are shown as
    /// transformers shows OpenAI-style dicts: `tool_calls` only on messages that have
    /// calls (templates test `'tool_calls' in message`), `content` none for a turn that
    /// is only calls, each call as `{"id", "type": "function", "function": {"name",
    /// "arguments"}}` with the arguments an object, or the JSON text for templates that
    /// concatenate them as a string (DeepSeek's; see [`Self::wants_string_arguments`]).
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        options: &RenderOptions<'_>,
    ) -> Result<String, TextError> {
        let string_args = self.string_arguments;
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| message_value(m, string_args))
            .collect::<Result<_, _>>()?;
        let tools = if options.tools.is_empty() {
            Value::from(())
        } else {
            Value::from(
                options
                    .tools
                    .iter()
                    .map(tool_value)
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        let mut vars: Vec<(String, Value)> = vec![
            ("messages".into(), Value::from(msgs)),
            ("bos_token".into(), Value::from(self.bos_token.as_str())),
            ("eos_token".into(), Value::from(self.eos_token.as_str())),
            (
                "add_generation_prompt".into(),
                Value::from(options.add_generation_prompt),
            ),
            ("tools".into(), tools),
            ("documents".into(), Value::from(())),
        ];
        for (k, v) in options.kwargs {
            let v = crate::jsonvalue::parse(&v.to_string())
                .map_err(|e| TextError::Template(format!("template variable '{k}': {e}")))?;
            match vars.iter_mut().find(|(name, _)| name == k) {
                // The fixed variables are the caller's to set, not a request's.
                Some(_) => {
                    return Err(TextError::Template(format!(
                        "'{k}' cannot be set as a template variable"
                    )))
                }
                None => vars.push((k.clone(), v)),
            }
        }
        let ctx = ordered_map(vars);
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TextError::Template(describe(&e)))?;
        tmpl.render(ctx)
            .map_err(|e| TextError::Template(describe(&e)))
    }

    /// True when the template writes a call's arguments by string concatenation
    /// (`'...' + tool['function']['arguments']`), so they must reach it as JSON text;
    /// found once, when the template is compiled, by rendering a probe call both ways.
    pub fn wants_string_arguments(&self) -> bool {
        self.string_arguments
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The BOS text the template sees as `bos_token`.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The EOS text the template sees as `eos_token`.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// True for the built-in ChatML fallback, false for a template from the file.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }
}

impl ChatTemplate {
    /// Renders one call with object arguments: a template that fails on it, or does not
    /// show the argument's value, concatenates strings (as llama.cpp's minja finds out
    /// the same way), and one that shows the JSON text instead wants strings.
    fn probe_string_arguments(&self) -> bool {
        if !self.source.contains("tool_calls") {
            return false;
        }
        let call = ToolCall {
            id: "call_probe".into(),
            name: "probe_fn".into(),
            arguments: r#"{"probe_key": "probe_value"}"#.into(),
        };
        let msgs = [
            ChatMessage::user("probe"),
            ChatMessage {
                tool_calls: vec![call],
                ..ChatMessage::new("assistant", "")
            },
        ];
        let shows = |string_args: bool| {
            self.render_with_args_mode(&msgs, string_args)
                .is_some_and(|text| text.contains("probe_value"))
        };
        !shows(false) && shows(true)
    }

    fn render_with_args_mode(&self, msgs: &[ChatMessage], string_args: bool) -> Option<String> {
        let values: Vec<Value> = msgs
            .iter()
            .map(|m| message_value(m, string_args))
            .collect::<Result<_, _>>()
            .ok()?;
        let ctx = minijinja::context! {
            messages => values,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            add_generation_prompt => false,
            tools => Value::from(()),
            documents => Value::from(()),
        };
        self.env.get_template(TEMPLATE_NAME).ok()?.render(ctx).ok()
    }
}

/// A message as transformers shows an OpenAI-style dict to the template.
fn message_value(m: &ChatMessage, string_args: bool) -> Result<Value, TextError> {
    let mut fields: Vec<(&str, Value)> = vec![("role", Value::from(m.role.as_str()))];
    // An empty string, never none, for a turn that is only calls: some templates (Qwen3's)
    // fail on none, and those that test for none (DeepSeek's) write the same text for
    // an empty string (llama.cpp's minja does the same).
    fields.push(("content", Value::from(m.content.as_str())));
    if let Some(r) = &m.reasoning {
        fields.push(("reasoning_content", Value::from(r.as_str())));
    }
    if !m.tool_calls.is_empty() {
        let calls = m
            .tool_calls
            .iter()
            .map(|c| {
                let arguments = if string_args {
                    Value::from(c.arguments.as_str())
                } else {
                    crate::jsonvalue::parse(&c.arguments).map_err(|e| {
                        TextError::Template(format!(
                            "the arguments of tool call '{}' are not JSON: {e}",
                            c.name
                        ))
                    })?
                };
                let function = ordered_map([
                    ("name", Value::from(c.name.as_str())),
                    ("arguments", arguments),
                ]);
                Ok(ordered_map([
                    ("id", Value::from(c.id.as_str())),
                    ("type", Value::from("function")),
                    ("function", function),
                ]))
            })
            .collect::<Result<Vec<Value>, TextError>>()?;
        fields.push(("tool_calls", Value::from(calls)));
    }
    if let Some(id) = &m.tool_call_id {
        fields.push(("tool_call_id", Value::from(id.as_str())));
    }
    if let Some(name) = &m.name {
        fields.push(("name", Value::from(name.as_str())));
    }
    Ok(ordered_map(fields))
}

/// A tool as transformers shows OpenAI's tool dict to the template.
fn tool_value(t: &ToolSpec) -> Result<Value, TextError> {
    let mut function: Vec<(&str, Value)> = vec![("name", Value::from(t.name.as_str()))];
    if let Some(d) = &t.description {
        function.push(("description", Value::from(d.as_str())));
    }
    if let Some(p) = &t.parameters {
        let schema = crate::jsonvalue::parse(p).map_err(|e| {
            TextError::Template(format!(
                "the parameters of tool '{}' are not JSON: {e}",
                t.name
            ))
        })?;
        function.push(("parameters", schema));
    }
    Ok(ordered_map([
        ("type", Value::from("function")),
        ("function", ordered_map(function)),
    ]))
}

/// The error with its chain of causes and the template line, on one line.
fn describe(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("template raised: {msg}"),
    ))
}

fn strftime_now(fmt: String) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(Value::from(crate::strftime::format_utc(secs, &fmt)))
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=...)`
/// (`ensure_ascii=True` escapes non-ASCII characters as `\uXXXX`).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    // transformers' default is False; GLM's template spells it out.
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    crate::pyjson::write(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    if ensure_ascii == Some(true) {
        // Non-ASCII characters only occur inside strings: escape them as Python does.
        let mut ascii = String::with_capacity(out.len());
        for c in out.chars() {
            if c.is_ascii() {
                ascii.push(c);
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    ascii.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
        out = ascii;
    }
    Ok(Value::from_safe_string(out))
}
