//! Incremental detokenization for printing generated text as it is produced.

use crate::Tokenizer;

/// Turns a stream of token ids into text, returning only complete UTF-8 characters.
///
/// A token may end in the middle of a multi-byte character (byte-level BPE and
/// SentencePiece byte-fallback tokens carry single bytes); those bytes are held back
/// until the character is complete. Bytes that can never form a valid character become
/// U+FFFD as soon as that is certain. The concatenation of everything returned by
/// [`push`](Self::push) and [`flush`](Self::flush) equals
/// [`Tokenizer::decode`] of the same ids, including SentencePiece's rule of dropping
/// the one leading space of the text (unless [`keep_leading_space`](Self::keep_leading_space)
/// is used, for output that continues a prompt).
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    tok: Tokenizer,
    skip_special: bool,
    /// Bytes received but not yet returned (at most an incomplete character).
    pending: Vec<u8>,
    /// Still waiting for the first non-empty piece, whose leading space is dropped.
    strip_next_space: bool,
    /// Special tokens written as text even when `skip_special` (sorted): the markers a
    /// reply parser needs, such as DeepSeek's `<｜tool▁call▁begin｜>`.
    keep: Vec<u32>,
}

impl StreamDecoder {
    /// A decoder for `tok`; `skip_special` as in [`Tokenizer::decode`].
    pub fn new(tok: Tokenizer, skip_special: bool) -> StreamDecoder {
        let strip_next_space = tok.strips_leading_space();
        // Room for the longest piece after an incomplete character: pushing never
        // reallocates.
        let pending = Vec::with_capacity(tok.max_piece_len() + 4);
        StreamDecoder {
            tok,
            skip_special,
            pending,
            strip_next_space,
            keep: Vec::new(),
        }
    }

    /// Writes these special tokens as text although special tokens are skipped.
    pub fn keep_special(mut self, ids: &[u32]) -> StreamDecoder {
        self.keep = ids.to_vec();
        self.keep.sort_unstable();
        self.keep.dedup();
        self
    }

    /// Keep the leading space of the first token (the stream continues earlier text,
    /// e.g. a prompt, so `▁Paris` must print as " Paris").
    pub fn keep_leading_space(mut self) -> StreamDecoder {
        self.strip_next_space = false;
        self
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let mut out = String::new();
        self.push_to(id, &mut out);
        out
    }

    /// Adds one token, appending the text that became complete to `out` (no allocation
    /// once `out` and the decoder's buffer have grown to a token's size).
    pub fn push_to(&mut self, id: u32, out: &mut String) {
        if self.skip_special && self.tok.is_special(id) && self.keep.binary_search(&id).is_err() {
            return;
        }
        let mut piece = self.tok.token_to_piece(id);
        if piece.is_empty() {
            return;
        }
        if self.strip_next_space {
            self.strip_next_space = false;
            if let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
        }
        self.pending.extend_from_slice(piece);
        self.take_complete(out);
    }

    /// Adds several tokens; returns the text that became complete.
    pub fn push_all(&mut self, ids: &[u32]) -> String {
        ids.iter().map(|&id| self.push(id)).collect()
    }

    /// Returns whatever is held back (an incomplete character becomes U+FFFD) and
    /// resets the decoder to its initial state, ready for a new stream.
    pub fn flush(&mut self) -> String {
        let mut out = String::new();
        self.flush_to(&mut out);
        out
    }

    /// [`flush`](Self::flush), appending to `out`.
    pub fn flush_to(&mut self, out: &mut String) {
        out.push_str(&String::from_utf8_lossy(&self.pending));
        self.pending.clear();
        self.strip_next_space = self.tok.strips_leading_space();
    }

    /// Number of bytes held back waiting for the rest of a character.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Moves every complete character (and every certainly-invalid byte run, as
    /// U+FFFD) out of `pending` onto `out`, keeping only an incomplete trailing sequence.
    fn take_complete(&mut self, out: &mut String) {
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` marks a prefix that is valid UTF-8, so this never fails.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // Invalid whatever follows: replace it like from_utf8_lossy.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &after[n..];
                        }
                        // A character cut short at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
    }
}
