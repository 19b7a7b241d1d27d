"""Whole-window decoding throughput of keras-whisper on one accelerator (issue 8, part 5b).

Random weights (timing does not depend on the values), a fixed decode length (the
end-of-text token is suppressed, so every row decodes exactly `--tokens` tokens), the
architectures of the presets named. For each batch size: the encoder's milliseconds per
30-s window, and `generate()` end to end (encoder, cross-attention cache, prefill, the
compiled decode loop, one host round trip), as milliseconds per window and seconds of
audio per second. Each measurement is a median after warm-up; compile time is separate.

    python benchmarks/gpu_generate.py --presets whisper_large_v3_turbo --batches 1 16 32 \\
        --dtype bfloat16 --tokens 128 --tokenizer path/to/tokenizer.json --out results.jsonl

The tokenizer only supplies the special tokens: any multilingual Whisper `tokenizer.json`
will do; the backbone's vocabulary is set to the tokenizer's size.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _timed(fn, repeats: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    fn()  # second warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["whisper_large_v3_turbo"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 32])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokenizer", required=True, help="a multilingual tokenizer.json")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    parser.add_argument(
        "--cache-step",
        type=int,
        default=None,
        help="self-attention cache length granularity (448: always the whole context)",
    )
    args = parser.parse_args(argv)

    import jax
    import keras
    import numpy as np

    from keras_whisper import WhisperBackbone
    from keras_whisper.decoding import DecodingOptions, generate
    from keras_whisper.tokenizer import WhisperTokenizer

    decoding = importlib.import_module("keras_whisper.decoding.generate")
    if args.cache_step:
        decoding.CACHE_STEP = args.cache_step
    tokenizer = WhisperTokenizer.from_tokenizer_json(args.tokenizer)
    device = str(jax.devices()[0])
    for preset in args.presets:
        backbone = WhisperBackbone.from_preset(
            preset,
            load_weights=False,
            dtype=args.dtype,
            vocabulary_size=tokenizer.vocabulary_size(),
        )
        options = DecodingOptions(
            language="en",
            without_timestamps=True,
            sample_len=args.tokens,
            suppress_tokens=[-1, tokenizer.eot],
            suppress_blank=False,
        )
        rng = np.random.default_rng(0)
        for batch in args.batches:
            features = rng.standard_normal((batch, 3000, backbone.num_mels)).astype("float32")

            def encode(features=features, backbone=backbone):
                out = decoding._run(backbone, ("encode",), decoding._encode_stage, features)
                jax.block_until_ready(out)

            results = []

            def decode(features=features, results=results, backbone=backbone, options=options):
                results[:] = generate(backbone, tokenizer, features, options)

            try:
                encode_first, encode_times = _timed(encode, args.repeats)
                decode_first, decode_times = _timed(decode, args.repeats)
            except Exception as error:  # out of memory: say so and go on
                row = {
                    "preset": preset,
                    "batch": batch,
                    "error": f"{type(error).__name__}: {error}",
                }
                print(json.dumps(row), flush=True)
                continue
            lengths = {len(r.tokens) for r in results}
            encode_ms = statistics.median(encode_times) * 1000
            decode_ms = statistics.median(decode_times) * 1000
            row = {
                "device": device,
                "backend": keras.backend.backend(),
                "preset": preset,
                "dtype": args.dtype,
                "batch": batch,
                "tokens": sorted(lengths),
                "encoder_ms_per_window": round(encode_ms / batch, 3),
                "generate_ms_per_window": round(decode_ms / batch, 3),
                "generate_ms_per_step": round(decode_ms / args.tokens, 3),
                "audio_seconds_per_second": round(30 * batch / (decode_ms / 1000), 1),
                "encoder_first_call_s": round(encode_first, 2),
                "generate_first_call_s": round(decode_first, 2),
                "repeats": args.repeats,
                "cache_step": decoding.CACHE_STEP,
            }
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
