"""Write tests/data/subtitles_reference.json: openai-whisper's srt and vtt files.

openai-whisper's writers (`whisper.utils.WriteSRT` / `WriteVTT`, pip install
openai-whisper==20250625) lay out the word-timestamped transcripts of
tests/data/word_timestamps_reference.jsonl (faster-whisper's) with each set of
subtitle options; the tests give the same transcripts to our writers.

    python tests/make_subtitles_reference.py
"""

from __future__ import annotations

import io
import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
# (reference row: preset, file, mode) whose transcript is laid out.
TRANSCRIPTS = [
    ("whisper_tiny_en", "en_sonnet001_long.wav", "sequential"),
    ("whisper_base_multi", "ru_0002.wav", "sequential"),
]
LAYOUTS = {
    "default": {},
    "highlight": {"highlight_words": True},
    "width42_lines2": {"max_line_width": 42, "max_line_count": 2},
    "width42": {"max_line_width": 42},
    "words5": {"max_words_per_line": 5},
    "width30_lines1_highlight": {
        "max_line_width": 30,
        "max_line_count": 1,
        "highlight_words": True,
    },
}


def main() -> None:
    import whisper
    from whisper.utils import WriteSRT, WriteVTT

    rows = {}
    with open(DATA / "word_timestamps_reference.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            rows[row["preset"], row["file"], row["mode"]] = row
    cases = []
    for key in TRANSCRIPTS:
        result = {"text": "", "segments": rows[key]["segments"]}
        for name, layout in LAYOUTS.items():
            files = {}
            for extension, writer in (("srt", WriteSRT), ("vtt", WriteVTT)):
                out = io.StringIO()
                writer(".").write_result(result, out, **layout)
                files[extension] = out.getvalue()
            cases.append({"transcript": list(key), "layout": name, "options": layout} | files)
    reference = {"implementation": f"openai-whisper {whisper.__version__}", "cases": cases}
    text = json.dumps(reference, ensure_ascii=False, indent=1) + "\n"
    (DATA / "subtitles_reference.json").write_text(text, encoding="utf-8")
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
