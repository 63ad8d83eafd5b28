#!/bin/sh
# Load speed on a V3-shape synth file, cold (the file's pages evicted from the page cache
# with posix_fadvise(DONTNEED): no root needed, unlike drop_caches) and warm (cached).
# (A model bigger than RAM: bench/bigger_than_ram.sh.)
#   sh bench/load_speed.sh [FILE] [LAYERS]   (not in CI; deletes only a file it made itself)
set -eu
bin=${FERROMOE:-target/release/ferromoe}
file=${1:-/tmp/ferromoe-v3-load.gguf}
layers=${2:-4}
made=0
if [ ! -f "$file" ]; then
    "$bin" synth --shape v3 --layers "$layers" --dense-layers 1 --type Q4_K_M -o "$file"
    made=1
fi
evict() { python3 -c "import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)" "$1"; }
for kind in cold warm cold warm; do
    [ "$kind" = cold ] && evict "$file"
    echo "== $kind"
    /usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" logits -m "$file" --tokens 1,2,3 -o /tmp/ferromoe-load.npy 2>&1 | grep -E "^(load|  |warning|wall)"
done
[ "$made" = 1 ] && rm -f "$file"
exit 0
