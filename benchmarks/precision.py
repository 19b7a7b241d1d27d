"""Word error rate in half precision against float32 on the shared speech set (issue 8).

Transcribes every recording of `../shared/audio` that has a reference (the English ones
for `.en` models; English and Russian for multilingual ones) with `transcribe()`'s
defaults (greedy, timestamps, temperature fallback seeded with `seed=0`, previous text as
prompt), once per dtype policy, and reports the corpus word error rate (word edits summed
over files / reference words summed) per dtype and language. Word error rates move in steps
of whole words when one close decision flips, so each dtype is also compared with float32 on
a continuous measure: the first 30-s window of every file is decoded once in float32, and
both models then read that same token sequence (teacher forcing); the table gives the mean
Kullback-Leibler divergence of their next-token distributions (nats per token) and the
share of positions whose most likely token is the same. A second table gives the word error
rates of the throughput mode (`transcribe_many`, batch 8, VAD pieces) on the same files.
Rewrites the `precision/<model>` blocks of BENCHMARKS.md.

    python benchmarks/precision.py --models tiny_en,base --dtypes float32,bfloat16,float16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
import report  # noqa: E402
from wer import edit_distance, normalize  # noqa: E402

# The throughput mode's batch size in the second table (issue 8's CPU benchmark uses 8 and 16).
BATCH_SIZE = 8


def _files(multilingual: bool) -> list[tuple[str, str]]:
    """`(name, language)` of the shared recordings with a reference."""
    rows = []
    for line in (data.AUDIO_DIR / "manifest.tsv").read_text().splitlines()[1:]:
        fields = line.split("\t")
        name, language = fields[0].removesuffix(".wav"), fields[2]
        if "/" in name or not (data.AUDIO_DIR / f"{name}.txt").is_file():
            continue
        if language == "en" or multilingual:
            rows.append((name, language))
    return rows


def _log_probs(task, features: np.ndarray, tokens: list[int]) -> np.ndarray:
    """`(len(tokens) - 1, vocabulary)` float64 log-probabilities of each next token of
    `tokens` (one window, teacher-forced) under `task`'s backbone."""
    backbone = task.backbone
    ids = np.asarray([tokens], "int32")
    outputs = backbone(
        {
            "encoder_features": features[None],
            "decoder_token_ids": ids,
            "decoder_padding_mask": np.ones_like(ids),
        }
    )
    # The last position (after `<|endoftext|>`) predicts nothing that was decoded.
    hidden = outputs["decoder_sequence_output"][:, :-1]
    logits = np.asarray(backbone.logits(hidden), "float64")[0]
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def _teacher_forced(task, files) -> list[tuple[np.ndarray, list[int]]]:
    """Each file's first window and the float32 model's greedy tokens for it (start
    sequence, timestamps and `<|endoftext|>` included)."""
    windows = []
    for name, language in files:
        features = task.first_window(data.read_wav(data.AUDIO_DIR / f"{name}.wav"))
        result = task.generate(features[None], language=language)[0]
        start = list(task.tokenizer.sot_sequence(language))
        windows.append((features, start + list(result.tokens) + [task.tokenizer.eot]))
    return windows


def _divergence(task, windows, reference: list[np.ndarray]) -> tuple[float, float]:
    """Mean KL(float32 || task) per token and the share of equal arg-maxes."""
    divergences, agreements = [], []
    for (features, tokens), expected in zip(windows, reference, strict=True):
        log_probs = _log_probs(task, features, tokens)
        divergences.append((np.exp(expected) * (expected - log_probs)).sum(axis=-1))
        agreements.append(log_probs.argmax(axis=-1) == expected.argmax(axis=-1))
    return float(np.concatenate(divergences).mean()), float(np.concatenate(agreements).mean())


def measure(model_key: str, dtypes: list[str]) -> dict:
    from keras_whisper import WhisperSpeechToText

    model = data.MODELS[model_key]
    files = _files(model.multilingual)
    results: dict = {"files": files, "dtypes": {}}
    reference_task = WhisperSpeechToText.from_preset(model.preset)
    windows = _teacher_forced(reference_task, files)
    float32_log_probs = [_log_probs(reference_task, *window) for window in windows]
    results["tokens"] = sum(len(log_probs) for log_probs in float32_log_probs)
    for dtype in dtypes:
        task = (
            reference_task
            if dtype == "float32"
            else WhisperSpeechToText.from_preset(model.preset, dtype=dtype)
        )
        per_language: dict[str, list[int]] = {}
        start = time.perf_counter()
        texts, per_file = {}, {}
        for name, language in files:
            audio = data.read_wav(data.AUDIO_DIR / f"{name}.wav")
            # Seeded: the fallback's samples are the same in every run and dtype.
            text = task.transcribe(audio, language=language, seed=0).text
            texts[name] = text
            reference = normalize((data.AUDIO_DIR / f"{name}.txt").read_text()).split()
            edits = edit_distance(reference, normalize(text).split())
            per_file[name] = (edits, len(reference))
            counts = per_language.setdefault(language, [0, 0])
            counts[0] += edits
            counts[1] += len(reference)
        seconds = time.perf_counter() - start
        batched, batched_texts = _batched(task, files)
        results["dtypes"][dtype] = {
            "counts": per_language,
            "seconds": seconds,
            "texts": texts,
            "per_file": per_file,
            "divergence": _divergence(task, windows, float32_log_probs),
            "batched": batched,
            "batched_texts": batched_texts,
        }
        print(
            f"{model_key} {dtype}: {per_language} in {seconds:.0f} s, batched {batched}",
            file=sys.stderr,
        )
    return results


