"""Benchmark keras-whisper against its peers on CPU and rewrite BENCHMARKS.md.

    python benchmarks/run.py                   # every section, tiny.en and base
    python benchmarks/run.py --quick           # jfk, tiny.en, 1 warm-up + 2 runs
    python benchmarks/run.py --only e2e,coldstart --models base

Sections: `e2e` (whole files, wall time, RTF, peak RSS, WER), `model` (encoder
forward, cached decoder step), `roofline` (the machine's GEMM and copy rates,
our fraction of them), `coldstart` (fresh process to first transcript,
recompilations). Each engine runs in its own worker process (`worker.py`)
pinned to 2 CPUs with 2 threads; the driver sends the same request to each
engine in turn, so their timed runs interleave. Progress goes to stderr; the
tables to BENCHMARKS.md (only the blocks measured are replaced) and the raw
results to `<cache>/results/*.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import data
import report
from data import MODELS, AudioInput, ModelSpec
from engines import (
    BATCHED_ENGINES,
    COLDSTART_ENGINES,
    DECODE_CONFIGS,
    E2E_ENGINES,
    E2E_ON_REQUEST,
    ENGINES,
    MODEL_ENGINES,
    PROMPT_LENGTH,
)
from processes import WorkerError, WorkerProcess, benchmark_cpus, run_prepare
from roofline import decoder_step_bytes, encoder_flops

SECTIONS = ("e2e", "batched", "model", "roofline", "coldstart")
# The batched section (issue 8): the ~10-minute file in the batched setups, and
# keras-whisper's sequential greedy mode on it for reference.
BATCHED_FILES = [data.LONG_NAME]
BATCHED_REFERENCE = ("greedy", ("kw-jax",))
COLD_FILES = {"first": "en_jfk", "second": "en_librivox_0870", "long": "en_sonnet001_long"}
STEP_SAMPLES_PER_RUN = 10  # decoder steps are short: ten samples per "run"


@dataclasses.dataclass
class Settings:
    """What to measure and how often (from the command line)."""

    sections: list[str]
    models: list[str]
    files: list[str]
    batched_files: list[str]
    configs: list[str]
    engines: list[str] | None
    warmup: int
    runs: int
    cold_runs: int
    output: Path
    quick: bool
    command: str


def log(message: str) -> None:
    """Progress on stderr with a timestamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def chosen(keys: Sequence[str], settings: Settings) -> list[str]:
    """The engines of a section that `--engines` allows."""
    return [k for k in keys if settings.engines is None or k in settings.engines]


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------


def start_workers(
    keys: Sequence[str], model: ModelSpec, setup: str
) -> tuple[dict[str, WorkerProcess], dict[str, str], dict[str, str]]:
    """Start one worker per engine and import + load (`setup="load"`) or set up model level.

    Returns:
        `(workers, labels, errors)`: the running workers, every engine's label,
        and the error of each engine that failed to start.
    """
    workers: dict[str, WorkerProcess] = {}
    labels: dict[str, str] = {}
    errors: dict[str, str] = {}
    for key in keys:
        engine = ENGINES[key](model)
        labels[key] = engine.label
        try:
            worker = WorkerProcess(key, model.key, engine.keras_backend)
        except WorkerError as e:
            errors[key] = str(e)
            log(f"{key}: failed to start: {report.failure(str(e))}")
            continue
        try:
            worker.request("import", timeout=600)
            if setup == "load":
                seconds = worker.request("load", timeout=900)["seconds"]
            else:
                answer = worker.request("setup_model_level", timeout=1200)
                labels[key], seconds = answer["label"], answer["seconds"]
            log(f"{key} ({model.key}) ready: {setup} {seconds:.1f} s")
            workers[key] = worker
        except WorkerError as e:
            errors[key] = str(e)
            log(f"{key}: {setup} failed: {report.failure(str(e))}")
            worker.close(kill=True)
    return workers, labels, errors


# Idle time before each request when engines interleave. All workers share the same 2 CPUs,
# and thread pools keep spinning for a while after their work (Intel OpenMP 200 ms by
# default, OpenBLAS about 0.1 s): without a pause, the engine that ran before takes CPU
# time from the one being timed (seen: our encoder 172 ms a window alone, 216 ms right
# after a NumPy matrix product).
SETTLE_SECONDS = 0.5


