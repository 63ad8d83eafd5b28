//! Error handling, streaming edge cases and chat-template features, on small synthetic
//! vocabularies and the shipped tokenizers.

mod common;

use gguf::{Array, Metadata, Value};
use text::{ChatMessage, ChatTemplate, TextError, Tokenizer};

fn strings(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
}

/// A byte-level vocabulary: the 256 byte tokens, a couple of merges, two specials.
fn tiny_bpe(pre: &str) -> Metadata {
    let alphabet: Vec<String> = {
        // GPT-2 byte alphabet, in byte order.
        let mut extra = 256u32;
        (0..=255u8)
            .map(|b| {
                if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
                    char::from(b).to_string()
                } else {
                    let c = char::from_u32(extra).unwrap();
                    extra += 1;
                    c.to_string()
                }
            })
            .collect()
    };
    let mut tokens = alphabet;
    tokens.extend(["he", "hel", "hell", "hello", "Ġw", "<|end|>", "<|user|>"].map(String::from));
    let n = tokens.len();
    let mut types = vec![1i32; n];
    types[n - 2] = 3;
    types[n - 1] = 3;
    let mut m = Metadata::new("synthetic.gguf");
    m.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    m.set("tokenizer.ggml.pre", Value::String(pre.into()));
    m.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    m.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    m.set(
        "tokenizer.ggml.merges",
        strings(&["h e", "he l", "hel l", "hell o", "Ġ w"]),
    );
    m.set("tokenizer.ggml.eos_token_id", Value::U32(n as u32 - 2));
    m
}

fn byte_id(b: u8) -> u32 {
    b as u32 // the synthetic vocabulary starts with the 256 byte tokens in byte order
}

#[test]
fn synthetic_bpe_encodes_and_decodes() {
    let tok = Tokenizer::from_gguf(&tiny_bpe("gpt-2")).unwrap();
    let ids = tok.encode("hello world<|user|>", true).unwrap();
    let n = tok.vocab_size() as u32;
    // "hello" merged; " w" merged; "orld" as bytes; the special token whole.
    assert_eq!(
        ids,
        vec![
            259,
            260,
            byte_id(b'o'),
            byte_id(b'r'),
            byte_id(b'l'),
            byte_id(b'd'),
            n - 1
        ]
    );
    assert_eq!(tok.decode(&ids, false), "hello world<|user|>");
    assert_eq!(tok.decode(&ids, true), "hello world");
    assert_eq!(tok.token_to_piece(260), b" w");
    assert_eq!(tok.token_to_piece(n), b"", "out of range");
    assert_eq!(tok.eos_id(), Some(n - 2));
    assert_eq!(
        tok.eot_id(),
        Some(n - 2),
        "<|end|> is recognised as end of turn"
    );
    assert!(tok.is_eog(n - 2) && !tok.is_eog(n - 1));
}

#[test]
fn harmony_end_of_message_is_not_an_end_of_generation() {
    // gpt-oss: <|end|> closes the reasoning message; <|return|> and <|call|> end the reply.
    let mut m = tiny_bpe("gpt-2");
    let mut tokens: Vec<String> = m
        .opt_str_array("tokenizer.ggml.tokens")
        .unwrap()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let n = tokens.len() as u32;
    tokens.extend(["<|return|>", "<|call|>"].map(String::from));
    let mut types = vec![1i32; tokens.len()];
    for t in &mut types[n as usize - 2..] {
        *t = 3;
    }
    m.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    m.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    m.set("tokenizer.ggml.eos_token_id", Value::U32(n));
    let tok = Tokenizer::from_gguf(&m).unwrap();
    let end = tok.token_id("<|end|>").unwrap();
    assert!(!tok.is_eog(end), "<|end|> must not end a harmony reply");
    assert!(
        tok.is_eog(n) && tok.is_eog(n + 1),
        "<|return|> and <|call|> do"
    );
    // Without them, <|end|> ends generation as before.
    assert!(Tokenizer::from_gguf(&tiny_bpe("gpt-2"))
        .unwrap()
        .is_eog(end));
}

