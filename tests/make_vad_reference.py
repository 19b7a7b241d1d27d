"""Writes tests/data/vad_reference.npz with the reference implementations (not our code).

- `probs/<file>`: speech probabilities of silero-vad's own PyTorch model (`load_silero_vad()`,
  the TorchScript file `silero_vad.jit` of silero-vad 6.2.3), chunk by chunk exactly as
  silero-vad's `get_speech_timestamps` runs it (state reset, 512-sample chunks, the last one
  zero-padded; the model keeps the 64-sample context itself).
- `ts/<file>/<k>`: faster-whisper 1.2.1's `get_speech_timestamps` with the option set
  `OPTIONS[k]`, run on those probabilities (its VAD model replaced by one returning them),
  as `(segments, 2)` int64 `[start, end]` samples.
- `collect/<file>/<k>`: faster-whisper's `collect_chunks(audio, segments, max_duration=30)`:
  per piece `[offset, duration, samples]`.
- `map/<file>/<k>` (`k` in `MAP_OPTIONS`): rows `t`, faster-whisper's `SpeechTimestampsMap(segments, 16000)`
  `.get_original_time(t)` and `.get_original_time(t, is_end=True)`, for `t` on a grid and at
  each segment's end on the speech timeline.

Run from the repository root with silero-vad 6.2.3, torch and faster-whisper 1.2.1 installed:

    python tests/make_vad_reference.py /path/to/shared/audio
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import soundfile

OPTIONS = [
    {},
    {"min_silence_duration_ms": 100, "speech_pad_ms": 30},
    {"max_speech_duration_s": 5, "min_silence_duration_ms": 300, "speech_pad_ms": 100},
    {"max_speech_duration_s": 30},
    {
        "threshold": 0.7,
        "min_speech_duration_ms": 250,
        "min_silence_duration_ms": 500,
        "max_speech_duration_s": 3,
        "speech_pad_ms": 200,
    },
    {
        "threshold": 0.3,
        "neg_threshold": 0.2,
        "max_speech_duration_s": 1.5,
        "min_silence_duration_ms": 50,
        "speech_pad_ms": 0,
    },
]
MAP_TIMES = np.round(np.arange(0.0, 120.0, 1.13), 2)
MAP_OPTIONS = (5,)  # option sets whose time maps are stored


def silero_probabilities(model, audio: np.ndarray) -> np.ndarray:
    import torch

    model.reset_states()
    waveform = torch.from_numpy(audio)
    probs = []
    for start in range(0, len(waveform), 512):
        chunk = waveform[start : start + 512]
        if len(chunk) < 512:
            chunk = torch.nn.functional.pad(chunk, (0, 512 - len(chunk)))
        probs.append(model(chunk, 16000).item())
    return np.asarray(probs, np.float32)


def main(audio_dir: str) -> None:
    import faster_whisper
    import faster_whisper.vad as fw_vad
    import silero_vad
    import torch

    torch.set_num_threads(1)
    model = silero_vad.load_silero_vad()
    files = sorted(Path(audio_dir).glob("*.wav")) + sorted(
        Path(audio_dir).glob("no_reference/*.wav")
    )
    out = {
        "producer": np.array(
            f"silero-vad {silero_vad.__version__} load_silero_vad() (silero_vad.jit) on torch "
            f"{torch.__version__}; timestamps by faster-whisper {faster_whisper.__version__}"
        ),
        "options": np.array(json.dumps(OPTIONS)),
    }
    for path in files:
        audio, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000 and audio.ndim == 1, path
        name = path.stem
        probs = silero_probabilities(model, audio)
        out[f"probs/{name}"] = probs
        out[f"samples/{name}"] = np.array(len(audio))

        class Fixed:
            def __call__(self, padded, probs=probs):
                return probs[:, None]

        for k, options in enumerate(OPTIONS):
            with mock.patch.object(fw_vad, "get_vad_model", lambda: Fixed()):
                segments = fw_vad.get_speech_timestamps(audio, fw_vad.VadOptions(**options))
            out[f"ts/{name}/{k}"] = np.array(
                [[s["start"], s["end"]] for s in segments], np.int64
            ).reshape(-1, 2)
            if not segments:
                continue
            pieces, metadata = fw_vad.collect_chunks(audio, [dict(s) for s in segments], 16000, 30)
            out[f"collect/{name}/{k}"] = np.array(
                [
                    [m["offset"], m["duration"], len(p)]
                    for p, m in zip(pieces, metadata, strict=True)
                ]
            )
            if k not in MAP_OPTIONS:
                continue
            timeline = fw_vad.SpeechTimestampsMap(segments, 16000)
            # The grid, plus each segment's end on the speech timeline (the `is_end` case).
            times = np.concatenate([MAP_TIMES, np.array(timeline.chunk_end_sample) / 16000])
            out[f"map/{name}/{k}"] = np.array(
                [
                    times,
                    [timeline.get_original_time(float(t)) for t in times],
                    [timeline.get_original_time(float(t), is_end=True) for t in times],
                ]
            )
        print(name, len(probs), [len(out[f"ts/{name}/{k}"]) for k in range(len(OPTIONS))])
    target = Path(__file__).parent / "data" / "vad_reference.npz"
    np.savez_compressed(target, **out)
    print("wrote", target, target.stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/audio")
