"""The `keras-whisper` command line.

```
keras-whisper transcribe AUDIO... [--preset whisper_tiny_en] [--language LANG]
    [--task transcribe|translate] [--beam-size N] [--temperature T]
    [--initial-prompt TEXT] [--output-format txt|srt|vtt|tsv|json|all]
    [--output-dir DIR] [--threads N] [--backend jax|torch|tensorflow]
    [--batch-size N] [--vad-filter] [--clip-timestamps S,E,...] [--dtype bfloat16]
    [--seed N] [--word-timestamps] [--hotwords TEXT] [--patience P] [--length-penalty A]
    [--repetition-penalty P] [--no-repeat-ngram-size N] [--multilingual]
    [--suppress-tokens IDS] [--compression-ratio-threshold X|none]
    [--logprob-threshold X|none] [--no-speech-threshold X|none] ...
keras-whisper convert SOURCE TARGET [--to preset|ggml|mlx|ctranslate2|openai|transformers]
    [--dtype float16|float32] [--overwrite]
```

The decoding options are openai-whisper's, with the same defaults.

Without `--batch-size`, each input goes through OpenAI's sequential seek loop with a
progress bar over its audio time. With it, voice activity detection cuts the speech
of all inputs into pieces of at most 30 s, decoded N at a time (`pip install
'keras-whisper[vad]'`).

Backend and thread count are applied before Keras is imported. Each input's
transcript is written next to the others in `--output-dir`, named after the
input (`talk.mp3` -> `talk.txt`, `talk.srt`, ...); a transcript of an earlier run
with the same name is replaced. Before anything is loaded, the run is refused (exit
status 2) if a transcript would replace one of the inputs or two inputs would write
the same file, if `--output-dir` cannot be made, or if an option is bad. An input
that fails is reported and skipped; the exit status is then 1, and none of its
output files is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

OUTPUT_FORMATS = ("txt", "srt", "vtt", "tsv", "json")
EXPORT_FORMATS = ("ggml", "mlx", "ctranslate2", "openai", "transformers")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-whisper", description="Whisper speech recognition with Keras 3."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("transcribe", help="transcribe audio files")
    run.add_argument("audio", nargs="+", help="audio files (any format soundfile or ffmpeg reads)")
    run.add_argument("--preset", default="whisper_tiny_en", help="preset name, folder or handle")
    run.add_argument("--language", default=None, help="language code or name (default: detect)")
    run.add_argument("--task", default="transcribe", choices=("transcribe", "translate"))
    run.add_argument("--beam-size", type=int, default=None, help="beam search width")
    run.add_argument("--best-of", type=int, default=None, help="samples at temperature > 0")
    run.add_argument(
        "--patience", type=float, default=None, help="beam search patience (arXiv:2204.05424)"
    )
    run.add_argument(
        "--length-penalty",
        type=float,
        default=None,
        help="beam ranking: score / length**alpha (default: simple length normalisation)",
    )
    run.add_argument(
        "--suppress-tokens",
        default="-1",
        help="token ids never to sample, written --suppress-tokens=-1,220 (-1: the non-speech "
        "symbols; '': none)",
    )
    run.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="first temperature; fallback goes up by --temperature-increment",
    )
    run.add_argument("--temperature-increment", type=float, default=0.2)
    retry = "retry at the next temperature when "
    run.add_argument(
        "--compression-ratio-threshold",
        type=_optional_float,
        default=2.4,
        help=retry + "the text's gzip compression ratio is above this ('none': never)",
    )
    run.add_argument(
        "--logprob-threshold",
        type=_optional_float,
        default=-1.0,
        help=retry + "the average log-probability is below this ('none': never)",
    )
    run.add_argument(
        "--no-speech-threshold",
        type=_optional_float,
        default=0.6,
        help="skip a window as silence above this no-speech probability ('none': never)",
    )
    run.add_argument(
        "--seed", type=int, default=None, help="seed of the sampling: reproducible transcripts"
    )
    run.add_argument("--initial-prompt", default=None, help="text to prompt the first window")
    run.add_argument(
        "--hotwords",
        default=None,
        help="names or jargon the speech holds, prompted in every window",
    )
    run.add_argument(
        "--repetition-penalty",
        type=float,
        default=None,
        help="faster-whisper's: above 1, scale down the tokens the transcript already has",
    )
    run.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=None,
        help="faster-whisper's: never repeat an n-gram of this many tokens",
    )
    run.add_argument(
        "--carry-initial-prompt",
        action="store_true",
        help="put --initial-prompt before every window's prompt, not only the first",
    )
    run.add_argument(
        "--no-condition-on-previous-text",
        dest="condition_on_previous_text",
        action="store_false",
    )
    run.add_argument("--without-timestamps", action="store_true")
    run.add_argument(
        "--word-timestamps",
        action="store_true",
        help="times of every word (in the json output)",
    )
    layout = "srt/vtt from --word-timestamps: "
    run.add_argument(
        "--highlight-words", action="store_true", help=layout + "underline each word as said"
    )
    run.add_argument("--max-line-width", type=int, default=None, help=layout + "characters a line")
    run.add_argument("--max-line-count", type=int, default=None, help=layout + "lines a subtitle")
    run.add_argument("--max-words-per-line", type=int, default=None, help=layout + "words a line")
    run.add_argument(
        "--prepend-punctuations",
        default=None,
        help="with --word-timestamps: marks joined to the following word",
    )
    run.add_argument(
        "--append-punctuations",
        default=None,
        help="with --word-timestamps: marks joined to the previous word",
    )
    run.add_argument(
        "--hallucination-silence-threshold",
        type=float,
        default=None,
        help="with --word-timestamps: drop hallucinated segments between silences this long (s)",
    )
    run.add_argument(
        "--output-format", default="all", choices=(*OUTPUT_FORMATS, "all"), help="file format(s)"
    )
    run.add_argument("--output-dir", default=".", help="where transcripts are written")
    run.add_argument("--threads", type=int, default=None, help="CPU threads to use")
    run.add_argument("--backend", default=None, choices=("jax", "torch", "tensorflow"))
    run.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float16", "bfloat16"),
        help="model dtype (default float32); half precision: docs/precision.md",
    )
    run.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batched mode: VAD speech pieces of all inputs decoded N at a time",
    )
    run.add_argument(
        "--vad-filter", action="store_true", help="drop non-speech first (sequential mode)"
    )
    run.add_argument(
        "--multilingual",
        action="store_true",
        help="detect each window's (piece's) language: speech that changes language",
    )
    run.add_argument(
        "--clip-timestamps",
        default=None,
        help="only these parts, in seconds: start,end,start,end,... (sequential mode)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or text on stdout")
    convert = commands.add_parser(
        "convert",
        help="convert a model between formats",
        description="Load any preset handle (a built-in name, a folder or file of any "
        "supported format, hf:// or kaggle://) and write it as a keras-whisper preset or "
        "in another implementation's format.",
    )
    convert.add_argument("source", help="preset name, folder, file or hub handle")
    convert.add_argument("target", help="the folder (preset, transformers, ctranslate2) or file")
    convert.add_argument(
        "--to",
        default="preset",
        choices=("preset", *EXPORT_FORMATS),
        help="what to write (default: a keras-whisper preset folder)",
    )
    convert.add_argument(
        "--dtype",
        default=None,
        choices=("float16", "float32"),
        help="ggml and mlx only: float16 (default, their published layout) or float32",
    )
    convert.add_argument("--overwrite", action="store_true", help="replace an existing target")
    return parser


def convert_main(args: argparse.Namespace) -> int:
    """`keras-whisper convert`: any preset handle to a preset or a foreign checkpoint."""
    if args.dtype and args.to not in ("ggml", "mlx"):
        print("keras-whisper: --dtype is for --to ggml or mlx.", file=sys.stderr)
        return 2
    from keras_whisper.converters import export_checkpoint
    from keras_whisper.speech_to_text import WhisperSpeechToText

    try:
        model = WhisperSpeechToText.from_preset(args.source)
    except Exception as error:
        print(f"keras-whisper: cannot load {args.source!r}: {error}", file=sys.stderr)
        return 1
    try:
        if args.to == "preset":
            model.save_to_preset(args.target, overwrite=args.overwrite)
        else:
            export_checkpoint(
                model.backbone,
                args.target,
                args.to,
                overwrite=args.overwrite,
                tokenizer=model.tokenizer,
                dtype=args.dtype,
                alignment_heads=model.alignment_heads,
            )
    except Exception as error:
        message = str(error).replace("overwrite=True", "--overwrite")  # the flag's name here
        print(f"keras-whisper: cannot write {args.target!r}: {message}", file=sys.stderr)
        return 1
    print(f"{args.source} -> {args.target} ({args.to})", file=sys.stderr)
    return 0


def _given(value) -> bool:
    """Whether an option was given: not its default `None`, nor an unset flag (`False`).
    A given 0 stays, to be checked like any other value."""
    return value is not None and value is not False


def _output_paths(inputs: list[str], output_dir: Path, formats) -> dict[str, dict[Path, str]]:
    """Each input's `{output file: format}`; `ValueError` if an output would replace an
    input or two inputs would write the same file (same name in different folders)."""
    inputs_resolved = {Path(path).resolve(): path for path in inputs}
    owners: dict[Path, str] = {}
    outputs = {}
    for path in inputs:
        files = {output_dir / f"{Path(path).stem}.{fmt}": fmt for fmt in formats}
        for file in files:
            resolved = file.resolve()
            if resolved in inputs_resolved:
                raise ValueError(
                    f"the transcript {file} would overwrite the input "
                    f"{inputs_resolved[resolved]}: choose another --output-dir or "
                    "--output-format."
                )
            if resolved in owners and owners[resolved] != path:
                raise ValueError(
                    f"{owners[resolved]} and {path} would both write {file}: transcribe "
                    "them into different --output-dir folders."
                )
            owners[resolved] = path
        outputs[path] = files
    return outputs


def _prepare_output_dir(output_dir: Path) -> None:
    """Make `output_dir` before any work, or say why it cannot be used."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {output_dir} is a file, not a folder.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"--output-dir {output_dir} cannot be made: {error.strerror or error}."
        ) from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--output-dir {output_dir} is not writable.")


