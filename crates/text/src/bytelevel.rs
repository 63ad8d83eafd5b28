//! GPT-2's byte-level alphabet: every byte maps to one printable Unicode character so
//! that BPE vocabularies can be stored as text. Decoding a token means mapping each of
//! its characters back to the byte it stands for.

/// The character that stands for each byte (what GGUF byte-level vocabularies store).
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 256u32;
    for b in 0..=255u8 {
        // Printable Latin-1 characters stand for themselves; the rest (control codes,
        // space, DEL, NBSP, soft hyphen) are shifted to U+0100.. in byte order.
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next_extra).expect("U+0100..U+0143 are valid scalar values");
            next_extra += 1;
            c
        };
    }
    table
}

/// Maps byte-level characters back to bytes (the inverse of [`byte_to_char_table`]).
pub(crate) struct ByteDecoder {
    /// Indexed by code point; only code points below 0x144 are used by the alphabet.
    byte_of: Vec<Option<u8>>,
}

impl ByteDecoder {
    pub(crate) fn new() -> ByteDecoder {
        let mut byte_of = vec![None; 0x144];
        for (b, c) in byte_to_char_table().iter().enumerate() {
            byte_of[*c as usize] = Some(b as u8);
        }
        ByteDecoder { byte_of }
    }

    /// The raw bytes a byte-level token text stands for. A character outside the
    /// alphabet (possible only in hand-made vocabularies) is kept as its UTF-8 bytes.
    pub(crate) fn decode(&self, text: &str, out: &mut Vec<u8>) {
        for c in text.chars() {
            match self.byte_of.get(c as usize).copied().flatten() {
                Some(b) => out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection_with_known_points() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0], '\u{100}');
        let mut seen = std::collections::HashSet::new();
        assert!(t.iter().all(|c| seen.insert(*c)));
        let d = ByteDecoder::new();
        for b in 0..=255u8 {
            let mut out = Vec::new();
            d.decode(&t[b as usize].to_string(), &mut out);
            assert_eq!(out, vec![b]);
        }
    }
}
