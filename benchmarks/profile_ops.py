"""Where keras-whisper's time goes on JAX: per-op times of the encoder or a decoding loop.

Traces `repeats` calls with `jax.profiler`, reads the trace back
(`jax.profiler.ProfileData`) and prints, for every XLA operation (a YNNPACK
fusion, a dot, a copy, ...), its exclusive time per call and per decoding step:
the time the worker threads spent in it, less the time of the operations it
started. Summed over both of a 2-core machine's threads, so a perfectly parallel
product counts twice its wall time.

Run (the first 30 s of a file of `../shared/audio`, English):

    python benchmarks/profile_ops.py --preset whisper_tiny_en --stage beam5
    python benchmarks/profile_ops.py --preset whisper_base_multi --stage encode --top 20

With `--steps` it prints instead how a decoding step's wall time splits, as medians over
every step of the traced calls: the whole step, its logits product, and what follows that
product up to the next decoder product (the logit rules and the token choice). Steps vary by a few milliseconds on a shared machine; these medians over
~200 steps are steadier than end-to-end times for an A/B of two commits.

Stages: `encode` (one 30-s window), `greedy`, `beamN` (beam search with N beams),
`sampleN` (N samples at temperature 0.5): `generate()` on a precomputed encoder
output, the decoding loop being most of it. Pin the process to the benchmark's 2
CPUs (`taskset -c 0,1`) and keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import importlib  # noqa: E402

import jax  # noqa: E402

import keras_whisper  # noqa: E402
from keras_whisper import audio  # noqa: E402
from keras_whisper.decoding import DecodingOptions  # noqa: E402

# `keras_whisper.decoding.generate` is also the name of the function the package exports.
generation = importlib.import_module("keras_whisper.decoding.generate")

DEFAULT_AUDIO = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "audio", "en_sonnet001_long.wav"
)
# Events of the trace that are waits or the executor's own bookkeeping, not work.
WAITS = ("wait for completion", "Await")


def decoding_options(stage: str) -> DecodingOptions:
    """The `DecodingOptions` of a decoding stage name (`greedy`, `beamN`, `sampleN`)."""
    if stage == "greedy":
        return DecodingOptions(language="en")
    if stage.startswith("beam"):
        return DecodingOptions(language="en", beam_size=int(stage[4:] or 5))
    if stage.startswith("sample"):
        return DecodingOptions(language="en", temperature=0.5, best_of=int(stage[6:] or 5))
    raise ValueError(f"Unknown stage {stage!r}: use encode, greedy, beamN or sampleN.")


def _worker_lines(trace_dir: str) -> list:
    """The XLA worker threads' event lines of the trace in `trace_dir`."""
    from jax.profiler import ProfileData

    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    planes = ProfileData.from_file(path).planes
    return [line for plane in planes for line in plane.lines if "XLAEigen" in line.name]


def exclusive_times(trace_dir: str) -> dict[str, list[float]]:
    """`{operation: [total exclusive ms, count]}` over the XLA worker threads of a trace."""
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])

    def close(item: list) -> None:
        entry = totals[item[1]]
        entry[0] += (item[3] - item[2]) / 1e6
        entry[1] += 1

    for line in _worker_lines(trace_dir):
        events = sorted(
            ((e.start_ns, e.start_ns + e.duration_ns, e.name) for e in line.events),
            key=lambda e: (e[0], -e[1]),
        )
        # Events on a thread nest: a stack of [end, name, children's time, duration].
        stack: list[list] = []
        for start, end, name in events:
            while stack and stack[-1][0] <= start:
                close(stack.pop())
            if stack:
                stack[-1][2] += end - start
            stack.append([end, name, 0, end - start])
        while stack:
            close(stack.pop())
    return totals


def _events(trace_dir: str) -> list[tuple[int, int, str]]:
    """`(start ns, end ns, name)` of the XLA operations on the worker threads, in order."""
    return sorted(
        (e.start_ns, e.start_ns + e.duration_ns, e.name)
        for line in _worker_lines(trace_dir)
        for e in line.events
        if e.name.startswith(("dot", "ynn", "wrapped")) or "fusion" in e.name
    )


