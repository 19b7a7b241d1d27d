"""The benchmark harness's pure-Python parts: WER, FLOP counting, BENCHMARKS.md merging."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import report  # noqa: E402
import roofline  # noqa: E402
import wer  # noqa: E402

from keras_whisper.presets import BACKBONE_PRESETS  # noqa: E402


def test_normalize_is_plain():
    assert wer.normalize("And so, my fellow Americans: ask not!") == (
        "and so my fellow americans ask not"
    )
    assert wer.normalize("Feed'st thy light\u2019s flame—self-substantial") == (
        "feedst thy lights flame self substantial"
    )
    assert wer.normalize("  Mr.   Dashwood 10 ") == "mr dashwood 10"  # no expansion


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("a b c d", "a b c d", 0.0),
        ("a b c d", "a x c d", 0.25),  # substitution
        ("a b c d", "a c d", 0.25),  # deletion
        ("a b c d", "a b b c d", 0.25),  # insertion
        ("a b", "", 1.0),
        ("", "", 0.0),
        ("", "a", 1.0),
    ],
)
def test_word_error_rate(reference, hypothesis, expected):
    assert wer.word_error_rate(reference, hypothesis) == pytest.approx(expected)


def test_encoder_flops_matches_the_large_v3_anchor():
    # docs/gpu.md: the large-v3 encoder does 2.27 TFLOP per 30-s window.
    flops = roofline.encoder_flops(BACKBONE_PRESETS["whisper_large_v3"]["config"])
    assert flops == pytest.approx(2.27e12, rel=0.01)


def test_decoder_step_bytes_counts_weights_and_caches():
    config = BACKBONE_PRESETS["whisper_tiny_en"]["config"]
    d, layers, vocab = 384, 4, 51864
    weights = layers * (14 * d * d) + vocab * d
    caches = layers * 2 * d * (1500 + 33)
    assert roofline.decoder_step_bytes(config, 32) == pytest.approx(
        4 * (weights + caches), rel=0.01
    )


def test_merge_blocks_replaces_only_what_was_measured():
    first = report.merge_blocks("", {"e2e/base": "old base\n", "e2e/tiny_en": "old tiny\n"})
    second = report.merge_blocks(first, {"e2e/tiny_en": "new tiny", "model/tiny_en": "model"})
    assert "old base" in second and "new tiny" in second and "old tiny" not in second
    order = [second.index(key) for key in ("e2e/tiny_en", "e2e/base", "model/tiny_en")]
    assert order == sorted(order)
    assert second.startswith(report.INTRO)
    assert report.merge_blocks(second, {}) == second
