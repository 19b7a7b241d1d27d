"""Times Silero VAD on one file: ours (the current KERAS_BACKEND) or silero-vad's reference.

    python tests/bench_vad.py reference AUDIO.wav   # saves silero's probabilities in $TMPDIR
    python tests/bench_vad.py ours AUDIO.wav        # then compares against them

`reference` times silero-vad's PyTorch model in its chunk loop, its ONNX model
(`OnnxWrapper.audio_forward`) and its sequence ONNX export on all windows at once (how
faster-whisper runs the VAD), each on one thread as silero-vad and faster-whisper set them.
`ours` times `SileroVAD.speech_probabilities` (first call with compilation, then the median of
5). Each prints one JSON line. Needs silero-vad, torch and onnxruntime for `reference`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile


def _median_seconds(fn, runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference(audio: np.ndarray, target: Path) -> dict:
    import onnxruntime
    import silero_vad
    import torch
    from silero_vad.utils_vad import OnnxWrapper

    torch.set_num_threads(1)
    model = silero_vad.load_silero_vad()

    def chunk_loop():
        model.reset_states()
        waveform = torch.from_numpy(audio)
        probs = []
        with torch.no_grad():
            for start in range(0, len(waveform), 512):
                chunk = waveform[start : start + 512]
                chunk = torch.nn.functional.pad(chunk, (0, 512 - len(chunk)))
                probs.append(model(chunk, 16000).item())
        return np.asarray(probs, np.float32)

    np.save(target, chunk_loop())
    data = os.path.join(os.path.dirname(silero_vad.__file__), "data")
    wrapper = OnnxWrapper(os.path.join(data, "silero_vad_16k_op15.onnx"), force_onnx_cpu=True)
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        os.path.join(data, "silero_vad_16k_sequence.onnx"),
        providers=["CPUExecutionProvider"],
        sess_options=options,
    )
    chunks = -(-len(audio) // 512)
    padded = np.zeros(64 + 512 * chunks, np.float32)
    padded[64 : 64 + len(audio)] = audio
    windows = np.lib.stride_tricks.sliding_window_view(padded, 576)[::512].copy()
    zeros = np.zeros((1, 1, 128), np.float32)
    return {
        "silero_torch_chunk_loop_s": _median_seconds(chunk_loop, 3),
        "silero_onnx_chunk_loop_s": _median_seconds(
            lambda: wrapper.audio_forward(torch.from_numpy(audio), 16000), 3
        ),
        "silero_sequence_onnx_one_call_s": _median_seconds(
            lambda: session.run(None, {"input": windows, "h": zeros, "c": zeros})
        ),
    }


def ours(audio: np.ndarray, target: Path) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "jax")  # keras_whisper's default, set before Keras
    import keras

    from keras_whisper import vad

    detector = vad.SileroVAD.from_package()
    start = time.perf_counter()
    probs = detector.speech_probabilities(audio)
    first = time.perf_counter() - start
    result = {
        "backend": keras.backend.backend(),
        "first_call_s": first,
        "steady_s": _median_seconds(lambda: detector.speech_probabilities(audio)),
    }
    if target.is_file():
        result["max_abs_diff_vs_silero"] = float(np.abs(probs - np.load(target)).max())
    return result


def main() -> None:
    which, path = sys.argv[1], Path(sys.argv[2])
    audio, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000 and audio.ndim == 1, "a 16 kHz mono file"
    target = Path(tempfile.gettempdir()) / f"{path.stem}.silero_probs.npy"
    result = {"which": which, "file": path.name, "seconds": len(audio) / 16000}
    result.update(reference(audio, target) if which == "reference" else ours(audio, target))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
