//! Structured output, log-probabilities and logit_bias with the official `openai` and
//! `ollama` Python packages against a real `ferromoe serve` (tests/python/
//! structured_client.py): on the tiny MoE model (random weights: bounded schemas and
//! grammars, the numbers against `ferromoe logits`) and on the demo model (a real chat
//! model writing JSON under a schema, json_object and Ollama `format: "json"`).

mod server_common;

use server_common::Server;

#[test]
fn structured_output_logprobs_and_logit_bias_on_the_tiny_moe_model() {
    // Two slots: constrained and unconstrained requests share the batches.
    let server = Server::start(&["--max-seqs", "2", "--ctx", "512"]);
    let out = server.python("structured_client.py", &[]);
    assert!(
        out.contains("structured client: all checks passed"),
        "{out}"
    );
}

#[test]
fn structured_output_logprobs_and_logit_bias_on_the_demo_model() {
    let model = testutil::demo_model();
    let server = Server::start_with(&model, &["--max-seqs", "2", "--ctx", "1024"]);
    let out = server.python(
        "structured_client.py",
        &["--model-file", model.to_str().unwrap(), "--demo"],
    );
    assert!(
        out.contains("structured client: all checks passed"),
        "{out}"
    );
}
