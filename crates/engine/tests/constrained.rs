//! Constrained decoding, logit bias and log-probabilities in the generation state
//! machine, driven with made-up logits over the tiny models' real 1000-token vocabulary:
//! the grammar's mask is applied before sampling (greedy and sampled), the output
//! matches the grammar, end-of-generation comes only once the grammar is complete.

use engine::{
    ConstraintCompiler, ConstraintSpec, FinishReason, GenerateRequest, Generation, SamplingParams,
    Step, Tokenizer,
};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn tokenizer() -> Tokenizer {
    let path = testutil::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
    let file = gguf::Gguf::open(&path).unwrap();
    Tokenizer::from_gguf(file.metadata()).unwrap()
}

fn request(
    spec: Option<&ConstraintSpec>,
    c: &ConstraintCompiler,
    sampling: SamplingParams,
) -> GenerateRequest {
    GenerateRequest {
        max_new_tokens: 300,
        sampling,
        constraint: spec.map(|s| c.compile(s).unwrap()),
        ..Default::default()
    }
}

/// Runs `gen` on logits from `logits(step)`; returns the text, the tokens and the reason.
fn run(
    gen: &mut Generation,
    mut logits: impl FnMut(usize) -> Vec<f32>,
) -> (String, Vec<u32>, FinishReason) {
    let (mut text, mut history) = (String::new(), vec![]);
    for i in 0..1000 {
        let step = gen.step(&logits(i), &history, 1000);
        text += gen.text();
        match step {
            Step::Next(t) => history.push(t),
            Step::Finished(reason) => {
                text += gen.finish(reason);
                return (text, history, reason);
            }
        }
    }
    panic!("no end after 1000 steps: {text:?}")
}

/// Logits that favour end-of-generation most, then `{`-free junk: the grammar alone makes
/// the output JSON.
fn eos_loving(tok: &Tokenizer, seed: u64) -> impl FnMut(usize) -> Vec<f32> {
    let eos = tok.eos_id().unwrap() as usize;
    let n = tok.vocab_size();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    move |_| {
        let mut l: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 4.0).collect();
        l[eos] = 50.0;
        l
    }
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "n": {"type": "integer", "minimum": 0, "maximum": 99},
            "ok": {"type": "boolean"}
        },
        "required": ["color", "n", "ok"],
        "additionalProperties": false
    })
}

fn check_schema_output(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let o = v.as_object().unwrap();
    assert_eq!(o.len(), 3, "{text}");
    assert!(
        ["red", "green", "blue"].contains(&o["color"].as_str().unwrap()),
        "{text}"
    );
    assert!((0..=99).contains(&o["n"].as_i64().unwrap()), "{text}");
    assert!(o["ok"].is_boolean(), "{text}");
}

#[test]
fn schema_output_is_valid_and_eos_comes_only_when_complete_greedy_and_sampled() {
    let tok = tokenizer();
    let c = ConstraintCompiler::new(&tok).unwrap();
    let spec = ConstraintSpec::JsonSchema(schema());
    // Greedy: end-of-generation is the favourite at every step, yet comes only at the end.
    let mut gen = Generation::new(
        &tok,
        &request(Some(&spec), &c, SamplingParams::greedy()),
        false,
    );
    let (text, ids, reason) = run(&mut gen, eos_loving(&tok, 1));
    assert_eq!(reason, FinishReason::Stop);
    check_schema_output(&text);
    assert!(!ids.iter().any(|&t| tok.is_eog(t)));
    assert_eq!(gen.constraint_error(), None);
    // Without the constraint the same logits end at once.
    let mut free = Generation::new(&tok, &request(None, &c, SamplingParams::greedy()), false);
    let (text, ids, _) = run(&mut free, eos_loving(&tok, 1));
    assert_eq!((text.as_str(), ids.len()), ("", 0));
    // Sampled, with flat-ish random logits and several seeds.
    for seed in 0..4 {
        let sampling = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..Default::default()
        };
        let mut gen = Generation::new(&tok, &request(Some(&spec), &c, sampling), false);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 100);
        let n = tok.vocab_size();
        let (text, _, reason) = run(&mut gen, |_| (0..n).map(|_| rng.random::<f32>()).collect());
        assert_eq!(reason, FinishReason::Stop, "{text}");
        check_schema_output(&text);
    }
}

