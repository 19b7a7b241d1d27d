#!/usr/bin/env bash
# One run on the GPU test machine (benchmarks/README.md, "GPU"): ours and the peers in the
# same run, most important first, each part under its own timeout within a total budget.
# Needs the git-ignored .whl/ folder built by benchmarks/gpu_prepare.sh (keras, namex, optree, soundfile, soxr, pytest, ...;
# peers/ with openai-whisper's sources, tiktoken and a numba stand-in; tokenizer.json).
set -o pipefail
BUDGET=${BUDGET:-520}
R=$OUT/gpu_results.jsonl
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl .whl/peers/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.whl/peers/src KERAS_BACKEND=jax KERAS_WHISPER_CACHE=/tmp/kwcache
export XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/gpu_info.txt
part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  [[ -n "$PARTS" && " $PARTS " != *" $name "* ]] && return  # PARTS="a b": only those
  local left=$((BUDGET - SECONDS))
  (( left < 20 )) && { echo "skip $name (budget)" | tee -a $OUT/log.txt; return; }
  (( limit > left )) && limit=$left
  echo "== $name (limit ${limit}s, at ${SECONDS}s)" | tee -a $OUT/log.txt
  timeout $limit "$@" 2>&1 | grep -v -i "warning" | tail -25 | tee -a $OUT/log.txt
}
OURS="python3 benchmarks/gpu_generate.py --tokens 128 --repeats 5 --dtype bfloat16 --tokenizer .whl/tokenizer.json --out $R"
PEERS="python3 benchmarks/gpu_peers.py --tokens 128 --repeats 5 --out $R"
part ceilings 40 $PEERS ceilings
part ours-turbo 130 $OURS --presets whisper_large_v3_turbo --batches 32 1 64
part tf-turbo 100 $PEERS transformers --archs large-v3-turbo --batches 32
part ours-v3 110 $OURS --presets whisper_large_v3 --batches 32 1
part ours-v3-448 80 $OURS --presets whisper_large_v3 --batches 32 --cache-step 448
part ours-turbo-448 60 $OURS --presets whisper_large_v3_turbo --batches 32 --cache-step 448
part tf-v3 90 $PEERS transformers --archs large-v3 --batches 32
part tests-jax 70 python3 -m pytest -q -p no:cacheprovider tests/test_decoding.py tests/test_backbone.py -k "not tiny and not base and not torch and not seed"
part tests-torch 60 env KERAS_BACKEND=torch python3 -m pytest -q -x -p no:cacheprovider tests/test_decoding.py -k "not tiny and not base and not seed and not jax"
part openai-turbo 50 $PEERS openai --archs large-v3-turbo --batches 1 32
part tf-turbo-b1 60 $PEERS transformers --archs large-v3-turbo --batches 1 --caches static eager
echo "done at ${SECONDS}s" | tee -a $OUT/log.txt
