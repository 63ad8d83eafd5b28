//! The crate's error type.

use gguf::GgufError;

/// Everything that can go wrong building a tokenizer or chat template from GGUF
/// metadata, encoding text or rendering a conversation.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A metadata key is missing or has the wrong type (the message names file and key).
    #[error(transparent)]
    Metadata(#[from] GgufError),

    /// `tokenizer.ggml.model` names a tokenizer family this crate does not implement.
    #[error(
        "unsupported tokenizer model {model:?} (tokenizer.ggml.model); supported: {supported}"
    )]
    UnsupportedModel {
        /// The value found in the file.
        model: String,
        /// The supported values, comma separated.
        supported: String,
    },

    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not know.
    #[error("unsupported pre-tokenizer {pre:?} (tokenizer.ggml.pre); supported: {supported}")]
    UnsupportedPre {
        /// The value found in the file.
        pre: String,
        /// The supported values, comma separated.
        supported: String,
    },

    /// The vocabulary arrays are inconsistent (lengths, ids out of range, bad merges).
    #[error("{file}: invalid vocabulary: {msg}")]
    BadVocab {
        /// The GGUF file the metadata came from.
        file: String,
        /// What is wrong.
        msg: String,
    },

    /// The underlying tokenizer failed while encoding.
    #[error("tokenization failed: {0}")]
    Encode(String),

    /// `add_special` asked for a BOS/EOS token the vocabulary does not define.
    #[error(
        "the tokenizer is configured to add a {which} token but the file defines no {which} id"
    )]
    MissingSpecial {
        /// "BOS" or "EOS".
        which: &'static str,
    },

    /// The file has no `tokenizer.chat_template`.
    #[error("{file}: no chat template (tokenizer.chat_template is missing); pass one explicitly or use ChatTemplate::chatml()")]
    MissingChatTemplate {
        /// The GGUF file the metadata came from.
        file: String,
    },

    /// The chat template failed to compile or to render.
    #[error("chat template: {0}")]
    Template(String),
}
