//! Randomised text: decode(encode(s)) == s for the byte-level vocabularies (and the
//! SentencePiece one, whose space prefix decode removes again), streaming == decode,
//! and encoding never produces an id outside the vocabulary.

mod common;

use text::Tokenizer;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const POOL: &[&str] = &[
    "a", "Z", "q", "the", " ", "  ", "\t", "\n", "\r\n", "\r", "0", "7", "123", "'s", "'LL", ".",
    ",", "!?", "--", "#", "{", "}", "\"", "\\", "é", "e\u{301}", "ß", "ø", "Ж", "щ", "α", "ש", "ع",
    "न", "\u{94d}", "你", "好", "。", "日", "カ", "ひ", "한", "ไ", "ក", "🦙", "👍🏽", "🇺🇸",
    "\u{200d}", "\u{200b}", "\u{a0}", "\u{feff}", "\u{3000}", "ﬁ", "Ｆ", "𐍈", "\u{0}", "\u{7f}",
    "\u{85}", "\u{2028}", "<", ">", "<|", "|>", "<s", "｜",
];

fn random_text(rng: &mut Rng) -> String {
    let n = rng.below(24);
    (0..n).map(|_| POOL[rng.below(POOL.len())]).collect()
}

fn check(name: &str, tok: &Tokenizer, exact: impl Fn(&str) -> bool) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    for case in 0..1500 {
        let s = random_text(&mut rng);
        let ids = tok.encode(&s, false).unwrap();
        assert!(
            ids.iter().all(|&i| (i as usize) < tok.vocab_size()),
            "{name}: id out of range for {s:?}"
        );
        let back = tok.decode(&ids, false);
        if exact(&s) {
            assert_eq!(back, s, "{name} case {case}: ids {ids:?}");
        }
        let mut st = tok.stream_decoder(false);
        let streamed: String = ids.iter().map(|&id| st.push(id)).collect::<String>() + &st.flush();
        assert_eq!(streamed, back, "{name} case {case}: stream != decode");
    }
}

#[test]
fn byte_level_vocabularies_round_trip() {
    for name in ["deepseek-v3", "llama3"] {
        let file = common::load_vocab_gguf(name);
        let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
        check(name, &tok, |_| true);
    }
    // Qwen2 normalises to NFC first: exact only for text that is already NFC.
    let file = common::load_vocab_gguf("qwen2.5");
    let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
    check("qwen2.5", &tok, |s| !s.contains('\u{301}'));
    let tiny =
        gguf::Gguf::open(common::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf"))
            .unwrap();
    check(
        "tiny",
        &Tokenizer::from_gguf(tiny.metadata()).unwrap(),
        |_| true,
    );
}

#[test]
fn sentencepiece_round_trips() {
    let file = common::load_vocab_gguf("mixtral");
    let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
    // Text after a special token gets the `▁` prefix too (as in HF and llama.cpp), so a
    // round trip through "<s>" gains a space.
    check("mixtral", &tok, |s| {
        !["<s>", "</s>", "<unk>"].iter().any(|sp| s.contains(sp))
    });
}
