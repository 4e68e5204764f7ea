"""Byte-level BPE (HF ``tokenizers``) with guaranteed single-token answer strings.

The task suite (method §3) scores the next token against a target and an alternative, so every
answer string (``")``, ``]]``, `` +=``, ``.add``, `` else`` …) must be exactly one token wherever it
occurs as itself. Two parts make that hold:

- the pre-tokenizer is GPT-2's split pattern with the required strings tried first, so each one is
  cut out as its own piece — with word boundaries on its word-character ends, so `` a`` is cut
  from ``x = a + 1`` but not from ``x and y`` — and no punctuation or whitespace run swallows one;
- the BPE model looks a piece up in the vocabulary before merging (``ignore_merges``), and every
  required string BPE did not learn is put in the vocabulary; the last-learned merges make room,
  so the vocabulary is still ``vocab_size``.

Training sees the same pieces as encoding, so BPE statistics match what encoding produces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from runtime.io import write_atomic

EOD_TOKEN = "<|endoftext|>"
# GPT-2's pre-tokenizer pattern, split into the alternatives that cannot contain the start of a
# required string (letter and digit runs: required strings bound at word characters) and the two
# run patterns that are tempered so that they stop where a required string begins.
_GPT2_WORDS = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
_GPT2_PUNCTUATION = r" ?(?:{stop}[^\s\p{{L}}\p{{N}}])+"
_GPT2_SPACE = r"(?:{stop}\s)+(?!\S)|(?:{stop}\s)+"
# Probe contexts for ``check_single_tokens``: alone, after an assignment, inside brackets, on an
# indented line, and before a newline, a space or more code. None adds a word character next to
# the string, where a word-bounded string is rightly not cut out (`` a`` in `` ab``).
_CONTEXTS = (("", ""), ("x = ", "\n"), ("f(", " b)"), ("\n    ", "(z)\n"), ("y ", " "))


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, required_tokens: Sequence[str] = ()
) -> Tokenizer:
    """Train on ``texts``: ``EOD_TOKEN`` is id 0 and every required string one token.

    The vocabulary is ``vocab_size`` exactly unless the texts are too small for BPE to learn that
    many merges; it is never larger.
    """
    required = sorted(set(required_tokens), key=lambda token: (-len(token), token))
    tokenizer = Tokenizer(models.BPE(ignore_merges=True))
    tokenizer.pre_tokenizer = _pre_tokenizer(required)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOD_TOKEN], initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    state = json.loads(tokenizer.to_str())
    n_base = len(alphabet) + 1
    forced = [_byte_level(token) for token in required]
    if n_base + len(set(forced) - set(alphabet)) > vocab_size:
        raise ValueError(
            f"vocab_size {vocab_size} leaves no room for {len(alphabet)} bytes, the "
            f"end-of-document token and {len(required)} required tokens"
        )
    # BPE learns merges in order, so keeping the first ``kept`` merges is what training to a
    # smaller vocabulary gives. Fewer merges can only mean more strings to add; shrink until both
    # fit.
    kept = len(state["model"]["merges"])
    while True:
        vocab = _vocab_with(state, kept, forced, n_base)
        if len(vocab) <= vocab_size:
            break
        kept -= len(vocab) - vocab_size
    state["model"]["merges"] = state["model"]["merges"][:kept]
    state["model"]["vocab"] = vocab
    state["model"]["ignore_merges"] = True
    return _configured(Tokenizer.from_str(json.dumps(state)))


def _vocab_with(
    state: dict[str, Any], kept: int, forced: list[str], n_base: int
) -> dict[str, int]:
    """The vocabulary of the first ``kept`` merges plus the forced tokens, numbered densely."""
    learned = {_merged(pair) for pair in state["model"]["merges"][:kept]}
    by_id = sorted(state["model"]["vocab"].items(), key=lambda item: item[1])
    tokens = [token for token, token_id in by_id if token_id < n_base or token in learned]
    tokens += sorted(set(forced) - set(tokens), key=forced.index)
    return {token: token_id for token_id, token in enumerate(tokens)}


def _merged(pair: str | list[str]) -> str:
    # tokenizers < 0.20 saves a merge as "a b", later versions as ["a", "b"]; byte-level tokens
    # never contain a space (it is spelled Ġ), so dropping spaces joins both forms.
    return "".join(pair).replace(" ", "")


def _pre_tokenizer(required: Sequence[str]) -> pre_tokenizers.PreTokenizer:
    cut = "|".join(_bounded(token) for token in required)
    stop = f"(?!{cut})" if cut else ""
    pattern = "|".join(
        part for part in (cut, _GPT2_WORDS, _GPT2_PUNCTUATION.format(stop=stop),
                          _GPT2_SPACE.format(stop=stop)) if part
    )
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def _bounded(token: str) -> str:
    """The regex for ``token``, not starting or ending inside a word where it has a word char."""
    before = r"(?<!\w)" if re.match(r"\w", token[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", token[-1]) else ""
    # Oniguruma (the tokenizers regex engine) escapes: every non-alphanumeric as ``\\x{..}``.
    escaped = "".join(char if char.isalnum() else f"\\x{{{ord(char):x}}}" for char in token)
    return before + escaped + after


def _byte_level(text: str) -> str:
    """``text`` as the byte-level alphabet spells it (a space is ``Ġ``): its vocabulary entry."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return "".join(piece for piece, _ in byte_level.pre_tokenize_str(text))


def _configured(tokenizer: Tokenizer) -> Tokenizer:
    # Document text that happens to contain "<|endoftext|>" must not become a document break;
    # this flag is not saved in tokenizer.json, hence set on every load.
    tokenizer.encode_special_tokens = True
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    data = tokenizer.to_str().encode("utf-8")
    write_atomic(path, data)


def load_tokenizer(path: Path) -> Tokenizer:
    return _configured(Tokenizer.from_file(str(path)))


def eod_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(EOD_TOKEN)
    if token_id is None:
        raise ValueError(f"tokenizer has no {EOD_TOKEN} token")
    return token_id


def check_single_tokens(tokenizer: Tokenizer, strings: Iterable[str]) -> list[str]:
    """The strings that are not one token, by itself and in each probe context."""
    return [string for string in strings if not _is_single_token(tokenizer, string)]


def _is_single_token(tokenizer: Tokenizer, string: str) -> bool:
    # One token must span exactly the string in every context, and it must be the same token.
    ids = set()
    for prefix, suffix in _CONTEXTS:
        encoding = tokenizer.encode(prefix + string + suffix)
        span = (len(prefix), len(prefix) + len(string))
        matches = [
            token_id for token_id, offsets in zip(encoding.ids, encoding.offsets, strict=True)
            if offsets == span
        ]
        if len(matches) != 1:
            return False
        ids.add(matches[0])
    return len(ids) == 1


def encode_documents(
    tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 512
) -> np.ndarray:
    """All texts as one uint16 array, each followed by the end-of-document token.

    Batches bound the memory held in ``Encoding`` objects; each batch still runs in parallel.
    """
    if tokenizer.get_vocab_size() > 2**16:
        raise ValueError(f"vocabulary of {tokenizer.get_vocab_size()} does not fit in uint16")
    separator = np.array([eod_id(tokenizer)], dtype=np.uint16)
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        for encoding in tokenizer.encode_batch_fast(batch, add_special_tokens=False):
            parts.append(np.array(encoding.ids, dtype=np.uint16))
            parts.append(separator)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
