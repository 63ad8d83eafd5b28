//! Text side of the engine: tokenizers, chat templates and streaming detokenization,
//! all built from a GGUF file's own metadata.
//!
//! - [`Tokenizer::from_gguf`]: `tokenizer.ggml.model` "gpt2" (byte-level BPE with the
//!   pre-tokenizer regexes selected by `tokenizer.ggml.pre`) or "llama" (SentencePiece
//!   BPE with scores, `▁` spaces and `<0xXX>` byte fallback). Encoding is done by the
//!   Hugging Face `tokenizers` crate (pure Rust build), configured in code the way the
//!   model's `tokenizer.json` configures it, so ids match HF.
//! - [`ChatTemplate::from_gguf`]: `tokenizer.chat_template` rendered with minijinja the
//!   way transformers renders it.
//! - [`StreamDecoder`]: ids in, complete UTF-8 text out.
//! - [`ReplyParser`]: an assistant reply → content, reasoning and tool calls, for each
//!   model family's syntax ([`ReplyFormat::detect`] from the chat template).
//!
//! ```no_run
//! let file = gguf::Gguf::open("model.gguf")?;
//! let tok = text::Tokenizer::from_gguf(file.metadata())?;
//! let chat = text::ChatTemplate::from_gguf(file.metadata())?;
//! let prompt = chat.render(&[text::ChatMessage::user("Hi")], true)?;
//! let ids = tok.encode(&prompt, true)?;
//! let mut out = tok.stream_decoder(true);
//! for id in ids { print!("{}", out.push(id)); }
//! print!("{}", out.flush());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bytelevel;
mod chat;
mod error;
mod hf;
mod jsonvalue;
mod pretok;
mod pyjson;
mod reply;
mod stream;
mod strftime;
mod tokenizer;
mod vocab;

pub use bytelevel::byte_to_char_table;
pub use chat::{ChatMessage, ChatTemplate, RenderOptions, ToolCall, ToolSpec, CHATML_TEMPLATE};
pub use error::TextError;
pub use reply::{merge_parts, ParseOptions, ReplyFormat, ReplyParser, ReplyPart, ToolSyntax};
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;
pub use vocab::{ModelKind, SpecialIds, TokenType};
