//! Pre-tokenizers for byte-level BPE vocabularies, selected by `tokenizer.ggml.pre`.
//!
//! The regexes are the ones the models' own `tokenizer.json` files use (llama.cpp's
//! `llama-vocab.cpp` lists the same per pre name; where llama.cpp rewrote a `(?i:...)`
//! group for its regex engine we keep the original, which is what HF runs). Several
//! regexes are applied in sequence, each splitting the pieces the previous one left,
//! keeping both the matches and the text between them ("isolated" splitting).

/// What a pre-tokenizer name selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PreConfig {
    /// The canonical family name (for messages and `Tokenizer::pre`).
    pub family: &'static str,
    /// Split regexes, applied in order. Empty means "GPT-2's ByteLevel regex".
    pub regexes: &'static [&'static str],
    /// Unicode NFC normalisation before splitting (Qwen2's tokenizer.json has it).
    pub nfc: bool,
    /// A pre-token that is itself a vocabulary entry is emitted as is, without running
    /// the merges (tiktoken semantics; Llama-3's tokenizer.json sets `ignore_merges`).
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos_token` when the key is absent.
    pub default_add_bos: bool,
}

const GPT2: PreConfig = PreConfig {
    family: "gpt-2",
    regexes: &[],
    nfc: false,
    ignore_merges: false,
    default_add_bos: false,
};

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const LLAMA3: PreConfig = PreConfig {
    family: "llama3",
    regexes: &[LLAMA3_REGEX],
    nfc: false,
    ignore_merges: true,
    default_add_bos: true,
};

/// Llama-3's regex under the names llama.cpp gives to Llama-3-derived vocabularies.
/// llama.cpp adds no BOS by default for these names; merges are ignored for whole-word
/// vocabulary hits as in the HF tokenizer.json they were converted from.
const LLAMA3_DERIVED: PreConfig = PreConfig {
    family: "llama3",
    default_add_bos: false,
    ..LLAMA3
};

const QWEN2: PreConfig = PreConfig {
    family: "qwen2",
    regexes: &[
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ],
    nfc: true,
    ignore_merges: false,
    default_add_bos: false,
};

const DEEPSEEK_V3: PreConfig = PreConfig {
    family: "deepseek-v3",
    regexes: &[
        r"\p{N}{1,3}",
        r"[一-龥぀-ゟ゠-ヿ]+",
        r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
    ],
    nfc: false,
    ignore_merges: false,
    default_add_bos: false,
};

// Code points that Unicode normalisation would rewrite (Greek oxia forms, the Ohm and
// Kelvin signs) are written as escapes so the class survives any NFC-normalising editor.
const DEEPSEEK_LLM: PreConfig = PreConfig {
    family: "deepseek-llm",
    regexes: &[
        r"[\r\n]",
        r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌ\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
        r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
        r"\s+$",
        r"[一-龥ࠀ-一가-퟿]+",
        r"\p{N}+",
    ],
    nfc: false,
    ignore_merges: false,
    default_add_bos: false,
};

const DEEPSEEK_CODER: PreConfig = PreConfig {
    family: "deepseek-coder",
    regexes: &[
        r"[\r\n]",
        r"\s?\p{L}+",
        r"\s?\p{P}+",
        r"[一-龥ࠀ-一가-퟿]+",
        r"\p{N}",
    ],
    nfc: false,
    ignore_merges: false,
    default_add_bos: false,
};

/// OpenAI's o200k split (GPT-OSS, Llama 4, MiniMax-M2 vocabularies).
const GPT4O: PreConfig = PreConfig {
    family: "gpt-4o",
    regexes: &[
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ],
    nfc: false,
    ignore_merges: false,
    default_add_bos: false,
};

/// GLM-4 / GLM-4.5: Llama-3's split without its tiktoken merge shortcut (llama.cpp).
const GLM4: PreConfig = PreConfig {
    family: "glm4",
    regexes: &[LLAMA3_REGEX],
    nfc: false,
    ignore_merges: false,
    default_add_bos: false,
};

/// Every accepted `tokenizer.ggml.pre` value and what it selects.
const TABLE: &[(&str, PreConfig)] = &[
    ("gpt-2", GPT2),
    ("phi-2", GPT2),
    ("mpt", GPT2),
    ("olmo", GPT2),
    ("llama3", LLAMA3),
    ("llama-v3", LLAMA3),
    ("llama-bpe", LLAMA3),
    // Llama-3-derived vocabularies whose tokenizer.json hash llama.cpp files under
    // other names (the Llama-3 tokenizer in tests/data is labelled "smaug-bpe").
    ("smaug-bpe", LLAMA3_DERIVED),
    ("dbrx", LLAMA3_DERIVED),
    ("qwen2", QWEN2),
    // DeepSeek-R1 distills of Qwen2.5 keep Qwen's tokenizer.json.
    ("deepseek-r1-qwen", QWEN2),
    ("deepseek-v3", DEEPSEEK_V3),
    // The DeepSeek-V3 vocabulary without a BOS in its hash sample: same regexes.
    ("joyai-llm", DEEPSEEK_V3),
    ("deepseek-llm", DEEPSEEK_LLM),
    ("deepseek-coder", DEEPSEEK_CODER),
    // The following follow llama.cpp's tables; no reference vocabulary for them is in
    // tests/data, so only "the regex compiles and round-trips" is tested.
    ("gpt-4o", GPT4O),
    ("llama4", GPT4O),
    ("minimax-m2", GPT4O),
    ("glm4", GLM4),
    ("chatglm-bpe", GLM4),
];

/// The configuration for a `tokenizer.ggml.pre` value, with the value as a static str.
pub(crate) fn lookup(pre: &str) -> Option<(&'static str, PreConfig)> {
    TABLE.iter().find(|(name, _)| *name == pre).copied()
}

pub(crate) fn supported_names() -> String {
    TABLE
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}
