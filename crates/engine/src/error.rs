//! What can go wrong in the engine, split by whose it is to fix: the caller's input
//! (a server answers 4xx) or the model, its file or the machine (a server answers 500
//! and logs the cause).

use std::sync::Arc;

use model::ModelError;

/// An engine failure. Cloning is cheap (a failed batch reports the same error to each of
/// its sequences).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The request cannot be served as asked: an empty prompt or one longer than the
    /// context, sampling settings out of range, a token id outside the vocabulary.
    #[error("{0}")]
    Input(String),
    /// The model, a kernel or the file failed (a shape the binding should have rejected,
    /// a failed repack, an allocation): not the caller's fault.
    #[error(transparent)]
    Model(Arc<ModelError>),
    /// The file's tokenizer or chat template cannot be used.
    #[error("{path}: {what}: {source}")]
    Text {
        path: String,
        what: &'static str,
        source: Arc<text::TextError>,
    },
    /// The file has no tokenizer, so it cannot generate text.
    #[error("this model file has no tokenizer, so it cannot generate text")]
    NoTokenizer,
}

impl EngineError {
    /// The caller's input is at fault (HTTP 4xx); otherwise it is an internal failure
    /// (HTTP 500).
    pub fn is_input(&self) -> bool {
        matches!(self, EngineError::Input(_))
    }

    /// The message and every underlying cause, "a: b: c", for a log line.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let s = c.to_string();
            // Transparent wrappers repeat their source's message.
            if !out.ends_with(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            cause = c.source();
        }
        out
    }
}

impl From<ModelError> for EngineError {
    /// The model's input errors (a request too long for the context, a bad token id or
    /// option) stay the caller's; everything else is internal.
    fn from(e: ModelError) -> EngineError {
        match e {
            ModelError::Input(m) => EngineError::Input(m),
            e => EngineError::Model(Arc::new(e)),
        }
    }
}

impl From<model::placement::PlacementError> for EngineError {
    fn from(e: model::placement::PlacementError) -> EngineError {
        EngineError::from(ModelError::from(e))
    }
}

impl From<gguf::GgufError> for EngineError {
    fn from(e: gguf::GgufError) -> EngineError {
        EngineError::from(ModelError::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_input_errors_stay_input_and_kernel_errors_are_internal() {
        let input = EngineError::from(ModelError::Input("context full".into()));
        assert!(input.is_input());
        assert_eq!(input.to_string(), "context full");
        let kernel = EngineError::from(ModelError::Kernel("blk.0.ffn_up: bad shape".into()));
        assert!(!kernel.is_input());
        assert_eq!(kernel.to_string(), "blk.0.ffn_up: bad shape");
        assert!(!EngineError::NoTokenizer.is_input());
    }

    #[test]
    fn chain_names_every_cause_once() {
        let e = EngineError::Text {
            path: "m.gguf".into(),
            what: "chat template",
            source: Arc::new(text::TextError::Template("unexpected end".into())),
        };
        let chain = e.chain();
        assert_eq!(
            chain,
            "m.gguf: chat template: chat template: unexpected end"
        );
        let kernel = EngineError::from(ModelError::Kernel("x".into()));
        assert_eq!(kernel.chain(), "x");
    }
}
