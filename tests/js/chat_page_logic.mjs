// Runs the chat page's own script (fetched from a running `ferromoe serve`) under node,
// with a small stand-in for the DOM, against the real server — except for the turns
// this test makes fail (a 503, an error event mid-stream). Checks that `/?q=` only
// fills the input, and that a failed turn is not sent again with the next one.
//
//   node tests/js/chat_page_logic.mjs http://127.0.0.1:PORT
//
// Needs node 18 or later (global fetch with streaming bodies). Exits 1 on a failure.

const base = process.argv[2];
if (!base) throw new Error("usage: node chat_page_logic.mjs BASE_URL");

function check(cond, what) {
  if (!cond) throw new Error("FAIL: " + what);
  console.log("ok:", what);
}

// --- a DOM just large enough for the page ---------------------------------------------
class Element {
  constructor(tag, id) {
    this.tagName = tag;
    this.id = id || "";
    this.value = "";
    this.textContent = "";
    this.className = "";
    this.children = [];
    this.parent = null;
    this.dataset = {};
    this.disabled = false;
    this.scrollTop = 0;
    this.scrollHeight = 0;
    this.listeners = {};
    const el = this;
    this.classList = {
      add(c) { if (!el.className.split(" ").includes(c)) el.className = (el.className + " " + c).trim(); },
      contains(c) { return el.className.split(" ").includes(c); },
    };
  }
  set innerHTML(v) { if (v === "") this.children = []; }
  appendChild(c) { c.parent = this; this.children.push(c); return c; }
  remove() { if (this.parent) this.parent.children = this.parent.children.filter((c) => c !== this); }
  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
  dispatch(type, ev = {}) { for (const fn of this.listeners[type] || []) fn({ preventDefault() {}, ...ev }); }
  focus() { document.focused = this; }
  requestSubmit() { this.dispatch("submit"); }
  // Only `.class` selectors, which is all the page uses.
  querySelectorAll(sel) {
    const cls = sel.replace(/^\./, "");
    const out = [];
    const walk = (e) => { for (const c of e.children) { if (c.classList.contains(cls)) out.push(c); walk(c); } };
    walk(this);
    return out;
  }
  querySelector(sel) { return this.querySelectorAll(sel)[0] || null; }
}

const ids = ["log", "empty", "form", "input", "send", "stop", "clear", "model", "stats",
  "temperature", "max_tokens", "system", "apikey"];
const byId = {};
for (const id of ids) byId[id] = new Element("div", id);
byId.log.appendChild(byId.empty);
byId.temperature.value = "0";
byId.max_tokens.value = "512";
const document = {
  body: new Element("body"),
  focused: null,
  getElementById: (id) => (byId[id] && (id !== "empty" || byId.log.children.includes(byId.empty)) ? byId[id] : null),
  createElement: (tag) => new Element(tag),
};
const storage = {};
const localStorage = { getItem: (k) => (k in storage ? storage[k] : null), setItem: (k, v) => { storage[k] = String(v); } };
const location = { search: "?q=" + encodeURIComponent("Hello there") + "&max_tokens=6" };

// --- fetch: the real server, or a failure this test asks for --------------------------
const chats = []; // the bodies the page sent to /v1/chat/completions
let failNext = null; // "status" | "event"
async function pageFetch(url, opts = {}) {
  if (url === "/v1/chat/completions") {
    chats.push(JSON.parse(opts.body));
    const how = failNext;
    failNext = null;
    if (how === "status") {
      return new Response(JSON.stringify({ error: { message: "the server is busy", type: "server_error" } }),
        { status: 503, headers: { "content-type": "application/json" } });
    }
    if (how === "event") {
      const chunk = { choices: [{ index: 0, delta: { content: "half an ans" }, finish_reason: null }] };
      const text = "data: " + JSON.stringify(chunk) + "\n\n" +
        'data: {"error":{"message":"cut off: the server is shutting down"}}\n\ndata: [DONE]\n\n';
      return new Response(text, { status: 200, headers: { "content-type": "text/event-stream" } });
    }
  }
  return fetch(base + url, opts);
}

// --- run the page's script ------------------------------------------------------------
const html = await (await fetch(base + "/")).text();
const script = html.slice(html.indexOf("<script>") + 8, html.lastIndexOf("</script>"));
new Function("document", "localStorage", "location", "fetch", script)(document, localStorage, location, pageFetch);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what) {
  for (let t = 0; t < 3000; t++) {
    if (cond()) return;
    await sleep(10);
  }
  throw new Error("FAIL: timed out waiting for " + what);
}
async function turn(text) {
  const n = chats.length;
  byId.input.value = text;
  byId.form.dispatch("submit");
  await until(() => chats.length === n + 1 && document.body.dataset.state === "done", "the turn to end");
  return chats[n];
}

await until(() => byId.model.textContent !== "", "the model name");
check(byId.model.textContent === "tiny", "the model name from /v1/models: " + byId.model.textContent);
await sleep(300);
check(byId.input.value === "Hello there", "/?q= fills the input");
check(chats.length === 0, "/?q= sends nothing by itself");
check(byId.max_tokens.value === "6", "&max_tokens= sets the answer length");

const first = await turn(byId.input.value);
check(first.messages.length === 1 && first.messages[0].content === "Hello there", "the first turn is sent");
const answers = byId.log.querySelectorAll(".assistant");
const answer = answers[0].querySelector(".text").textContent;
check(answer.length > 0 && byId.log.querySelectorAll(".error").length === 0, "the answer streams: " + JSON.stringify(answer));

failNext = "status";
await turn("This one fails with a 503");
check(byId.log.querySelectorAll(".error").length === 1, "a 503 shows an error");
check(byId.input.value === "This one fails with a 503", "the failed text is back in the input");
failNext = "event";
await turn("This one is cut off");
check(byId.log.querySelectorAll(".error").length === 2, "an error event mid-stream shows an error");
check(byId.log.querySelectorAll(".failed").length === 4, "both failed turns are marked");

const next = await turn("And then?");
const roles = next.messages.map((m) => m.role + ":" + m.content);
check(JSON.stringify(roles) === JSON.stringify(["user:Hello there", "assistant:" + answer, "user:And then?"]),
  "the failed turns are not sent again: " + JSON.stringify(roles));
check(byId.log.querySelectorAll(".error").length === 2, "the good turn after them works");

// "New chat" during a turn: the aborted turn does not leak into the new conversation.
byId.input.value = "Tell me a long story";
byId.max_tokens.value = "400";
byId.form.dispatch("submit");
await until(() => chats.length === 5 && document.body.dataset.state === "busy", "the long turn to start");
byId.clear.dispatch("click");
await until(() => document.body.dataset.state === "done", "the aborted turn to end");
byId.max_tokens.value = "6";
const fresh = await turn("New topic");
check(fresh.messages.length === 1 && fresh.messages[0].content === "New topic",
  "after New chat only the new turn is sent: " + JSON.stringify(fresh.messages));
console.log("all chat page checks passed");
