#!/usr/bin/env bash
# Renders the web chat page of `ferromoe serve` in headless Chromium (Debian's
# `chromium` package, driven by playwright-core from npm) against a tiny model: `/?q=...`
# fills the input (and sends nothing), Enter sends it, the page streams the answer from
# /v1/chat/completions and shows tokens/s. Checks the page after the answer, then a
# second turn (prefix cache), a failed turn (not sent again with the next one), and
# writes screenshots.
#
#   scripts/chat_page_check.sh [OUT_DIR]      (default: target/chat-page-check)
#
# Needs: chromium (`apt-get install chromium`), node + npm; builds ferromoe if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="$(mkdir -p "${1:-target/chat-page-check}" && cd "${1:-target/chat-page-check}" && pwd)"
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$CHROMIUM" ]; then
    echo "error: chromium not found (apt-get install chromium)" >&2
    exit 1
fi
TARGET="${CARGO_TARGET_DIR:-target}"
FERROMOE="${FERROMOE:-$TARGET/release/ferromoe}"
if [ ! -x "$FERROMOE" ]; then
    cargo build --release -p ferromoe >&2
fi
if [ ! -d "$OUT/node_modules/playwright-core" ]; then
    (cd "$OUT" && npm install --silent --no-audit --no-fund --no-save playwright-core@1 >/dev/null)
fi
MODEL="$ROOT/tests/data/tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf"
LOG="$OUT/server.log"
"$FERROMOE" serve -m "$MODEL" --port 0 --model-name tiny-qwen2moe --ctx 512 -t 1 2>"$LOG" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "listening on http://" "$LOG" && break
    sleep 0.1
done
BASE="$(grep -o 'http://127.0.0.1:[0-9]*' "$LOG" | head -1)"
[ -n "$BASE" ] || { echo "error: the server did not start:" >&2; cat "$LOG" >&2; exit 1; }

cat >"$OUT/check.js" <<'JS'
const { chromium } = require("playwright-core");
const [base, exe, out] = process.argv.slice(2);
function check(cond, what) { if (!cond) throw new Error("FAIL: " + what); console.log("ok:", what); }
(async () => {
  // Flags that keep Chromium off the (closed) network.
  const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 720 } });
    const external = [];
    page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });
    const chats = [];
    page.on("request", (r) => { if (r.url().endsWith("/v1/chat/completions")) chats.push(r.url()); });
    // `/?q=` fills the input and sends nothing by itself; Enter sends it.
    await page.goto(base + "/?q=" + encodeURIComponent("Tell me about dragons.") + "&max_tokens=48");
    await page.waitForFunction(() => document.getElementById("model").textContent !== "connecting…");
    await page.waitForTimeout(500);
    check(await page.inputValue("#input") === "Tell me about dragons.", "/?q= fills the input");
    check(chats.length === 0, "/?q= sends nothing by itself");
    await page.press("#input", "Enter");
    await page.waitForSelector('body[data-state="done"]', { timeout: 30000 });
    check(await page.textContent("#model") === "tiny-qwen2moe", "the model name from /v1/models is shown");
    const answer = await page.textContent(".msg.assistant .text");
    check(answer.length > 0, "the streamed answer is shown (" + answer.length + " characters)");
    const meta = await page.textContent(".msg.assistant .meta");
    check(/^48 tokens · [0-9.]+ tok\/s/.test(meta), "tokens and tokens/s under the answer: " + meta);
    check(/[0-9.]+ tok\/s/.test(await page.textContent("#stats")), "tokens/s in the header");
    await page.screenshot({ path: out + "/chat-page.png" });
    // Second turn: typed and sent with Enter; the conversation is kept and reused.
    await page.fill("#input", "And then?");
    await page.press("#input", "Enter");
    await page.waitForFunction(() => document.querySelectorAll(".msg.assistant .meta").length === 2
      && document.body.dataset.state === "done", null, { timeout: 30000 });
    check((await page.$$(".msg.user")).length === 2, "two user turns in the conversation");
    const meta2 = (await page.$$eval(".msg.assistant .meta", (m) => m.map((x) => x.textContent)))[1];
    check(/\(([0-9]+) cached\)/.test(meta2), "the second turn reuses the first one's KV: " + meta2);
    await page.screenshot({ path: out + "/chat-page-2.png" });
    // A turn that fails (503) is shown as an error and not sent again with the next.
    await page.route("**/v1/chat/completions", (r) => r.fulfill({ status: 503, contentType: "application/json",
      body: JSON.stringify({ error: { message: "the server is busy", type: "server_error" } }) }), { times: 1 });
    await page.fill("#input", "This one fails.");
    await page.press("#input", "Enter");
    await page.waitForSelector(".msg.error", { timeout: 30000 });
    await page.waitForFunction(() => document.body.dataset.state === "done");
    check(await page.inputValue("#input") === "This one fails.", "the failed turn's text is back in the input");
    const sent = page.waitForRequest((r) => r.url().endsWith("/v1/chat/completions"));
    await page.fill("#input", "Third turn.");
    await page.press("#input", "Enter");
    const messages = JSON.parse((await sent).postData()).messages.map((m) => m.content);
    check(messages.length === 5 && !messages.includes("This one fails."), "the failed turn is not sent again");
    await page.waitForFunction(() => document.querySelectorAll(".msg.assistant .meta").length === 4
      && document.body.dataset.state === "done", null, { timeout: 30000 });
    check(external.length === 0, "no request left the server (offline page): " + external.join(", "));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e.message); process.exit(1); });
JS
if ! (cd "$OUT" && node check.js "$BASE" "$CHROMIUM" "$OUT"); then
    echo "--- server log" >&2
    cat "$LOG" >&2
    exit 1
fi
grep -q "prefix cache: reused" "$LOG" || { echo "FAIL: no prefix-cache hit in the server log" >&2; exit 1; }
echo "ok: the chat page streamed two turns in headless Chromium; screenshots in $OUT"
