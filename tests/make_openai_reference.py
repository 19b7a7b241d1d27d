"""Write tests/data/openai_whisper_reference.jsonl: openai-whisper's own transcripts.

faster-whisper's beam search (CTranslate2) is not OpenAI's, so where the two disagree
our beam-search transcripts are checked against openai-whisper itself; so are the options
only openai-whisper has (`carry_initial_prompt`). This script runs
openai-whisper (pip install openai-whisper==20250625) on the weights of our built-in
presets, exported to OpenAI's checkpoint format, and stores its segments.

    python tests/make_openai_reference.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA.parents[1] / "src"))

CARRIED_PROMPT = "sonnet one, from fairest creatures we desire increase, no punctuation at all"
CASES = [
    # (preset, file, transcribe() options)
    ("whisper_base_multi", "en_sonnet001_long.wav", {"beam_size": 5, "language": "en"}),
    # A carried prompt without the previous text: the prompt alone reaches window 2.
    (
        "whisper_tiny_en",
        "en_sonnet001_long.wav",
        {
            "language": "en",
            "initial_prompt": CARRIED_PROMPT,
            "carry_initial_prompt": True,
            "condition_on_previous_text": False,
        },
    ),
]
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def main() -> None:
    import torch
    import whisper

    from keras_whisper import WhisperBackbone
    from keras_whisper.converters import export_checkpoint

    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, name, options in CASES:
            checkpoint = Path(tmp, f"{preset}.pt")
            if not checkpoint.exists():
                export_checkpoint(WhisperBackbone.from_preset(preset), checkpoint, "openai")
            model = whisper.load_model(str(checkpoint), device="cpu")
            result = model.transcribe(
                str(DATA / name), temperature=TEMPERATURES, fp16=False, **options
            )
            segments = [
                {key: s[key] for key in ("seek", "start", "end", "text", "tokens", "temperature")}
                | {"avg_logprob": s["avg_logprob"]}
                for s in result["segments"]
            ]
            rows.append(
                {
                    "implementation": f"openai-whisper {whisper.__version__}",
                    "preset": preset,
                    "file": name,
                    "options": options,
                    "text": result["text"].strip(),
                    "segments": segments,
                }
            )
    with open(DATA / "openai_whisper_reference.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