def _optional_float(value: str) -> float | None:
    """A number, or `None` for 'none' (a threshold turned off)."""
    return None if value.strip().lower() == "none" else float(value)


def _configure_runtime(backend: str | None, threads: int | None) -> None:
    """Backend and threads: must happen before Keras (or a backend) is imported."""
    if backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != backend:
            raise SystemExit("--backend must be chosen before Keras is imported.")
        os.environ["KERAS_BACKEND"] = backend
    if threads is not None:
        if threads < 1:
            raise ValueError("--threads must be at least 1.")
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[variable] = str(threads)
        if hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, cores[:threads])


def _temperatures(start: float, increment: float) -> tuple[float, ...]:
    if increment <= 0:
        return (start,)
    values, t = [], start
    while t <= 1.0 + 1e-6:
        values.append(round(t, 6))
        t += increment
    return tuple(values) or (start,)


def _sequential_options(args, temperatures) -> dict:
    """The sequential mode's options from the command line (beside the decoding ones)."""
    return {
        "language": args.language,
        "task": args.task,
        "temperature": temperatures,
        "initial_prompt": args.initial_prompt,
        "carry_initial_prompt": args.carry_initial_prompt,
        "condition_on_previous_text": args.condition_on_previous_text,
        "vad_filter": args.vad_filter,
        "seed": args.seed,
        "word_timestamps": args.word_timestamps,
        "hallucination_silence_threshold": args.hallucination_silence_threshold,
        "compression_ratio_threshold": args.compression_ratio_threshold,
        "clip_timestamps": args.clip_timestamps,
    }


