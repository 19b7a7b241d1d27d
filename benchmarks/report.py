"""Markdown for BENCHMARKS.md: one block per (section, model), merged into the file.

Each block sits between `<!-- BEGIN id -->` and `<!-- END id -->` markers. A
run replaces the blocks it measured and keeps the others, so a partial run
(`--only`, `--models`) updates just its part of the file. Blocks are written
in a fixed order; every block says when, how and on what it was measured.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from data import REPO_ROOT

SECTION_ORDER = ("environment", "e2e", "e2e-latest", "model", "roofline", "coldstart")
MODEL_ORDER = ("machine", "tiny_en", "base")
# Foreign CPU load (CPUs) above which a block is flagged as measured on a busy machine.
BUSY_THRESHOLD = 0.2

PACKAGES = (
    "keras-whisper",
    "keras",
    "jax",
    "jaxlib",
    "torch",
    "numpy",
    "ctranslate2",
    "faster-whisper",
    "openai-whisper",
    "transformers",
    "keras-hub",
    "tokenizers",
)

INTRO = """\
# keras-whisper benchmarks

CPU figures for keras-whisper and its peers on the same inputs, written by

    python benchmarks/run.py            # everything (hours on 2 cores)
    python benchmarks/run.py --quick    # jfk, tiny.en, 1 warm-up + 2 runs

(peers: `pip install -r benchmarks/requirements.txt`; see `benchmarks/README.md`).
Every engine runs in its own process pinned to 2 CPUs with 2 threads, float32
unless stated; the engines take turns (A B C A B C ...) and each figure is the
median of the timed runs after the warm-up. Each block below names the command,
date and commit that produced it; blocks from `--quick` runs have too few runs
to be more than a smoke test.
"""

_BLOCK = re.compile(r"<!-- BEGIN (?P<id>[\w/.-]+) -->\n(?P<body>.*?)<!-- END (?P=id) -->\n", re.S)


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or `platform.processor()`)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def versions() -> dict[str, str]:
    """Installed versions of the packages that matter here."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit() -> str:
    """The checkout's short commit, `+dirty` when it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def environment_block() -> str:
    """Machine and library versions (of the latest run)."""
    lines = [
        "## Machine and versions (latest run)",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs "
        f"(benchmark processes pinned to 2), {memory_gib():.1f} GiB RAM",
        f"- OS: {platform.platform()}",
        "- Versions: " + ", ".join(f"{name} {version}" for name, version in versions().items()),
        "",
    ]
    return "\n".join(lines)


def provenance(command: str, foreign_cpus: float, quick: bool) -> str:
    """The line that opens every block: date, command, commit and foreign CPU load.

    Args:
        foreign_cpus: how many of the benchmark's CPUs processes other than
            the benchmark's kept busy on average (see `run.CpuMeter`).
    """
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes = []
    if foreign_cpus > BUSY_THRESHOLD:
        notes.append(
            "**The machine was busy: OpenMP-threaded engines (PyTorch, CTranslate2) slow "
            "down far more than JAX under contention, so the ratios are not reliable.**"
        )
    if quick:
        notes.append("**Quick run: too few repetitions to rely on.**")
    return (
        f"_Measured {now} on {cpu_model()} with `{command}` at commit {git_commit()}; other "
        f"processes kept {foreign_cpus:.2f} of the 2 benchmark CPUs busy on average "
        "meanwhile._ " + " ".join(notes)
    ).rstrip()


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (cells converted with `str`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    """A number with `digits` decimals (after multiplying by `scale`), or an en dash."""
    if value is None:
        return "–"
    return f"{value * scale:.{digits}f}{suffix}"


def spread(times: Sequence[float]) -> str:
    """(max - min) / median of the timed runs, as a percentage."""
    if len(times) < 2:
        return "–"
    return f"{(max(times) - min(times)) / statistics.median(times) * 100:.0f} %"


def failure(error: str) -> str:
    """The last line of a traceback, shortened for a table cell."""
    last = error.strip().splitlines()[-1] if error.strip() else "failed"
    last = last.replace("|", "/")
    return "failed: " + (last if len(last) <= 120 else last[:117] + "...")


# ---------------------------------------------------------------------------------------------
# BENCHMARKS.md
# ---------------------------------------------------------------------------------------------


def _block_key(block_id: str) -> tuple[int, int, str]:
    section, _, model = block_id.partition("/")
    s = SECTION_ORDER.index(section) if section in SECTION_ORDER else len(SECTION_ORDER)
    m = MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
    return s, m, block_id


def merge_blocks(existing: str, new_blocks: dict[str, str]) -> str:
    """The file text with `new_blocks` (id -> Markdown) replacing or joining the old ones."""
    blocks = {m.group("id"): m.group("body") for m in _BLOCK.finditer(existing)}
    blocks.update({key: body.rstrip("\n") + "\n" for key, body in new_blocks.items()})
    parts = [INTRO]
    for block_id in sorted(blocks, key=_block_key):
        parts.append(f"<!-- BEGIN {block_id} -->\n{blocks[block_id]}<!-- END {block_id} -->\n")
    return "\n".join(parts)


def write_benchmarks(path: Path, new_blocks: dict[str, str]) -> None:
    """Merge `new_blocks` into the Markdown file at `path` (created if missing)."""
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    path.write_text(merge_blocks(existing, new_blocks), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Results and their blocks
# ---------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclasses.dataclass
class E2ERow:
    """One (audio, decoding setup, engine) of the end-to-end section."""

    audio: str
    audio_seconds: float
    config: str
    engine: str
    label: str
    times: list[float]
    peak_mb: float | None = None
    wer: float | None = None
    text: str = ""
    error: str | None = None


@dataclasses.dataclass
class ModelLevelRow:
    """One engine of the model-level section."""

    engine: str
    label: str
    encoder_times: list[float]
    step_times: list[float]
    setup_seconds: float | None = None
    error: str | None = None


@dataclasses.dataclass
class RooflineRow:
    """Our encoder and decoder step against the machine's measured limits."""

    encoder_flops: float
    encoder_times: list[float]
    step_bytes: float
    step_times: list[float]