def interleave(
    workers: dict[str, WorkerProcess],
    errors: dict[str, str],
    op: str,
    warmup: int,
    runs: int,
    timeout: float,
    progress: str = "",
    **fields,
) -> dict[str, list[dict]]:
    """Send `op` to every worker in turn, `warmup + runs` rounds; keep the timed answers.

    An engine that fails (or failed before: in `errors`) is recorded in `errors`
    and skipped for the rest of the call.
    """
    answers: dict[str, list[dict]] = {key: [] for key in workers}
    for round_index in range(warmup + runs):
        for key, worker in workers.items():
            if key in errors:
                continue
            if len(workers) > 1:
                time.sleep(SETTLE_SECONDS)
            try:
                answer = worker.request(op, timeout=timeout, **fields)
            except WorkerError as e:
                errors[key] = str(e)
                log(f"{progress} {key}: {report.failure(str(e))}")
                continue
            if round_index >= warmup:
                answers[key].append(answer)
            if progress:
                kind = "warm-up" if round_index < warmup else f"run {round_index - warmup + 1}"
                log(f"{progress} {key} {kind}: {answer['seconds']:.3f} s")
    return answers


def close_all(workers: dict[str, WorkerProcess]) -> None:
    for worker in workers.values():
        worker.close()


_PREPARED: set[str] = set()


def prepare(model: ModelSpec) -> None:
    """Once per run and model: convert the preset into the user cache if needed, export
    our weights for openai-whisper / transformers, join CTranslate2 parts.

    Done in a worker process (it needs Keras) before anything is timed, so that no
    load or cold start includes a first-time conversion.
    """
    if model.key in _PREPARED:
        return
    log(f"preparing {model.key} (preset cache, exports for openai-whisper/transformers) ...")
    run_prepare(model.key)
    model.ct2_dir()
    _PREPARED.add(model.key)


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def run_e2e(
    model: ModelSpec,
    settings: Settings,
    configs: Sequence[str],
    files: Sequence[str],
    only: dict[str, Sequence[str]] | None = None,
) -> list[report.E2ERow]:
    """Whole files with every (setup, engine), engines interleaved.

    `only` maps a setup to the engines that run it (default: all that can).
    """
    from wer import word_error_rate

    keys = chosen(E2E_ENGINES, settings)
    keys += [k for k in E2E_ON_REQUEST if settings.engines and k in settings.engines]
    prepare(model)
    audio_inputs: list[AudioInput] = data.inputs(list(files))
    workers, labels, start_errors = start_workers(keys, model, "load")
    rows: list[report.E2ERow] = []
    try:
        for audio in audio_inputs:
            for config in configs:
                errors = dict(start_errors)
                for key in keys:
                    if DECODE_CONFIGS[config].batch_size and key not in BATCHED_ENGINES:
                        errors.setdefault(key, "not run")
                    if only and config in only and key not in only[config]:
                        errors.setdefault(key, "not run")
                request = {
                    "op": "transcribe",
                    "timeout": 900 + 30 * audio.seconds,
                    "progress": f"e2e {model.key} {audio.name} {config}",
                    "file": str(audio.path),
                    "config": config,
                }
                interleave(workers, errors, warmup=settings.warmup, runs=0, **request)
                # Peak RSS of the timed runs only (not of first-time compilation).
                for key, worker in workers.items():
                    try:
                        worker.request("reset_peak")
                    except WorkerError as e:
                        errors.setdefault(key, str(e))
                answers = interleave(workers, errors, warmup=0, runs=settings.runs, **request)
                for key in keys:
                    if errors.get(key) == "not run":
                        continue
                    timed = answers.get(key, [])
                    text = timed[-1]["text"] if timed else ""
                    peak = None
                    if key in workers and key not in errors:
                        peak = workers[key].request("memory")["peak_mb"]
                    rows.append(
                        report.E2ERow(
                            audio=audio.name,
                            audio_seconds=audio.seconds,
                            config=config,
                            engine=key,
                            label=labels[key],
                            times=[a["seconds"] for a in timed],
                            peak_mb=peak,
                            wer=word_error_rate(audio.reference, text) if timed else None,
                            text=text,
                            error=errors.get(key),
                        )
                    )
    finally:
        close_all(workers)
    return rows