def _sequential(model, path, args, temperatures, decode_options):
    """One input through the seek loop, with a progress bar over its audio time; the
    result, or the exception it raised."""
    from tqdm import tqdm

    from keras_whisper.transcription import TranscriptionResult

    try:
        segments, info = model.transcribe_segments(
            path, **_sequential_options(args, temperatures), **decode_options
        )
        bar = tqdm(
            total=round(info.duration, 2),
            unit="s",
            desc=Path(path).name,
            disable=args.quiet,
            file=sys.stderr,
        )
        collected = []
        done = 0.0
        for segment in segments:
            collected.append(segment)
            bar.update(round(max(min(segment.end, info.duration) - done, 0.0), 2))
            done = max(done, min(segment.end, info.duration))
            if not args.quiet:
                tqdm.write(f"[{segment.start:7.2f} --> {segment.end:7.2f}] {segment.text.strip()}")
        bar.update(max(round(info.duration - done, 2), 0))
        bar.close()
        return TranscriptionResult(
            text="".join(s.text for s in collected).strip(),
            language=info.language,
            language_probability=info.language_probability,
            segments=collected,
            duration=info.duration,
        )
    except Exception as error:  # reported by the caller, which goes on with the rest
        return error


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "convert":
        return convert_main(args)
    subtitle_layout = {
        "highlight_words": args.highlight_words,
        "max_line_width": args.max_line_width,
        "max_line_count": args.max_line_count,
        "max_words_per_line": args.max_words_per_line,
    }
    subtitle_layout = {k: v for k, v in subtitle_layout.items() if _given(v)}
    if subtitle_layout and not args.word_timestamps:
        flags = ", ".join("--" + k.replace("_", "-") for k in subtitle_layout)
        print(f"keras-whisper: {flags} lay out words: add --word-timestamps.", file=sys.stderr)
        return 2
    if args.clip_timestamps is not None and args.batch_size is not None:
        print(
            "keras-whisper: --clip-timestamps is for the sequential mode (the batched mode "
            "finds the speech with VAD): drop --batch-size or --clip-timestamps.",
            file=sys.stderr,
        )
        return 2
    try:
        _configure_runtime(args.backend, args.threads)
    except ValueError as error:
        print(f"keras-whisper: {error}", file=sys.stderr)
        return 2
    if args.threads is not None and (args.backend or os.environ.get("KERAS_BACKEND")) == "torch":
        import torch

        torch.set_num_threads(args.threads)

    from keras_whisper.speech_to_text import WhisperSpeechToText
    from keras_whisper.transcription import parse_clip_timestamps
    from keras_whisper.writers import write_results

    try:
        parse_clip_timestamps(args.clip_timestamps)
    except ValueError as error:
        print(f"keras-whisper: --clip-timestamps: {error}", file=sys.stderr)
        return 2
    formats = OUTPUT_FORMATS if args.output_format == "all" else (args.output_format,)
    output_dir = Path(args.output_dir)
    # Before any model is loaded or audio decoded: where the transcripts go.
    try:
        outputs = _output_paths(args.audio, output_dir, formats)
        _prepare_output_dir(output_dir)
    except ValueError as error:
        print(f"keras-whisper: {error}", file=sys.stderr)
        return 2

    overrides = {"dtype": args.dtype} if args.dtype else {}
    try:
        model = WhisperSpeechToText.from_preset(args.preset, **overrides)
    except Exception as error:  # a clear message, not a traceback, for a bad preset
        print(f"keras-whisper: cannot load preset {args.preset!r}: {error}", file=sys.stderr)
        return 2
    decode_options = {
        "beam_size": args.beam_size,
        "best_of": args.best_of,
        "patience": args.patience,
        "length_penalty": args.length_penalty,
        "hotwords": args.hotwords,
        "repetition_penalty": args.repetition_penalty,
        "no_repeat_ngram_size": args.no_repeat_ngram_size,
        "without_timestamps": args.without_timestamps,
    }
    failures = 0
    temperatures = _temperatures(args.temperature, args.temperature_increment)
    decode_options = {k: v for k, v in decode_options.items() if _given(v)}
    # Options both modes take (not all of them decoding options).
    decode_options |= {
        "multilingual": args.multilingual,
        "suppress_tokens": args.suppress_tokens,
        "no_speech_threshold": args.no_speech_threshold,
        "logprob_threshold": args.logprob_threshold,
    }
    punctuations = {
        "prepend_punctuations": args.prepend_punctuations,
        "append_punctuations": args.append_punctuations,
    }
    decode_options |= {k: v for k, v in punctuations.items() if v is not None}
    if args.batch_size is not None:
        if args.batch_size < 1:
            print("keras-whisper: --batch-size must be at least 1.", file=sys.stderr)
            return 2
        decode_options.pop("best_of", None)  # no temperature fallback in the batched mode
        try:  # the options are checked here, before any input is read
            outcomes = model.transcribe_many(
                args.audio,
                batch_size=args.batch_size,
                language=args.language,
                task=args.task,
                temperature=temperatures[0],
                initial_prompt=args.initial_prompt,
                progress=None,
                seed=args.seed,
                word_timestamps=args.word_timestamps,
                **decode_options,
            )
        except (ValueError, ImportError) as error:  # bad options, or no VAD installed
            print(f"keras-whisper: {error}", file=sys.stderr)
            return 2
    else:
        try:  # the options once, before the first input, rather than once per input
            model.check_transcribe_options(
                **_sequential_options(args, temperatures), **decode_options
            )
        except ValueError as error:
            print(f"keras-whisper: {error}", file=sys.stderr)
            return 2
        outcomes = (
            (path, _sequential(model, path, args, temperatures, decode_options))
            for path in args.audio
        )
    from keras_whisper.errors import OutOfMemoryError

    try:
        for path, result in outcomes:
            try:
                if isinstance(result, Exception):
                    raise result
                write_results(result, outputs[path], **subtitle_layout)
                if args.batch_size is not None and not args.quiet:
                    print(f"{path}: {result.text}")
            except Exception as error:
                failures += 1
                print(f"keras-whisper: {path}: {type(error).__name__}: {error}", file=sys.stderr)
    except OutOfMemoryError as error:  # the batch did not fit: the message says what to try
        print(f"keras-whisper: {error}", file=sys.stderr)
        return 1
    if failures:
        print(f"keras-whisper: {failures} of {len(args.audio)} inputs failed.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