#[test]
fn json_object_lark_gbnf_and_regex_are_honoured() {
    let tok = tokenizer();
    let c = ConstraintCompiler::new(&tok).unwrap();
    let greedy = || SamplingParams::greedy();
    let out = |spec: ConstraintSpec, seed: u64| {
        let mut gen = Generation::new(&tok, &request(Some(&spec), &c, greedy()), false);
        run(&mut gen, eos_loving(&tok, seed))
    };
    // Any object: random junk would fill a string forever, so `}` is the favourite
    // after end-of-generation.
    let close = tok.encode("}", false).unwrap()[0] as usize;
    let mut base = eos_loving(&tok, 3);
    let mut gen = Generation::new(
        &tok,
        &request(Some(&ConstraintSpec::JsonObject), &c, greedy()),
        false,
    );
    let (text, _, reason) = run(&mut gen, |i| {
        let mut l = base(i);
        l[close] = 45.0;
        l
    });
    assert_eq!(reason, FinishReason::Stop);
    assert!(
        serde_json::from_str::<Value>(&text).unwrap().is_object(),
        "{text}"
    );

    let lark = "start: \"answer: \" (\"yes\" | \"no\")";
    let (text, _, reason) = out(ConstraintSpec::grammar(lark), 4);
    assert!(text == "answer: yes" || text == "answer: no", "{text}");
    assert_eq!(reason, FinishReason::Stop);

    let gbnf = "root ::= digit{3} \"-\" word\ndigit ::= [0-9]\nword ::= [a-z]{2,4}";
    assert!(matches!(
        ConstraintSpec::grammar(gbnf),
        ConstraintSpec::Gbnf(_)
    ));
    let (text, _, _) = out(ConstraintSpec::grammar(gbnf), 5);
    let (digits, word) = text.split_once('-').unwrap_or_else(|| panic!("{text:?}"));
    assert!(
        digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()),
        "{text}"
    );
    assert!(
        (2..=4).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_lowercase()),
        "{text}"
    );

    let (text, _, _) = out(ConstraintSpec::Regex("[A-C]{2}x".into()), 6);
    assert!(text.len() == 3 && text.ends_with('x'), "{text}");
}

#[test]
fn invalid_schemas_and_grammars_are_input_errors_with_the_library_message() {
    let tok = tokenizer();
    let c = ConstraintCompiler::new(&tok).unwrap();
    for spec in [
        ConstraintSpec::JsonSchema(json!({"type": "no-such-type"})),
        ConstraintSpec::JsonSchema(json!([1, 2])),
        ConstraintSpec::Lark("start: undefined_rule".into()),
        ConstraintSpec::Gbnf("root ::= \"a".into()),
        ConstraintSpec::Regex("(".into()),
    ] {
        let e = c.compile(&spec).unwrap_err();
        assert!(e.is_input(), "{spec:?}: {e}");
        assert!(e.to_string().starts_with("invalid grammar: "), "{e}");
    }
}

#[test]
fn logit_bias_bans_and_forces_tokens() {
    let tok = tokenizer();
    let c = ConstraintCompiler::new(&tok).unwrap();
    let n = tok.vocab_size();
    let flat = |_| {
        let mut l = vec![0.0f32; n];
        l[7] = 5.0;
        l
    };
    let mut req = request(None, &c, SamplingParams::greedy());
    req.max_new_tokens = 5;
    req.logit_bias = vec![(7, -100.0)];
    let (_, ids, _) = run(&mut Generation::new(&tok, &req, false), flat);
    assert!(!ids.contains(&7) && !ids.is_empty(), "{ids:?}");
    req.logit_bias = vec![(42, 100.0)];
    req.sampling = SamplingParams {
        temperature: 1.5,
        seed: 3,
        ..Default::default()
    };
    let (_, ids, _) = run(&mut Generation::new(&tok, &req, false), flat);
    assert!(ids.len() == 4 && ids.iter().all(|&t| t == 42), "{ids:?}");
}

