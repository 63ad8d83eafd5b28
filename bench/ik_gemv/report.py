#!/usr/bin/env python3
"""Joins bench/ik_gemv.sh's logs (ours-*.md from the kernel bench, ik-*.md from ik_gemv) into one
Markdown table: per type and shape, the 2-thread cold GEMV rate of each engine's layouts as GB/s
and as % of the read bandwidth that engine's own run measured next to it; best of the rounds
(and of the directories given: report.py DIR [DIR...])."""
import glob
import os
import re
import sys

# ik's stand-ins for the ternary types it does not have.
IK_STANDS_IN = {"IQ1_BN": "TQ1_0", "IQ2_BN": "TQ2_0"}


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def shape_key(s):
    return s.replace(" ", "").replace("×", "x")


def best(table, key, cold, bw, hot, label):
    if key not in table or cold > table[key][0]:
        table[key] = (cold, bw, hot, label)


# Row order of the table (types not listed go last, by name).
TYPE_ORDER = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "TQ1_0", "TQ2_0",
              "Q2_K", "Q3_K", "IQ4_XS", "Q4_0", "MXFP4", "Q4_K", "Q8_0"]


def parse(out_dirs):
    ours, ik = {}, {}
    for path in [p for d in out_dirs for p in glob.glob(os.path.join(d, "ours-*.md"))]:
        for line in open(path, encoding="utf-8"):
            c = cells(line)
            # type | shape | MiB | cold 1t | bw 1t | % | cold 2t | bw 2t | % | fastest op 2t |
            # fastest bw 2t | % | hot 1t | hot 2t
            if len(c) != 14 or not re.match(r"^\d+ × \d+$", c[1]):
                continue
            m = re.match(r"^(\S+)(?: \((.+)\))?$", c[0])
            ty, layout = m.group(1), m.group(2) or "file order"
            best(ours, (ty, shape_key(c[1]), layout), float(c[6]), float(c[7]), float(c[13]), layout)
    for path in [p for d in out_dirs for p in glob.glob(os.path.join(d, "ik-*.md"))]:
        for line in open(path, encoding="utf-8"):
            c = cells(line)
            # type | shape | MiB | threads | cold | bw | % | fastest op | fastest bw | % | hot
            if len(c) != 11 or not re.match(r"^\d+ × \d+$", c[1]):
                continue
            name = c[0]
            m = re.match(r"^(.+)_r\d+$", name)
            base = (m.group(1) if m else name).upper()
            ty = IK_STANDS_IN.get(base, base)
            layout = "rN" if m else "plain"
            best(ik, (ty, shape_key(c[1]), layout), float(c[4]), float(c[5]), float(c[10]), name)
    return ours, ik


def fmt(entry):
    if entry is None:
        return "—", "—", "—"
    cold, bw, hot, _ = entry
    return f"{cold:.1f}", f"{100 * cold / bw:.0f}% of {bw:.0f}", f"{hot:.1f}"


def main():
    ours, ik = parse(sys.argv[1:] or ["."])
    keys = sorted({(ty, shape) for ty, shape, _ in list(ours) + list(ik)},
                  key=lambda k: (TYPE_ORDER.index(k[0]) if k[0] in TYPE_ORDER else len(TYPE_ORDER), k[0],
                                 int(k[1].split("x")[0]) * int(k[1].split("x")[1])))
    print("| type | n_in × n_out | ours layout | ours cold | % of bw | ik plain | ik cold | % of bw "
          "| ik _rN | ik _rN cold | % of bw | ours / best ik | hot: ours, ik plain, ik _rN |")
    print("|---|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|---|")
    for ty, shape in keys:
        # Ours: the layout the engine runs (its packed layout where it has one, else file order).
        mine = [v for (t, s, _), v in ours.items() if (t, s) == (ty, shape)]
        packed = [v for v in mine if v[3] != "file order"]
        o = (packed or mine or [None])[0]
        p, r = ik.get((ty, shape, "plain")), ik.get((ty, shape, "rN"))
        oc, op, oh = fmt(o)
        pc, pp, ph = fmt(p)
        rc, rp, rh = fmt(r)
        iks = [e[0] for e in (p, r) if e]
        ratio = f"{o[0] / max(iks):.2f}×" if o and iks else "—"
        print(f"| {ty} | {shape.replace('x', ' × ')} | {o[3] if o else '—'} | {oc} | {op} "
              f"| {p[3] if p else '—'} | {pc} | {pp} | {r[3] if r else '—'} | {rc} | {rp} "
              f"| {ratio} | {oh}, {ph}, {rh} |")


if __name__ == "__main__":
    main()
