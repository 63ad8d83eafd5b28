//! The prefix cache: the second turn of a conversation reuses the first turn's KV and
//! only processes the new tokens (`usage.prompt_tokens_details.cached_tokens`, the log).

mod server_common;

use serde_json::json;
use server_common::Server;

#[test]
fn second_turn_skips_the_first_turns_prefill() {
    let server = Server::start(&["--max-seqs", "2", "--ctx", "512"]);
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant."}),
        json!({"role": "user", "content": "Tell me a story about a dragon and a knight."}),
    ];
    let r = server.post_json(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 24, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let first = r.json();
    let first_prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        first["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
        "a fresh server has nothing cached"
    );
    let answer = first["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": "And then?"}));
    let r = server.post_json(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.json();
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    // At least the whole first prompt is reused (plus the part of the answer that
    // re-tokenizes to the same ids); only the rest is processed.
    assert!(
        cached >= first_prompt,
        "cached {cached} < first turn's prompt {first_prompt}"
    );
    assert!(
        cached < prompt,
        "cached {cached} must leave the new tokens ({prompt})"
    );
    let line = format!("prefix cache: reused {cached} of {prompt} prompt tokens");
    assert!(
        server.wait_log(&line, std::time::Duration::from_secs(5)),
        "no '{line}' in the log:\n{}",
        server.log()
    );
    let out = second["usage"]["completion_tokens"].as_u64().unwrap();
    let access = format!("POST /v1/chat/completions 200 in={prompt} cached={cached} out={out} ");
    assert!(
        server.wait_log(&access, std::time::Duration::from_secs(5)),
        "no '{access}' in the log:\n{}",
        server.log()
    );
    let health = server.health();
    assert!(health["reused_tokens"].as_u64().unwrap() >= cached);
    println!(
        "second turn: {cached} of {prompt} prompt tokens reused, {} processed",
        prompt - cached
    );
}