def _batched(task, files) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Word edits and reference words per language, and each file's text, of the
    throughput mode (`transcribe_many`, batch `BATCH_SIZE`, Silero VAD pieces, no previous
    text) on the set, one call per language."""
    counts: dict[str, list[int]] = {}
    texts: dict[str, str] = {}
    for language in sorted({lang for _, lang in files}):
        names = [name for name, lang in files if lang == language]
        paths = [data.AUDIO_DIR / f"{name}.wav" for name in names]
        outputs = task.transcribe_many(paths, batch_size=BATCH_SIZE, language=language)
        for name, (_, result) in zip(names, outputs, strict=True):
            if isinstance(result, Exception):
                raise result
            texts[name] = result.text
            reference = normalize((data.AUDIO_DIR / f"{name}.txt").read_text()).split()
            language_counts = counts.setdefault(language, [0, 0])
            language_counts[0] += edit_distance(reference, normalize(result.text).split())
            language_counts[1] += len(reference)
    return counts, texts


def _rate_cells(counts: dict, base_counts: dict | None, languages: list[str]) -> list[str]:
    """Per language: the word error rate in % and its difference from float32's."""
    cells = []
    for language in languages:
        edits, words = counts[language]
        rate = 100 * edits / words
        cells.append(f"{rate:.2f}")
        if base_counts:
            base_edits, base_words = base_counts[language]
            cells.append(f"{rate - 100 * base_edits / base_words:+.2f}")
        else:
            cells.append("")
    return cells


def _batched_table(results: dict, languages: list[str]) -> list[str]:
    """The throughput mode's word error rates per dtype, as a second table."""
    header = ["dtype (batched mode)"]
    for language in languages:
        header += [f"WER % ({language})", f"Δ vs float32 ({language}), points"]
    header.append("identical texts")
    base = results["dtypes"].get("float32")
    body = []
    for dtype, measured in results["dtypes"].items():
        row = [dtype]
        row += _rate_cells(measured["batched"], base and base["batched"], languages)
        texts = measured["batched_texts"]
        same = sum(1 for name in texts if base and texts[name] == base["batched_texts"][name])
        row.append(f"{same} / {len(texts)}")
        body.append(row)
    return [report.table(header, body)]


def block(model_key: str, results: dict, head: str) -> str:
    model = data.MODELS[model_key]
    dtypes = list(results["dtypes"])
    languages = sorted({lang for _, lang in results["files"]})
    lines = [f"## Half precision: word error rate, {model.label}", "", head, ""]
    header = ["dtype"]
    for language in languages:
        count = sum(1 for _, lang in results["files"] if lang == language)
        header += [f"WER % ({language}, {count} files)", f"Δ vs float32 ({language}), points"]
    header += [
        "identical texts",
        "teacher-forced KL vs float32, nats/token",
        "same top-1 token",
        "seconds (whole set, warm-up included)",
    ]
    body = []
    base = results["dtypes"].get("float32")
    for dtype in dtypes:
        row = [dtype]
        measured = results["dtypes"][dtype]
        row += _rate_cells(measured["counts"], base and base["counts"], languages)
        same = sum(
            1
            for name, _ in results["files"]
            if base and measured["texts"][name] == base["texts"][name]
        )
        divergence, agreement = measured["divergence"]
        row += [
            f"{same} / {len(results['files'])}",
            f"{divergence:.1e}",
            f"{100 * agreement:.2f} %",
            f"{measured['seconds']:.0f}",
        ]
        body.append(row)
    lines += [report.table(header, body), ""]
    lines += _batched_table(results, languages) + [""]
    for dtype in dtypes:
        measured = results["dtypes"][dtype]
        changed = [
            f"{name} {100 * measured['per_file'][name][0] / measured['per_file'][name][1]:.1f} "
            f"({100 * base['per_file'][name][0] / base['per_file'][name][1]:.1f} in float32)"
            for name, _ in results["files"]
            if base and measured["texts"][name] != base["texts"][name]
        ]
        if base and dtype != "float32":
            lines.append(
                f"- {dtype}, the files whose text differs from float32's, WER %: "
                + (", ".join(changed) or "none")
                + "."
            )
    lines += [
        "- `transcribe()` defaults: greedy, timestamps, temperature fallback (seeded, "
        "`seed=0`, so reruns give the same texts), previous text; "
        "the language given. WER = word edits summed over the files / reference words "
        "(`benchmarks/wer.py` normalisation). Half precision keeps LayerNorm, softmax and "
        "log-probabilities in float32.",
        f"- Batched mode (second table): `transcribe_many` over the same files, batch "
        f"{BATCH_SIZE}, Silero VAD pieces of at most 30 s (default options), greedy, "
        "no previous text, temperature 0 (this mode has no fallback): the throughput mode, "
        "whose pieces are decoded without the text before them.",
        f"- Teacher-forced: the first 30-s window of each file, decoded greedily in float32 "
        f"({results['tokens']} predicted positions in all, up to and including "
        "`<|endoftext|>`), read by each dtype's model in one pass; KL = mean over those "
        "positions of KL(float32 || dtype) of the next-token distributions.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny_en,base")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16")
    parser.add_argument("--output", type=Path, default=data.REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/precision.py " + " ".join(argv or sys.argv[1:])
    blocks = {}
    for model_key in args.models.split(","):
        results = measure(model_key, args.dtypes.split(","))
        head = report.provenance(command.strip(), 0.0, False).replace(
            "; other processes kept 0.00 of the 2 benchmark CPUs busy on average meanwhile", ""
        )
        blocks[f"precision/{model_key}"] = block(model_key, results, head)
        print(blocks[f"precision/{model_key}"])
    report.write_benchmarks(args.output, blocks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
