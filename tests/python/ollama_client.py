"""Ollama's API with `requests` against `ferromoe serve`: /api/version, /api/tags,
/api/show, /api/generate and /api/chat, streamed (NDJSON, the default) and not."""
import json

import requests

from common import args, chatml, check, tokenize

a = args()
B = a.base
H = {"Authorization": f"Bearer {a.api_key}"}

v = requests.get(B + "/api/version", headers=H, timeout=30)
check(v.status_code == 200 and isinstance(v.json()["version"], str), f"/api/version: {v.text}")

t = requests.get(B + "/api/tags", headers=H, timeout=30).json()
m = t["models"][0]
check(m["name"] == a.model + ":latest" and m["details"]["format"] == "gguf" and m["size"] > 0, f"/api/tags: {m}")
check(m["details"]["family"] == "qwen2moe" and m["details"]["quantization_level"] == "Q8_0", "tags details")

ps = requests.get(B + "/api/ps", headers=H, timeout=30).json()
check([m["name"] for m in ps["models"]] == [a.model + ":latest"], f"/api/ps lists the loaded model: {ps}")

s = requests.post(B + "/api/show", json={"model": a.model}, headers=H, timeout=30)
j = s.json()
check(s.status_code == 200 and j["model_info"]["general.architecture"] == "qwen2moe" and "im_start" in j["template"], "/api/show")
s = requests.post(B + "/api/show", json={"model": "nope"}, headers=H, timeout=30)
check(s.status_code == 404 and "error" in s.json(), f"/api/show unknown model → 404: {s.text}")


def stream_lines(path, body):
    r = requests.post(B + path, json=body, headers=H, stream=True, timeout=60)
    check(r.status_code == 200, f"{path} streamed → 200")
    check(r.headers["content-type"].startswith("application/x-ndjson"), f"{path} content type {r.headers['content-type']}")
    return [json.loads(line) for line in r.iter_lines() if line]


opts = {"temperature": 0, "num_predict": 8}
# /api/generate: the prompt is one user turn of the chat template (not raw).
lines = stream_lines("/api/generate", {"model": a.model, "prompt": "Why is the sky blue?", "options": opts})
check(len(lines) >= 3 and all(not x["done"] for x in lines[:-1]) and lines[-1]["done"], f"generate NDJSON: {len(lines)} lines")
last = lines[-1]
streamed = "".join(x["response"] for x in lines)
check(last["done_reason"] in ("stop", "length") and last["eval_count"] <= 8 and last["eval_count"] >= 1, f"final line: {last}")
check(last["prompt_eval_count"] == len(tokenize(a, chatml([{"role": "user", "content": "Why is the sky blue?"}]))), "generate prompt_eval_count")
check(all(k in last for k in ("total_duration", "prompt_eval_duration", "eval_duration", "created_at", "model")), "final counters")
r = requests.post(B + "/api/generate", json={"model": a.model, "prompt": "Why is the sky blue?", "options": opts, "stream": False}, headers=H, timeout=60)
j = r.json()
check(r.status_code == 200 and j["done"] and j["response"] == streamed, f"generate stream:false == streamed: {j['response']!r} vs {streamed!r}")
raw = requests.post(B + "/api/generate", json={"model": a.model, "prompt": "Once upon a time", "raw": True, "options": opts, "stream": False}, headers=H, timeout=60).json()
check(raw["prompt_eval_count"] == len(tokenize(a, "Once upon a time", add_special=True)), "raw generate tokenizes the prompt as is")

# /api/chat
msgs = [{"role": "user", "content": "Hello there"}]
lines = stream_lines("/api/chat", {"model": a.model + ":latest", "messages": msgs, "options": opts})
check(all(x["message"]["role"] == "assistant" for x in lines) and lines[-1]["done"], "chat NDJSON lines")
streamed = "".join(x["message"]["content"] for x in lines)
r = requests.post(B + "/api/chat", json={"model": a.model, "messages": msgs, "options": opts, "stream": False}, headers=H, timeout=60).json()
check(r["message"]["content"] == streamed and r["done"] and r["eval_count"] == lines[-1]["eval_count"], "chat stream:false == streamed")
check(r["prompt_eval_count"] == len(tokenize(a, chatml(msgs))), "chat prompt_eval_count")
# Stop strings in options.
if len(streamed) > 3:
    cut = next((i for i in range(1, len(streamed) - 1) if streamed.find(streamed[i]) == i and streamed[i].strip()), None)
    if cut is not None:
        r = requests.post(B + "/api/chat", json={"model": a.model, "messages": msgs, "stream": False,
                                                  "options": dict(opts, stop=[streamed[cut]])}, headers=H, timeout=60).json()
        check(r["message"]["content"] == streamed[:cut] and r["done_reason"] == "stop", f"chat stop string: {r['message']['content']!r}")

# Errors in Ollama's shape.
r = requests.post(B + "/api/chat", json={"model": "nope", "messages": msgs}, headers=H, timeout=30)
check(r.status_code == 404 and isinstance(r.json()["error"], str), f"unknown model → 404 {{'error': ...}}: {r.text}")
r = requests.post(B + "/api/generate", data="{not json", headers=H, timeout=30)
check(r.status_code == 400 and "malformed JSON" in r.json()["error"], f"malformed JSON → 400: {r.text}")
print("ollama client: all checks passed")