def run_model_level(model: ModelSpec, settings: Settings) -> list[report.ModelLevelRow]:
    """Encoder forward and one cached decoder step per engine, interleaved."""
    keys = chosen(MODEL_ENGINES, settings)
    prepare(model)
    workers, labels, errors = start_workers(keys, model, "model")
    try:
        prefix = f"model {model.key}"
        encoder = interleave(
            workers,
            errors,
            "encoder",
            max(settings.warmup, 1),
            settings.runs,
            timeout=900,
            progress=f"{prefix} encoder",
        )
        steps = interleave(
            workers,
            errors,
            "decoder_step",
            max(settings.warmup, 1) * STEP_SAMPLES_PER_RUN,
            settings.runs * STEP_SAMPLES_PER_RUN,
            timeout=300,
        )
    finally:
        close_all(workers)
    return [
        report.ModelLevelRow(
            engine=key,
            label=labels[key],
            encoder_times=[a["seconds"] for a in encoder.get(key, [])],
            step_times=[a["seconds"] for a in steps.get(key, [])],
            error=errors.get(key),
        )
        for key in keys
    ]


def run_machine(settings: Settings) -> dict[str, dict[str, float]]:
    """GEMM FLOP/s and copy bandwidth in a worker pinned like the engines."""
    with WorkerProcess(None, None) as worker:
        results = worker.request("roofline", timeout=900, repeats=max(settings.runs, 3))
    results.pop("ok", None)
    return results


def run_roofline(model: ModelSpec, settings: Settings) -> report.RooflineRow:
    """Our encoder and decoder step, timed for the roofline comparison."""
    prepare(model)
    workers, _, errors = start_workers(["kw-jax"], model, "model")
    if errors:
        raise WorkerError(errors["kw-jax"])
    try:
        prefix = f"roofline {model.key}"
        encoder = interleave(
            workers, errors, "encoder", 1, settings.runs, 900, progress=f"{prefix} encoder"
        )
        steps = interleave(
            workers,
            errors,
            "decoder_step",
            STEP_SAMPLES_PER_RUN,
            settings.runs * STEP_SAMPLES_PER_RUN,
            300,
        )
    finally:
        close_all(workers)
    if errors:
        raise WorkerError(errors["kw-jax"])
    return report.RooflineRow(
        encoder_flops=encoder_flops(model.config),
        encoder_times=[a["seconds"] for a in encoder["kw-jax"]],
        step_bytes=decoder_step_bytes(model.config, PROMPT_LENGTH),
        step_times=[a["seconds"] for a in steps["kw-jax"]],
    )


def _cold_process(key: str, model: ModelSpec, files: dict[str, AudioInput]) -> dict:
    """One fresh worker: start, import, load, then the files of `COLD_FILES` in order."""
    engine = ENGINES[key](model)
    phases: dict[str, float] = {}
    traces: dict[str, dict[str, int]] = {}
    worker = WorkerProcess(key, model.key, engine.keras_backend)
    try:
        phases["start"] = worker.start_seconds
        phases["import"] = worker.request("import", timeout=600)["seconds"]
        phases["load"] = worker.request("load", timeout=900)["seconds"]
        for phase in ("first", "second", "long"):
            audio = files[phase]
            answer = worker.request(
                "transcribe",
                timeout=900 + 30 * audio.seconds,
                file=str(audio.path),
                config="greedy",
            )
            phases[phase] = answer["seconds"]
            counts = worker.request("trace_counts")["counts"]
            if counts is not None:
                traces[phase] = counts
        phases["warm"] = worker.request(
            "transcribe", timeout=900, file=str(files["first"].path), config="greedy"
        )["seconds"]
        peak = worker.request("memory")["peak_mb"]
    finally:
        worker.close()
    return {"phases": phases, "traces": traces, "peak_mb": peak}


def run_coldstart(model: ModelSpec, settings: Settings) -> list[report.ColdStartRow]:
    """Fresh processes, engines taking turns, `cold_runs` each."""
    keys = chosen(COLDSTART_ENGINES, settings)
    prepare(model)
    files = {phase: data.shared_input(name) for phase, name in COLD_FILES.items()}
    rows = {key: report.ColdStartRow(key, ENGINES[key](model).label, {}, [], []) for key in keys}
    if "kw-jax" in keys:
        # One process first, not counted, so the compiled stages are on disk for the runs.
        try:
            _cold_process("kw-jax", model, files)
        except WorkerError as e:
            log(f"coldstart {model.key} kw-jax (filling the compilation cache): {e}")
    for run in range(settings.cold_runs):
        for key in keys:
            row = rows[key]
            if row.error:
                continue
            try:
                result = _cold_process(key, model, files)
            except WorkerError as e:
                row.error = str(e)
                log(f"coldstart {model.key} {key}: {report.failure(str(e))}")
                continue
            for phase, seconds in result["phases"].items():
                row.phases.setdefault(phase, []).append(seconds)
            row.traces.append(result["traces"])
            row.peak_mb.append(result["peak_mb"])
            summary = ", ".join(f"{k} {v:.2f}" for k, v in result["phases"].items())
            log(f"coldstart {model.key} {key} run {run + 1}: {summary}")
    return list(rows.values())


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def save_raw(name: str, payload: object) -> None:
    """Raw results (every timed run, every text) as JSON in the cache."""
    folder = data.cache_dir() / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name.replace('/', '-')}.json").write_text(json.dumps(payload, indent=1))


