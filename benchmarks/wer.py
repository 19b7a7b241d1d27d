"""Word error rate with a deliberately plain text normaliser.

The normaliser lowercases, deletes apostrophes (so "don't" and "dont" agree),
turns every other punctuation or symbol character into a space and collapses
whitespace. It does not spell out numbers or expand abbreviations, so a
transcript saying "Mr." or "10" against a reference saying "mister" or "ten"
counts as an error: the figures are for comparing engines on the same inputs,
not for comparison with published WERs.
"""

from __future__ import annotations

import unicodedata

_APOSTROPHES = {"'", "\u2019", "\u02bc"}


def normalize(text: str) -> str:
    """Lowercase, strip punctuation and symbols, collapse whitespace."""
    chars = []
    for char in unicodedata.normalize("NFKC", text).lower():
        if char in _APOSTROPHES:
            continue
        category = unicodedata.category(char)
        chars.append(" " if category[0] in "PSZC" else char)
    return " ".join("".join(chars).split())


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance between two word lists (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_word in enumerate(hypothesis, start=1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (ref_word != hyp_word),
            )
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word errors of `hypothesis` divided by the number of words of `reference`.

    Both texts go through `normalize` first. An empty reference gives 0.0 for
    an empty hypothesis and 1.0 otherwise.
    """
    ref_words = normalize(reference).split()
    hyp_words = normalize(hypothesis).split()
    if not ref_words:
        return float(bool(hyp_words))
    return edit_distance(ref_words, hyp_words) / len(ref_words)
