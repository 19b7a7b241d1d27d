"""A benchmark worker: one engine and one model in a long-lived process of its own.

The driver (`run.py`) starts it with the thread settings in the environment
and talks to it in JSON lines: one request per line on stdin, one answer per
line on the process's original stdout. Anything the libraries print goes to
stderr (the driver's per-worker log). Every answer has `ok`; failures carry
the traceback in `error` and the worker stays usable.

Requests (`op`): `import`, `load`, `transcribe` (`file`, `config`),
`trace_counts`, `setup_model_level`, `encoder`, `decoder_step`, `reset_peak`,
`memory`, `roofline` (`seconds`), `quit`.

`python benchmarks/worker.py --prepare MODEL` converts the built-in preset into
the user cache if needed and exports its weights for openai-whisper and
transformers (see `data.export_checkpoints`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any, TextIO


def pin_cpus() -> list[int]:
    """Restrict this process to the benchmark's CPUs (`processes.benchmark_cpus`).

    Thread-count settings do not bind every library (XLA sizes its pool from
    the machine), so the affinity mask is what guarantees 2 cores.
    """
    from processes import benchmark_cpus

    chosen = benchmark_cpus()
    os.sched_setaffinity(0, chosen)
    return chosen


def memory_mb() -> dict[str, float]:
    """Peak (VmHWM) and current (VmRSS) resident set size of this process, in MiB."""
    values: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values["peak_mb" if key == "VmHWM" else "rss_mb"] = int(rest.split()[0]) / 1024
    return values


def reset_peak_memory() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


class Worker:
    """Answers the driver's requests for one engine."""

    def __init__(self, engine_key: str | None, model_key: str | None):
        self.engine = None
        if engine_key:
            from data import MODELS
            from engines import ENGINES

            self.engine = ENGINES[engine_key](MODELS[model_key])
        self._audio: dict[str, Any] = {}

    def _waveform(self, path: str):
        if path not in self._audio:
            from data import read_wav

            self._audio[path] = read_wav(path)
        return self._audio[path]

    def handle(self, request: dict) -> dict:
        op = request["op"]
        engine = self.engine
        if op == "import":
            return {"seconds": _timed(engine.import_modules)}
        if op == "load":
            return {"seconds": _timed(engine.load)}
        if op == "transcribe":
            from engines import DECODE_CONFIGS

            audio = self._waveform(request["file"])
            config = DECODE_CONFIGS[request["config"]]
            start = time.perf_counter()
            text = engine.transcribe(audio, config)
            return {"seconds": time.perf_counter() - start, "text": text}
        if op == "trace_counts":
            return {"counts": engine.trace_counts()}
        if op == "setup_model_level":
            return {"seconds": _timed(engine.setup_model_level), "label": engine.label}
        if op == "encoder":
            return {"seconds": engine.encoder_seconds()}
        if op == "decoder_step":
            return {"seconds": engine.decoder_step_seconds()}
        if op == "reset_peak":
            reset_peak_memory()
            return {}
        if op == "memory":
            return memory_mb()
        if op == "roofline":
            import roofline

            return roofline.measure_machine(request.get("repeats", 5))
        if op == "label":
            return {"label": engine.label}
        raise ValueError(f"unknown request {op!r}")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _send(channel: TextIO, message: dict) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="engine key (engines.ENGINES); none for roofline")
    parser.add_argument("--model", help="model key (data.MODELS)")
    parser.add_argument(
        "--prepare", metavar="MODEL", help="convert the preset, export checkpoints and exit"
    )
    args = parser.parse_args(argv)

    cpus = pin_cpus()
    if args.prepare:
        from data import MODELS, export_checkpoints

        export_checkpoints(MODELS[args.prepare])
        return 0

    # Answers go to a private copy of stdout; fd 1 (library prints) goes to stderr.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        worker = Worker(args.engine, args.model)
    except Exception:
        _send(channel, {"ok": False, "error": traceback.format_exc()})
        return 1
    _send(channel, {"ok": True, "ready": True, "pid": os.getpid(), "cpus": cpus})
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            answer = {"ok": True, **worker.handle(request)}
        except Exception:
            answer = {"ok": False, "error": traceback.format_exc()}
        _send(channel, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