def step_split(events: list[tuple[int, int, str]]) -> dict[str, list[float]]:
    """Each decoding step's wall time, in us: `step` (one logits product's start to the
    next one's), `logits` (the product), `rules` (its end to the next product's start).

    The logits product is the operation taking over 1.2 ms a call on average that runs
    more than 10 times (the vocabulary table is by far the largest read of a step); the
    first five steps are left out (compilation-free but cache-cold).
    """
    total: dict[str, float] = collections.Counter()
    count: dict[str, int] = collections.Counter()
    for start, end, name in events:
        total[name] += end - start
        count[name] += 1
    logits = {n for n in total if count[n] > 10 and total[n] / count[n] > 1.2e6}
    marks = [i for i, e in enumerate(events) if e[2] in logits]
    split: dict[str, list[float]] = collections.defaultdict(list)
    for a, b in zip(marks[5:-1], marks[6:], strict=True):
        start, end, _ = events[a]
        products = (e for e in events[a + 1 : b] if e[2].startswith(("dot", "ynn")))
        after = next((e for e in products if e[0] >= end), None)
        split["step"].append((events[b][0] - start) / 1e3)
        split["logits"].append((end - start) / 1e3)
        if after:
            split["rules"].append((after[0] - end) / 1e3)
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="whisper_tiny_en")
    parser.add_argument("--stage", default="beam5", help="encode, greedy, beamN or sampleN")
    parser.add_argument("--audio", default=DEFAULT_AUDIO, help="the first 30 s are used")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=40, help="operations to list")
    parser.add_argument(
        "--steps", action="store_true", help="the median split of a decoding step instead"
    )
    args = parser.parse_args()
    if args.steps and args.stage == "encode":
        parser.error("--steps needs a decoding stage (greedy, beamN or sampleN).")

    task = keras_whisper.WhisperSpeechToText.from_preset(args.preset)
    backbone, tokenizer = task.backbone, task.tokenizer
    waveform = audio.load_audio(args.audio)
    features = audio.log_mel_spectrogram(audio.pad_or_trim(waveform))[None]

    if args.stage == "encode":

        def call():
            return jax.block_until_ready(generation.encode(backbone, features))

        call()  # compiles
        steps = None
    else:
        encoder_output = generation.encode(backbone, features)
        options = decoding_options(args.stage)

        def call():
            return generation.generate(backbone, tokenizer, encoder_output, options, seed=0)

        # The best candidate's tokens and its end of text (a beam search may run a
        # few steps longer, until it has enough finished candidates).
        steps = len(call()[0].tokens) + 1  # (this first call compiles)

    started = time.perf_counter()
    for _ in range(args.repeats):
        call()
    wall = (time.perf_counter() - started) / args.repeats * 1000

    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(args.repeats):
                call()
        if args.steps:
            split = step_split(_events(trace_dir))
            print(f"{args.preset} {args.stage}: {wall:.1f} ms a call (untraced); a step, us:")
            for part in ("step", "logits", "rules"):
                values = sorted(split[part])
                if values:
                    q25, q50 = values[len(values) // 4], values[len(values) // 2]
                    print(
                        f"  {part:7s} median {q50:8.1f}  25th percentile {q25:8.1f}  n={len(values)}"
                    )
            print("  (rules: from the logits product's end to the next decoder product)")
            return
        totals = exclusive_times(trace_dir)

    work = {
        name: (ms / args.repeats, count / args.repeats)
        for name, (ms, count) in totals.items()
        if not any(wait in name for wait in WAITS)
    }
    busy = sum(ms for ms, _ in work.values())
    print(f"{args.preset} {args.stage}: {wall:.1f} ms a call (untraced)", end="")
    if steps:
        print(f", ~{steps} decoding steps ({wall / steps:.2f} ms a step)", end="")
    print(f"; worker threads busy {busy:.1f} ms a call (traced)")
    print(f"{'ms/call':>9} {'ms/step':>8} {'calls':>7}  operation")
    for name, (ms, count) in sorted(work.items(), key=lambda kv: -kv[1][0])[: args.top]:
        per_step = f"{ms / steps:8.3f}" if steps else f"{'':8}"
        print(f"{ms:9.2f} {per_step} {count:7.0f}  {name}")


if __name__ == "__main__":
    main()