#[test]
fn logprobs_are_the_log_softmax_of_the_raw_logits() {
    let tok = tokenizer();
    let c = ConstraintCompiler::new(&tok).unwrap();
    let n = tok.vocab_size();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let logits: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 10.0 - 5.0).collect();
    // A grammar and a bias change what is sampled, not the reported distribution.
    let mut req = request(
        Some(&ConstraintSpec::Regex("[0-9]+".into())),
        &c,
        SamplingParams::greedy(),
    );
    req.logprobs = Some(5);
    req.logit_bias = vec![(3, 2.0)];
    let mut gen = Generation::new(&tok, &req, false);
    let step = gen.step(&logits, &[], 100);
    let Step::Next(t) = step else {
        panic!("{step:?}")
    };
    assert!(tok.decode(&[t], false).bytes().all(|b| b.is_ascii_digit()));
    let lp = gen.token_logprobs().unwrap().clone();
    let max = logits.iter().copied().fold(f32::MIN, f32::max) as f64;
    let z = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    assert_eq!(lp.token, t);
    assert!((lp.logprob as f64 - (logits[t as usize] as f64 - z)).abs() < 1e-5);
    assert_eq!(lp.top.len(), 5);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    for (k, &(id, l)) in lp.top.iter().enumerate() {
        assert_eq!(id, order[k]);
        assert!((l as f64 - (logits[id as usize] as f64 - z)).abs() < 1e-5);
    }
    // None asked for: none recorded.
    let mut gen = Generation::new(&tok, &request(None, &c, SamplingParams::greedy()), false);
    gen.step(&logits, &[], 100);
    assert!(gen.token_logprobs().is_none());
    let bad = GenerateRequest {
        logprobs: Some(21),
        ..Default::default()
    };
    assert!(bad.validate().is_err());
}

/// In the scheduler, a constrained sequence batched with unconstrained ones: its output
/// validates, theirs is what they write alone, and log-probabilities reach the token sink
/// one per generated token.
#[test]
fn constrained_and_free_sequences_share_a_batch() {
    use engine::scheduler::{Event, Job, Scheduler, SchedulerConfig};
    use engine::{Engine, LoadOptions};
    use std::sync::{mpsc, Arc, Mutex};

    let path = testutil::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
    let opts = LoadOptions {
        threads: Some(2),
        ..Default::default()
    };
    let engine = Arc::new(Engine::load(&path, &opts, &mut |_| {}).unwrap());
    let tok = engine.tokenizer.clone().unwrap();
    let prompt = tok.encode("Pick a color:", false).unwrap();
    let free = |n| GenerateRequest {
        max_new_tokens: n,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        ..Default::default()
    };
    let mut alone = engine.sequence(256).unwrap();
    let mut want = String::new();
    engine
        .generate(&mut alone, &prompt, &free(24), &mut |t| {
            want += t;
            true
        })
        .unwrap();

    let sched = Scheduler::start(engine.clone(), SchedulerConfig::new(3, 256));
    let constrained = GenerateRequest {
        constraint: Some(
            engine
                .compile_constraint(&ConstraintSpec::JsonSchema(schema()))
                .unwrap(),
        ),
        logprobs: Some(2),
        ..free(100)
    };
    let submit = |req: GenerateRequest, lps: Option<Arc<Mutex<Vec<engine::TokenLogprobs>>>>| {
        let (tx, rx) = mpsc::channel();
        let mut job = Job::new(prompt.clone(), req, move |ev| {
            tx.send(ev.into_owned()).is_ok()
        });
        if let Some(l) = lps {
            job = job.with_token_sink(move |lp| l.lock().unwrap().push(lp.clone()));
        }
        (sched.submit(job).unwrap(), rx)
    };
    let collect = |rx: mpsc::Receiver<Event>| {
        let mut text = String::new();
        for ev in rx {
            match ev {
                Event::Text(t) => text += &t,
                Event::Done(stats) => return (text, stats),
                Event::Error(e) => panic!("{e}"),
                Event::Started { .. } => {}
            }
        }
        panic!("no Done")
    };
    let lps = Arc::new(Mutex::new(Vec::new()));
    let (_t1, rx1) = submit(free(24), None);
    let (_t2, rx2) = submit(constrained, Some(lps.clone()));
    let (_t3, rx3) = submit(free(24), None);
    let (a, _) = collect(rx1);
    let (json_text, stats) = collect(rx2);
    let (b, _) = collect(rx3);
    assert_eq!((a.as_str(), b.as_str()), (want.as_str(), want.as_str()));
    check_schema_output(&json_text);
    assert_eq!(stats.finish, FinishReason::Stop);
    assert!(stats.grammar_seconds > 0.0);
    let lps = lps.lock().unwrap();
    // Every generated token but the end-of-generation one the grammar allowed at the end
    // (or none, when the grammar ended by itself).
    assert!(
        lps.len() == stats.generated_tokens || lps.len() + 1 == stats.generated_tokens,
        "{} entries for {} tokens",
        lps.len(),
        stats.generated_tokens
    );
    assert!(lps
        .iter()
        .all(|e| e.top.len() == 2 && e.top[0].1 >= e.top[1].1));
    assert_eq!(
        tok.decode(&lps.iter().map(|e| e.token).collect::<Vec<_>>(), false),
        json_text
    );
}