@dataclasses.dataclass
class ColdStartRow:
    """One engine of the cold-start section; each list holds one value per fresh process."""

    engine: str
    label: str
    phases: dict[str, list[float]]
    traces: list[dict[str, dict[str, int]]]
    peak_mb: list[float]
    error: str | None = None


def e2e_block(
    model_label: str,
    rows: list[E2ERow],
    configs: dict[str, str],
    head: str,
    title: str = "End-to-end transcription",
) -> str:
    """End-to-end table: one row per (audio, setup, engine)."""
    baseline = {
        (row.audio, row.config): median(row.times)
        for row in rows
        if row.engine == "kw-jax" and row.times
    }
    lines = [f"## {title}: {model_label}", "", head, ""]
    body = []
    for row in rows:
        seconds = median(row.times)
        base = baseline.get((row.audio, row.config))
        relative = seconds / base if seconds is not None and base else None
        body.append(
            [
                f"{row.audio} ({row.audio_seconds:.0f} s)",
                row.config,
                row.label,
                fmt(seconds) if not row.error else failure(row.error),
                spread(row.times),
                fmt(seconds / row.audio_seconds if seconds is not None else None, 3),
                fmt(relative, 2, suffix=" ×"),
                fmt(row.peak_mb, 0),
                fmt(row.wer, 1, 100),
            ]
        )
    header = [
        "audio",
        "decoding",
        "engine",
        "median s",
        "spread",
        "RTF",
        "time vs keras-whisper",
        "peak RSS MiB",
        "WER %",
    ]
    lines += [table(header, body), ""]
    lines += [f"- `{name}`: {description}." for name, description in configs.items()]
    lines += [
        "- Wall time of `transcribe` on a waveform already in memory (model loaded, warm); "
        "RTF = time / audio duration; spread = (max - min) / median of the timed runs.",
        "- Peak RSS: the worker process's VmHWM over the timed runs (reset after the "
        "warm-up, so first-time compilation is not in it; the loaded model and the "
        "framework are).",
        "- WER: `benchmarks/wer.py` (lowercase, punctuation stripped, numbers not spelled "
        "out) against the `.txt` reference, on the last timed run's text.",
        "- Every engine gets the same `best_of` for the windows that fall back to temperature > 0, "
        "and seeds its own sampler before each transcription (`SEED` in `benchmarks/engines.py`), "
        "so every run of an engine draws the same samples.",
        "",
    ]
    return "\n".join(lines)


