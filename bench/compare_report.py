#!/usr/bin/env python3
"""Aggregates the JSON of one bench/compare.sh run and prints (and optionally writes to
bench/RESULTS.md) ferromoe vs llama.cpp: tokens/s, ratios, decode rate as a fraction of the
memory-bandwidth bound, prefill rate as a fraction of the int8 MAC rate."""
import argparse, glob, json, os, re, statistics, datetime

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--commit", default="?")
ap.add_argument("--cpu", default="?")
ap.add_argument("--cmd", default="")
ap.add_argument("--label", default="")
ap.add_argument("--results", default=None)
a = ap.parse_args()

def load(prefix):
    """test name -> every per-repetition tokens/s sample over all rounds."""
    out = {}
    for f in sorted(glob.glob(os.path.join(a.dir, prefix + ".*.json"))):
        for r in json.load(open(f)):
            test = f"pp{r['n_prompt']}" if r["n_prompt"] > 0 else f"tg{r['n_gen']}"
            if r.get("n_depth", 0):
                test += f" @ d{r['n_depth']}"
            out.setdefault(test, []).extend(r["samples_ts"])
    return out

def ms(v):
    return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)

llama, ours, ours_k = load("llama"), load("ferromoe"), load("ferromoe-k")
meta = json.load(open(os.path.join(a.dir, "inspect.json")))
md = meta["metadata"]
arch = md.get("general.architecture", "")
n_exp = md.get(f"{arch}.expert_count", 0) or 0
k_file = md.get(f"{arch}.expert_used_count", 0) or 0
vocab = md.get(f"{arch}.vocab_size") or 1
k_sel = None
for f in glob.glob(os.path.join(a.dir, "ferromoe-k.*.json")):
    k_sel = json.load(open(f))[0].get("n_experts_used")

def per_token(k, n_prompt):
    """(weight bytes read per decode token, weight MACs per prefill token) with k experts."""
    bytes_tok = macs_tok = 0.0
    for t in meta["tensors"]:
        n_el = 1
        for d in t["ne"]:
            n_el *= d
        frac = 1.0
        if "_exps" in t["name"] and n_exp:
            frac = k / n_exp
        if t["name"] == "token_embd.weight":
            bytes_tok += t["bytes"] / t["ne"][1]          # one row is looked up
            continue
        if t["ne"] and len(t["ne"]) == 1:
            frac_mac = 0.0                                   # norms, biases: no MACs
        else:
            frac_mac = frac
        if t["name"] == "output.weight" and n_prompt:
            frac_mac = 1.0 / n_prompt                        # logits of the last position only
        bytes_tok += t["bytes"] * frac
        macs_tok += n_el * frac_mac
    return bytes_tok, macs_tok

bw = float(os.environ.get("BW_GBS", 19.0 if a.threads == 1 else 27.0))
mac_rate = float(os.environ.get("MAC_GS", 95.0 * a.threads))
tests = sorted(set(llama) | set(ours), key=lambda s: (s[:2] != "pp", s))
rows, notes = [], []
for test in tests:
    n_prompt = int(test[2:].split(" ")[0]) if test.startswith("pp") else 0
    L = ms(llama[test]) if test in llama else None
    O = ms(ours[test]) if test in ours else None
    K = ms(ours_k[test]) if test in ours_k else None
    ratio = O[0] / L[0] if (L and O) else None
    bytes_tok, macs_tok = per_token(k_file, n_prompt)
    if test.startswith("tg"):
        bound = bw * 1e9 / bytes_tok
        frac = lambda v: f"{100 * v / bound:.0f}% of {bound:.1f}"
        bound_txt = f"bandwidth bound {bound:.1f} tok/s ({bytes_tok / 1e9:.2f} GB of weights per token at {bw:g} GB/s)"
    else:
        bound = mac_rate * 1e9 / macs_tok
        frac = lambda v: f"{100 * v / bound:.0f}% of {bound:.1f}"
        bound_txt = f"int8 MAC bound {bound:.1f} tok/s ({macs_tok / 1e9:.2f} G weight MACs per token at {mac_rate:g} G MAC/s)"
    best = (max(ours[test]) / max(llama[test])) if (test in llama and test in ours) else None
    rows.append((test, L, O, ratio, frac(L[0]) if L else "", frac(O[0]) if O else "", K,
                 max(llama[test]) if L else None, max(ours[test]) if O else None, best))
    if " @ d" in test:
        bound_txt += "; weights only: the attention over the cached depth is not counted"
    notes.append(f"- {test}: {bound_txt}")

def f(x):
    return f"{x[0]:.2f} ± {x[1]:.2f}" if x else "–"

hdr = ("| test | llama.cpp t/s | ferromoe t/s | ratio of means | llama.cpp of bound | ferromoe of bound "
       "| best sample llama.cpp / ferromoe | ratio of bests |")
lines = [hdr, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
g = lambda x: f"{x:.2f}" if x is not None else "–"
for test, L, O, ratio, fl, fo, K, bl, bo, best in rows:
    r = f"{ratio:.2f}×" if ratio else "–"
    b = f"{best:.2f}×" if best else "–"
    lines.append(f"| {test} | {f(L)} | {f(O)} | {r} | {fl} | {fo} | {g(bl)} / {g(bo)} | {b} |")
if ours_k:
    lines.append("")
    lines.append(f"ferromoe with `--experts-per-token {k_sel}` (of {k_file}):")
    lines.append("")
    lines.append("| test | ferromoe top-%s t/s | speed-up vs top-%s |" % (k_sel, k_file))
    lines.append("| --- | ---: | ---: |")
    for test, L, O, ratio, fl, fo, K, *_ in rows:
        if K and O:
            lines.append(f"| {test} | {f(K)} | {K[0] / O[0]:.2f}× |")
table = "\n".join(lines)
model = os.path.basename(meta.get("file", ""))
size_gb = sum(t["bytes"] for t in meta["tensors"]) / 1e9
summary = (f"{model}: {meta.get('name')}, {meta.get('parameter_count', 0) / 1e9:.2f} B params, "
           f"{size_gb:.2f} GB, {n_exp} experts top-{k_file}")
print(summary)
print(table)
print("\n".join(notes))

if a.results:
    label = a.label or model
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = "\n".join([
        f"<!-- e2e:{label} -->",
        f"### {label}",
        "",
        f"{when} · commit `{a.commit}` · {a.cpu} · {a.threads} threads",
        f"`{a.cmd}`",
        "",
        summary,
        "",
        table,
        "",
        *notes,
        f"<!-- /e2e:{label} -->",
    ])
    head = "## End-to-end: ferromoe vs llama.cpp"
    text = open(a.results).read() if os.path.exists(a.results) else "# Benchmark results\n"
    if head not in text:
        text = text.rstrip("\n") + f"\n\n{head}\n\n<!-- e2e:end -->\n"
    pat = re.compile(rf"<!-- e2e:{re.escape(label)} -->.*?<!-- /e2e:{re.escape(label)} -->", re.S)
    if pat.search(text):
        text = pat.sub(lambda m: block, text)
    else:
        text = text.replace("<!-- e2e:end -->", block + "\n\n<!-- e2e:end -->", 1)
    open(a.results, "w").write(text)
    print(f"updated {a.results} ({label})")