class CpuMeter:
    """CPU time other processes spent on the benchmark's CPUs.

    Reads the busy time of the CPUs the workers are pinned to from /proc/stat
    and subtracts this process's and its finished children's CPU time (the
    workers are finished by the end of each block), giving the average number
    of those CPUs that other processes kept busy.
    """

    def __init__(self) -> None:
        self._cpus = {f"cpu{n}" for n in benchmark_cpus()}
        self._wall = time.perf_counter()
        self._busy = self._cpus_busy()
        self._own = self._own_cpu()

    def _cpus_busy(self) -> float:
        busy = 0
        with open("/proc/stat") as stat:
            for line in stat:
                name, *fields = line.split()
                if name in self._cpus:
                    ticks = [int(v) for v in fields[:8]]
                    busy += sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_cpu() -> float:
        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total

    def foreign_cpus(self) -> float:
        """Average number of the benchmark's CPUs other processes kept busy so far."""
        wall = time.perf_counter() - self._wall
        foreign = (self._cpus_busy() - self._busy) - (self._own_cpu() - self._own)
        return max(foreign, 0.0) / max(wall, 1e-9)


def measured(
    settings: Settings,
    block_id: str,
    fn: Callable[[Callable[[], str]], str],
    blocks: dict[str, str],
) -> None:
    """Run one block's measurement and keep its Markdown in `blocks`.

    `fn(head)` measures and returns the block; `head()` gives the provenance
    line (called after measuring, so that it covers the whole measurement).
    A block that fails is logged and left out: BENCHMARKS.md keeps the old one.
    """
    meter = CpuMeter()
    log(f"--- {block_id} ---")

    def head() -> str:
        return report.provenance(settings.command, meter.foreign_cpus(), settings.quick)

    started = time.perf_counter()
    try:
        blocks[block_id] = fn(head)
    except Exception:  # one broken section must not lose the others
        log(f"--- {block_id} FAILED, block not updated ---\n{traceback.format_exc()}")
        return
    foreign = meter.foreign_cpus()
    log(
        f"--- {block_id} done in {time.perf_counter() - started:.0f} s; other processes "
        f"used {foreign:.2f} CPUs on average"
        + (" (busy machine: figures unreliable)" if foreign > report.BUSY_THRESHOLD else "")
        + " ---"
    )


