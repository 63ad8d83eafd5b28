//! Chat templates: the Jinja2 template a GGUF carries in `tokenizer.chat_template`,
//! rendered the way HF transformers' `apply_chat_template` renders it.

use gguf::Metadata;
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};

use crate::TextError;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// "system", "user", "assistant", "tool", ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
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
        Ok(ChatTemplate {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            is_fallback: false,
        })
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
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        let ctx = minijinja::context! {
            messages => msgs,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            add_generation_prompt => add_generation_prompt,
            tools => Value::from(()),
            documents => Value::from(()),
        };
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TextError::Template(describe(&e)))?;
        tmpl.render(ctx)
            .map_err(|e| TextError::Template(describe(&e)))
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

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    crate::pyjson::write(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}