#[test]
fn unsupported_model_and_pre_are_errors_listing_the_supported_ones() {
    let mut m = tiny_bpe("gpt-2");
    m.set("tokenizer.ggml.model", Value::String("bert".into()));
    let e = Tokenizer::from_gguf(&m).unwrap_err();
    assert!(matches!(e, TextError::UnsupportedModel { .. }));
    assert!(
        e.to_string().contains("\"bert\"")
            && e.to_string().contains("gpt2")
            && e.to_string().contains("llama"),
        "{e}"
    );

    let e = Tokenizer::from_gguf(&tiny_bpe("falcon")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TextError::UnsupportedPre { .. }));
    for name in [
        "\"falcon\"",
        "deepseek-v3",
        "deepseek-llm",
        "qwen2",
        "llama-bpe",
        "gpt-2",
        "deepseek-r1-qwen",
        "joyai-llm",
    ] {
        assert!(msg.contains(name), "{msg} lacks {name}");
    }

    let mut m = tiny_bpe("gpt-2");
    m.remove("tokenizer.ggml.pre");
    assert!(
        matches!(
            Tokenizer::from_gguf(&m),
            Err(TextError::UnsupportedPre { .. })
        ),
        "no pre is not guessed"
    );
}

#[test]
fn every_supported_pre_name_builds() {
    for pre in [
        "gpt-2",
        "phi-2",
        "mpt",
        "olmo",
        "llama3",
        "llama-v3",
        "llama-bpe",
        "smaug-bpe",
        "dbrx",
        "qwen2",
        "deepseek-r1-qwen",
        "deepseek-v3",
        "joyai-llm",
        "deepseek-llm",
        "deepseek-coder",
        "gpt-4o",
        "llama4",
        "minimax-m2",
        "glm4",
        "chatglm-bpe",
    ] {
        let mut m = tiny_bpe(pre);
        // Llama-3 names default to adding BOS, which needs an id.
        m.set("tokenizer.ggml.bos_token_id", Value::U32(b'h' as u32));
        let tok = Tokenizer::from_gguf(&m).unwrap_or_else(|e| panic!("{pre}: {e}"));
        assert_eq!(tok.pre(), Some(pre));
        let ids = tok.encode("hello world 123 ü 你好\r\n", false).unwrap();
        assert_eq!(
            tok.decode(&ids, false),
            "hello world 123 ü 你好\r\n",
            "{pre}"
        );
    }
}

#[test]
fn inconsistent_vocabularies_are_errors() {
    let mut m = tiny_bpe("gpt-2");
    m.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1; 3])),
    );
    let e = Tokenizer::from_gguf(&m).unwrap_err();
    assert!(
        e.to_string().contains("synthetic.gguf")
            && e.to_string().contains("token_type has 3 entries"),
        "{e}"
    );

    let mut m = tiny_bpe("gpt-2");
    m.set("tokenizer.ggml.bos_token_id", Value::U32(100_000));
    let e = Tokenizer::from_gguf(&m).unwrap_err();
    assert!(
        e.to_string()
            .contains("bos_token_id = 100000 is outside the vocabulary"),
        "{e}"
    );

    let mut m = tiny_bpe("gpt-2");
    m.set("tokenizer.ggml.merges", strings(&["h e", "x yz"]));
    let e = Tokenizer::from_gguf(&m).unwrap_err();
    assert!(
        e.to_string().contains("merge 1 \"x yz\" uses \"yz\""),
        "{e}"
    );

    let mut m = tiny_bpe("gpt-2");
    m.set("tokenizer.ggml.merges", strings(&["hello"]));
    let e = Tokenizer::from_gguf(&m).unwrap_err();
    assert!(e.to_string().contains("no space"), "{e}");

    let mut m = tiny_bpe("gpt-2");
    m.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    assert!(matches!(
        Tokenizer::from_gguf(&m),
        Err(TextError::MissingSpecial { which: "BOS" })
    ));

    let mut m = tiny_bpe("gpt-2");
    m.set(
        "tokenizer.ggml.tokens",
        Value::String("not an array".into()),
    );
    assert!(matches!(
        Tokenizer::from_gguf(&m),
        Err(TextError::Metadata(_))
    ));

    let mut m = tiny_bpe("gpt-2");
    m.set("tokenizer.ggml.model", Value::String("llama".into()));
    let e = Tokenizer::from_gguf(&m).unwrap_err();
    assert!(e.to_string().contains("needs tokenizer.ggml.scores"), "{e}");
}