def run_all(settings: Settings) -> dict[str, str]:
    """Every requested section; returns the Markdown blocks measured."""
    blocks: dict[str, str] = {"environment": report.environment_block()}
    models = [MODELS[key] for key in settings.models]
    sequential = [c for c in settings.configs if not DECODE_CONFIGS[c].batch_size]
    batched = [c for c in settings.configs if DECODE_CONFIGS[c].batch_size]

    def described(names):
        return {name: DECODE_CONFIGS[name].describe() for name in names}

    if "e2e" in settings.sections:
        for model in models:

            def e2e(head, model=model):
                rows = run_e2e(model, settings, sequential, settings.files)
                save_raw(f"e2e/{model.key}", [dataclasses.asdict(r) for r in rows])
                return report.e2e_block(model.label, rows, described(sequential), head())

            if sequential:
                measured(settings, f"e2e/{model.key}", e2e, blocks)

    if "batched" in settings.sections:
        reference, reference_engines = BATCHED_REFERENCE
        setups = [reference, *batched]
        for model in models:

            def batched_section(head, model=model):
                rows = run_e2e(
                    model,
                    settings,
                    setups,
                    settings.batched_files,
                    only={reference: reference_engines},
                )
                save_raw(f"batched/{model.key}", [dataclasses.asdict(r) for r in rows])
                return report.e2e_block(
                    model.label, rows, described(setups), head(), title="Batched transcription"
                )

            if batched:
                measured(settings, f"batched/{model.key}", batched_section, blocks)

    if "model" in settings.sections:
        for model in models:

            def model_level(head, model=model):
                rows = run_model_level(model, settings)
                save_raw(f"model/{model.key}", [dataclasses.asdict(r) for r in rows])
                return report.model_level_block(model.label, rows, head())

            measured(settings, f"model/{model.key}", model_level, blocks)

    if "roofline" in settings.sections:
        machine: dict[str, dict[str, float]] = {}

        def machine_block(head):
            machine.update(run_machine(settings))
            save_raw("roofline/machine", machine)
            return report.roofline_machine_block(machine, head())

        measured(settings, "roofline/machine", machine_block, blocks)
        for model in models:

            def roofline(head, model=model):
                row = run_roofline(model, settings)
                save_raw(f"roofline/{model.key}", dataclasses.asdict(row))
                return report.roofline_block(model.label, row, machine, head())

            measured(settings, f"roofline/{model.key}", roofline, blocks)

    if "coldstart" in settings.sections:
        for model in models:

            def coldstart(head, model=model):
                rows = run_coldstart(model, settings)
                save_raw(f"coldstart/{model.key}", [dataclasses.asdict(r) for r in rows])
                return report.coldstart_block(model.label, rows, head())

            measured(settings, f"coldstart/{model.key}", coldstart, blocks)
    return blocks


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        description="Benchmark keras-whisper against faster-whisper, openai-whisper, "
        "transformers and keras-hub on CPU (2 threads) and update BENCHMARKS.md.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="development run: jfk only, tiny.en only, 1 warm-up + 2 runs, 1 cold start",
    )
    parser.add_argument(
        "--only", type=_csv, help=f"sections, comma-separated: {','.join(SECTIONS)}"
    )
    parser.add_argument("--models", type=_csv, help=f"models: {','.join(MODELS)}")
    parser.add_argument(
        "--files",
        type=_csv,
        help=f"e2e inputs (default {','.join(data.E2E_FILES)}); names from the audio folder",
    )
    parser.add_argument("--configs", type=_csv, help=f"e2e setups: {','.join(DECODE_CONFIGS)}")
    parser.add_argument(
        "--engines",
        type=_csv,
        help="restrict to these engine keys (a block is rewritten whole: the others drop "
        f"out of it): {','.join(ENGINES)}",
    )
    parser.add_argument("--warmup", type=int, help="warm-up runs per measurement (default 1)")
    parser.add_argument("--runs", type=int, help="timed runs per measurement (default 5)")
    parser.add_argument("--cold-runs", type=int, help="fresh processes per engine (default 3)")
    parser.add_argument(
        "--output",
        type=Path,
        default=data.REPO_ROOT / "BENCHMARKS.md",
        help="the Markdown file to update (default: BENCHMARKS.md at the repository root)",
    )
    args = parser.parse_args(argv)

    def pick(value, full, quick):
        return value if value is not None else (quick if args.quick else full)

    settings = Settings(
        sections=pick(args.only, list(SECTIONS), list(SECTIONS)),
        models=pick(args.models, list(MODELS), ["tiny_en"]),
        files=pick(args.files, list(data.E2E_FILES), list(data.QUICK_FILES)),
        batched_files=pick(args.files, BATCHED_FILES, list(data.QUICK_FILES)),
        configs=pick(args.configs, list(DECODE_CONFIGS), list(DECODE_CONFIGS)),
        engines=args.engines,
        warmup=pick(args.warmup, 1, 1),
        runs=pick(args.runs, 5, 2),
        cold_runs=pick(args.cold_runs, 3, 1),
        output=args.output,
        quick=args.quick,
        command=shlex.join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
    )
    for name, values, known in (
        ("section", settings.sections, SECTIONS),
        ("model", settings.models, MODELS),
        ("config", settings.configs, DECODE_CONFIGS),
        ("engine", settings.engines or [], ENGINES),
    ):
        unknown = [v for v in values if v not in known]
        if unknown:
            parser.error(f"unknown {name}(s) {unknown}; choose from {list(known)}")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    started = time.perf_counter()
    log(
        f"sections {settings.sections}, models {settings.models}, files {settings.files}, "
        f"{settings.warmup} warm-up + {settings.runs} runs; cache {data.cache_dir()}"
    )
    blocks = run_all(settings)
    report.write_benchmarks(settings.output, blocks)
    log(f"wrote {settings.output} in {time.perf_counter() - started:.0f} s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