def model_level_block(model_label: str, rows: list[ModelLevelRow], head: str) -> str:
    """Encoder forward and cached decoder step per engine."""
    lines = [f"## Model level: {model_label}", "", head, ""]
    baseline = next((r for r in rows if r.engine == "kw-jax" and not r.error), None)
    body = []
    for row in rows:
        enc, step = median(row.encoder_times), median(row.step_times)
        if row.error:
            body.append([row.label, failure(row.error), "", "", ""])
            continue
        enc_rel = enc / median(baseline.encoder_times) if baseline and enc else None
        step_rel = step / median(baseline.step_times) if baseline and step else None
        body.append(
            [
                row.label,
                f"{fmt(enc, 1, 1e3)} ({spread(row.encoder_times)})",
                fmt(enc_rel, 2, suffix=" ×"),
                f"{fmt(step, 2, 1e3)} ({spread(row.step_times)})",
                fmt(step_rel, 2, suffix=" ×"),
            ]
        )
    header = [
        "engine",
        "encoder ms (spread)",
        "vs keras-whisper JAX",
        "decoder step ms (spread)",
        "vs keras-whisper JAX",
    ]
    lines += [table(header, body), ""]
    lines += [
        "- Encoder: one forward pass on a 30-s window (batch 1, random log-mel input).",
        "- Decoder step: batch 1, one new token at position 32 with the self-attention "
        "cache holding 32 tokens and the cross-attention keys/values precomputed, up to "
        "the vocabulary logits. JAX engines are jitted (the cache donated), PyTorch ones "
        "eager under `no_grad`.",
        "- CTranslate2's Python API has no single step: its figure is "
        "(time of a 36-token `generate` - time of a 4-token one) / 32 on the same encoder "
        "output, so it includes its greedy search overhead.",
        "- keras-hub has no Whisper generation API: its step calls its decoder layers "
        "with their own cache arguments; random weights (timing does not depend on them).",
        "",
    ]
    return "\n".join(lines)


def roofline_machine_block(machine: dict[str, dict[str, float]], head: str) -> str:
    """The machine's measured float32 GEMM rate and copy bandwidth."""
    libraries = ("numpy", "jax", "jax-ynn", "torch")
    body = [
        ["float32 GEMM 2048³, GFLOP/s (best)"]
        + [fmt(machine["gemm"].get(lib), 1, 1e-9) for lib in libraries]
        + [fmt(max(machine["gemm"].values()), 1, 1e-9)],
        ["float32 GEMM 2048³, GFLOP/s (median)"]
        + [fmt(machine["gemm_median"].get(lib), 1, 1e-9) for lib in libraries]
        + [fmt(max(machine["gemm_median"].values()), 1, 1e-9)],
        ["copy 256 MiB, GB/s read+write (best)"]
        + [fmt(machine["copy"].get(lib), 1, 1e-9) for lib in libraries]
        + [fmt(max(machine["copy"].values()), 1, 1e-9)],
        ["copy 256 MiB, GB/s read+write (median)"]
        + [fmt(machine["copy_median"].get(lib), 1, 1e-9) for lib in libraries]
        + [fmt(max(machine["copy_median"].values()), 1, 1e-9)],
    ]
    lines = ["## The machine's limits (2 threads)", "", head, ""]
    header = [
        "measurement",
        "numpy",
        "JAX",
        "JAX (YNNPACK, as our stages)",
        "PyTorch",
        "limit used",
    ]
    lines += [table(header, body), ""]
    lines += [
        "- The limits used below are the best rates of any library (GEMM) and of any "
        "copy; numpy's copy is single-threaded.",
        "",
    ]
    return "\n".join(lines)


