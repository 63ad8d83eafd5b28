//! The 1000-token byte-level BPE shared by the tiny models: every tiny GGUF's tokenizer
//! against HF `tokenizers` running the original tokenizer.json.

mod common;

use common::{data_dir, load_reference};
use text::{ChatMessage, ChatTemplate, Tokenizer};

fn tiny_ggufs() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for model in std::fs::read_dir(data_dir().join("tiny")).unwrap() {
        let dir = model.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "gguf") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every reference string of the real tokenizers plus some extra cases.
fn sample_texts() -> Vec<String> {
    let mut texts: Vec<String> = ["deepseek-v3", "qwen2.5", "llama3", "mixtral"]
        .iter()
        .flat_map(|n| load_reference(n).strings.into_iter().map(|s| s.text))
        .collect();
    texts.extend(
        [
            "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n",
            "<|bos|>The GNU General Public License is a free, copyleft license<|eos|>",
            "<|im_start|><|im_start|>x<|im_end|",
            "Permission is hereby granted, free of charge, to any person obtaining a copy",
        ]
        .map(String::from),
    );
    texts
}

#[test]
fn matches_hf_tokenizer_json_on_every_tiny_gguf() {
    let hf =
        tokenizers::Tokenizer::from_file(data_dir().join("tiny/tokenizer/tokenizer.json")).unwrap();
    let texts = sample_texts();
    let files = tiny_ggufs();
    assert!(files.len() >= 12, "tiny GGUFs found: {files:?}");
    for path in &files {
        let file = gguf::Gguf::open(path).unwrap();
        let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
        assert_eq!(tok.vocab_size(), 1000);
        assert_eq!(tok.pre(), Some("gpt-2"));
        assert_eq!((tok.bos_id(), tok.eos_id()), (Some(0), Some(1)));
        assert!(!tok.add_bos());
        assert_eq!(tok.eog_ids(), &[1, 3], "<|eos|> and <|im_end|>");
        for text in &texts {
            let want = hf.encode(text.as_str(), true).unwrap().get_ids().to_vec();
            let got = tok.encode(text, true).unwrap();
            assert_eq!(got, want, "{}: {text:?}", path.display());
            for skip in [false, true] {
                assert_eq!(
                    tok.decode(&got, skip),
                    hf.decode(&got, skip).unwrap(),
                    "{}: decode {text:?}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn chat_template_and_prompts() {
    let file =
        gguf::Gguf::open(data_dir().join("tiny/qwen3moe-tiny/qwen3moe-tiny-Q8_0.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
    let tmpl = ChatTemplate::from_gguf(file.metadata()).unwrap();
    assert_eq!((tmpl.bos_token(), tmpl.eos_token()), ("<|bos|>", "<|eos|>"));
    let msgs = [
        ChatMessage::system("Be brief."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
        ChatMessage::user("Bye"),
    ];
    let rendered = tmpl.render(&msgs, true).unwrap();
    let want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(rendered, want);
    // The built-in fallback is the same ChatML.
    let fallback = ChatTemplate::chatml("<|bos|>", "<|eos|>");
    assert!(fallback.is_fallback());
    assert_eq!(fallback.render(&msgs, true).unwrap(), want);
    assert_eq!(
        tmpl.render(&msgs, false).unwrap(),
        want.strip_suffix("<|im_start|>assistant\n").unwrap()
    );

    let ids = tok.encode(&rendered, false).unwrap();
    assert_eq!(
        ids.iter().filter(|&&i| i == 2).count(),
        5,
        "<|im_start|> x5"
    );
    assert_eq!(ids.iter().filter(|&&i| i == 3).count(), 4, "<|im_end|> x4");
    assert_eq!(tok.decode(&ids, false), rendered);

    // The reference prompts are ids; they decode and re-encode to themselves.
    let prompts: Vec<Vec<u32>> = serde_json::from_str(
        &std::fs::read_to_string(data_dir().join("tiny/tokenizer/prompts.json")).unwrap(),
    )
    .unwrap();
    let hf =
        tokenizers::Tokenizer::from_file(data_dir().join("tiny/tokenizer/tokenizer.json")).unwrap();
    for p in &prompts {
        let text = tok.decode(p, false);
        assert_eq!(text, hf.decode(p, false).unwrap());
        let mut stream = tok.stream_decoder(false);
        let streamed: String =
            p.iter().map(|&id| stream.push(id)).collect::<String>() + &stream.flush();
        assert_eq!(streamed, text);
    }
}