#[test]
fn stream_holds_back_incomplete_characters() {
    let tok = Tokenizer::from_gguf(&tiny_bpe("gpt-2")).unwrap();
    let llama = "🦙".as_bytes(); // F0 9F A6 99
    let mut st = tok.stream_decoder(false);
    assert_eq!(st.push(byte_id(b'a')), "a");
    for &b in &llama[..3] {
        assert_eq!(st.push(byte_id(b)), "", "no half characters");
    }
    assert_eq!(st.pending_bytes(), 3);
    assert_eq!(st.push(byte_id(llama[3])), "🦙");
    assert_eq!(st.pending_bytes(), 0);

    // A byte that can never start a character is replaced at once; a truncated
    // sequence followed by ASCII is replaced when the ASCII arrives.
    assert_eq!(st.push(byte_id(0xFF)), "\u{FFFD}");
    assert_eq!(st.push(byte_id(0xE4)), "");
    assert_eq!(st.push(byte_id(b'x')), "\u{FFFD}x");
    // flush gives back a dangling prefix as U+FFFD.
    assert_eq!(st.push(byte_id(0xE4)), "");
    assert_eq!(st.push(byte_id(0xBD)), "");
    assert_eq!(st.flush(), "\u{FFFD}");
    assert_eq!(st.flush(), "");

    // The concatenation equals decode() on the same ids, for arbitrary byte soup.
    let soup: Vec<u32> = [
        0xF0u8, 0x9F, 0xA6, b'a', 0xC3, 0xA9, 0xE4, 0xBD, 0xA0, 0x80, 0xF4, 0x90, 0x80, 0x80, 0xED,
        0xA0, 0x80, b'z', 0xF0,
    ]
    .iter()
    .map(|&b| byte_id(b))
    .collect();
    let mut st = tok.stream_decoder(false);
    let out: String = soup.iter().map(|&id| st.push(id)).collect::<String>() + &st.flush();
    assert_eq!(out, tok.decode(&soup, false));
}

#[test]
fn sentencepiece_stream_leading_space_and_byte_fallback() {
    let file = common::load_vocab_gguf("mixtral");
    let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
    let ids = tok.encode("Hello 🦙 world", true).unwrap();
    assert_eq!(ids[0], 1, "BOS");
    // The llama emoji is not in the vocabulary: four <0xXX> byte tokens.
    let bytes: Vec<&str> = ids
        .iter()
        .map(|&i| tok.token_text(i).unwrap())
        .filter(|t| t.starts_with("<0x"))
        .collect();
    assert_eq!(bytes, ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]);

    let mut st = tok.stream_decoder(true);
    let pieces: Vec<String> = ids.iter().map(|&id| st.push(id)).collect();
    assert_eq!(pieces.concat() + &st.flush(), "Hello 🦙 world");
    assert_eq!(
        pieces[1], "Hello",
        "the space prefix of the first word is dropped"
    );
    assert!(pieces
        .iter()
        .all(|p| p.is_empty() || p.chars().all(|c| c != '\u{FFFD}')));

    // Continuing a prompt: the first token keeps its space.
    let answer = tok.encode("Paris", false).unwrap();
    let mut st = tok.stream_decoder(true).keep_leading_space();
    assert_eq!(st.push_all(&answer) + &st.flush(), " Paris");
    assert_eq!(tok.decode(&answer, true), "Paris");
}

#[test]
fn chat_template_features() {
    let msgs = [
        ChatMessage::system("  Be brief.  "),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello"),
    ];
    let t = ChatTemplate::new(
        "{%- for m in messages %}{% if m.role == 'assistant' %}{% break %}{% endif %}\
         [{{ m.role | upper }}:{{ m.content.strip() }}:{{ m.content.startswith('H') }}]{% endfor %}\
         {{ messages[1] | tojson }}{{ {'a': [1, 2.0, none, true], 'b': 'x\"\\n é'} | tojson }}\
         {{ tools is none }}{{ strftime_now('%Y') | length }}{{ bos_token }}{{ eos_token }}",
        "<s>",
        "</s>",
    )
    .unwrap();
    let out = t.render(&msgs, false).unwrap();
    assert_eq!(
        out,
        "[SYSTEM:Be brief.:False][USER:Hi:True]{\"role\": \"user\", \"content\": \"Hi\"}\
         {\"a\": [1, 2.0, null, true], \"b\": \"x\\\"\\n é\"}True4<s></s>"
    );

    let indented =
        ChatTemplate::new("{{ {'k': [1, {'z': 2}]} | tojson(indent=2) }}", "", "").unwrap();
    assert_eq!(
        indented.render(&[], false).unwrap(),
        "{\n  \"k\": [\n    1,\n    {\n      \"z\": 2\n    }\n  ]\n}"
    );

    // trim_blocks + lstrip_blocks, as transformers configures Jinja.
    let blocks = ChatTemplate::new("{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}\n", "", "").unwrap();
    assert_eq!(blocks.render(&msgs[1..], false).unwrap(), "Hi\nHello\n");

    let e = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "")
        .unwrap()
        .render(&msgs, false)
        .unwrap_err();
    assert!(e.to_string().contains("no system role"), "{e}");
    let e = ChatTemplate::new("{% if %}", "", "").unwrap_err();
    assert!(matches!(e, TextError::Template(_)), "{e}");
}
