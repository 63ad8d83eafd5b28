#!/usr/bin/env bash
# Build the peer: llama.cpp's llama-bench from the `llama-cpp-python` PyPI sdist's vendored
# llama.cpp, CPU-native Release, cached outside the repo (never committed).
#
#   bench/build-llama-cpp.sh            # prints the path of llama-bench on success
#
# Env: FERROMOE_CACHE (default ~/.cache/ferromoe), LLAMA_CPP_PYTHON_VERSION (default: latest).
set -euo pipefail

CACHE="${FERROMOE_CACHE:-$HOME/.cache/ferromoe}"
ROOT="$CACHE/llama.cpp"
BIN="$ROOT/build/bin/llama-bench"
if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$ROOT"

if ! command -v cmake >/dev/null; then
    echo "build-llama-cpp: installing cmake" >&2
    if command -v apt-get >/dev/null; then
        (apt-get install -y cmake >&2 || (apt-get update >&2 && apt-get install -y cmake >&2))
    else
        pip install cmake >&2
    fi
fi
python3 -c 'import scikit_build_core' 2>/dev/null || pip install scikit-build-core >&2

SRC="$ROOT/src"
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
    DL="$ROOT/sdist"
    rm -rf "$DL" && mkdir -p "$DL"
    spec="llama-cpp-python${LLAMA_CPP_PYTHON_VERSION:+==$LLAMA_CPP_PYTHON_VERSION}"
    echo "build-llama-cpp: downloading the $spec sdist" >&2
    pip download --no-deps --no-binary :all: --no-build-isolation -d "$DL" "$spec" >&2
    tarball=$(ls "$DL"/llama_cpp_python-*.tar.gz | head -1)
    rm -rf "$ROOT/unpack" && mkdir -p "$ROOT/unpack"
    tar -xzf "$tarball" -C "$ROOT/unpack"
    vendor=$(ls -d "$ROOT"/unpack/llama_cpp_python-*/vendor/llama.cpp)
    rm -rf "$SRC" && mv "$vendor" "$SRC"
    basename "$tarball" > "$ROOT/SDIST"
fi

echo "build-llama-cpp: configuring (CPU-native Release)" >&2
cmake -S "$SRC" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$ROOT/build" --config Release -j"$(nproc)" --target llama-bench >&2
echo "$BIN"