def roofline_block(
    model_label: str, row: RooflineRow, machine: dict[str, dict[str, float]], head: str
) -> str:
    """Our encoder's FLOP/s and decoder step's bytes/s as fractions of the limits."""
    peak_flops = max(machine["gemm"].values())
    peak_bytes = max(machine["copy"].values())
    enc, step = median(row.encoder_times), median(row.step_times)
    enc_rate = row.encoder_flops / enc if enc else None
    step_rate = row.step_bytes / step if step else None
    body = [
        [
            "encoder forward (30-s window)",
            f"{row.encoder_flops / 1e9:.1f} GFLOP",
            fmt(enc, 1, 1e3),
            fmt(enc_rate, 1, 1e-9, " GFLOP/s"),
            fmt(enc_rate / peak_flops if enc_rate else None, 1, 100, " %"),
            fmt(row.encoder_flops / peak_flops, 1, 1e3),
        ],
        [
            "decoder step (batch 1, position 32)",
            f"{row.step_bytes / 1e6:.1f} MB",
            fmt(step, 2, 1e3),
            fmt(step_rate, 1, 1e-9, " GB/s"),
            fmt(step_rate / peak_bytes if step_rate else None, 1, 100, " %"),
            fmt(row.step_bytes / peak_bytes, 2, 1e3),
        ],
    ]
    header = ["keras-whisper (JAX)", "work", "median ms", "achieved", "of limit", "floor ms"]
    lines = [f"## Roofline: {model_label}", "", head, ""]
    lines += [table(header, body), ""]
    lines += [
        "- Work is counted from the architecture (`benchmarks/roofline.py`): encoder "
        "matmul and attention FLOPs; for the step, the float32 bytes it must read "
        "(decoder weights, tied embedding for the logits, cached keys/values). "
        "Floor = work / limit.",
        "",
    ]
    return "\n".join(lines)


COLD_PHASES = (
    ("start", "process start s"),
    ("import", "import s"),
    ("load", "load s"),
    ("first", "1st transcription (jfk 11 s) s"),
    ("warm", "jfk again s"),
    ("second", "2nd file (7.1 s) s"),
    ("long", "3rd file (53 s) s"),
)


def _trace_delta(after: dict[str, int], before: dict[str, int]) -> str:
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    changed = {k: v for k, v in delta.items() if v}
    return "none" if not changed else ", ".join(f"{k} +{v}" for k, v in sorted(changed.items()))


def coldstart_block(model_label: str, rows: list[ColdStartRow], head: str) -> str:
    """Fresh-process timings and the compilations each new file caused."""
    body = []
    for row in rows:
        if row.error and not row.phases.get("first"):
            body.append([row.label, failure(row.error)] + [""] * (len(COLD_PHASES) + 1))
            continue
        cells = [row.label]
        cells += [fmt(median(row.phases.get(key, [])), 2) for key, _ in COLD_PHASES]
        total = [
            sum(values)
            for values in zip(
                *(row.phases.get(k, []) for k in ("start", "import", "load", "first")),
                strict=False,
            )
        ]
        cells.append(fmt(median(total), 2))
        cells.append(fmt(median(row.peak_mb), 0))
        body.append(cells)
    header = ["engine"] + [title for _, title in COLD_PHASES]
    header += ["cold total s (start→1st text)", "peak RSS MiB"]
    lines = [f"## Cold start: {model_label}", "", head, ""]
    lines += [table(header, body), ""]
    traced = [row for row in rows if row.traces and row.traces[0].get("first")]
    for row in traced:
        traces = row.traces[-1]
        lines.append(
            f"- {row.label}, traced stages (`TRACE_COUNTS`: each one compiled, or loaded "
            f"from the compilation cache) after the first file: "
            f"{dict(sorted(traces['first'].items()))}; new ones for the 7.1-s file: "
            f"**{_trace_delta(traces['second'], traces['first'])}**; for the 53-s file "
            f"(several windows, each prompted with the previous text, so prompts fall in "
            f"longer length buckets, each compiled once): "
            f"**{_trace_delta(traces['long'], traces['second'])}**."
        )
    lines += [
        "- Each figure is the median over fresh processes; greedy decoding with "
        "timestamps and temperature fallback. Process start = interpreter and worker "
        "start-up; import = the engine's framework; load = the model (keras-whisper: "
        "`from_preset` of the already converted preset in the user cache). keras-whisper "
        "keeps its compiled stages on disk (`keras_whisper.decoding.compilation_cache`): "
        "its first row loads those of an earlier process (one uncounted process fills the "
        "cache first), the 'compiling' row turns the cache off, as on a machine's first run.",
        "",
    ]
    return "\n".join(lines)
