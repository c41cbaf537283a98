"""Text keys for deduplication and decontamination (pure: no Ray, no I/O).

* :func:`exact_key` -- the key of *exact* deduplication: NFKC, lower case, whitespace runs
  collapsed and dropped next to punctuation (``"3 + 5"`` == ``"3+5"``), SHA-1.
* :func:`words` -- the word tokens (``\\w+``, lower case) of 8-gram decontamination, as s1
  counts n-grams in words. Symbols are left out on purpose: LaTeX boilerplate
  (``} { 2 } $``) would otherwise make 8-grams that any two maths questions share.
* :func:`shingle_tokens` -- words *and* symbols for near-duplicate shingles: for maths the
  operator matters (``3 + 4`` and ``3 - 4`` are different questions).
* :class:`MinHasher` -- MinHash signatures over shingles. A shingle is hashed with CRC-32 (stable
  across processes, unlike ``hash()``), then permuted by ``num_perm`` multiply-add-shift hashes
  ``h_i(x) = ((a_i x + b_i) mod 2^64) >> 32`` (a 2-independent family for 32-bit keys; numpy's
  uint64 arithmetic wraps, which *is* the mod 2^64). The fraction of equal signature entries of two
  questions estimates the Jaccard similarity of their shingle sets (std ~ sqrt(J(1-J)/num_perm)).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib

import numpy as np

_WS = re.compile(r"\s+")
_WS_NEAR_PUNCT = re.compile(r" ?([^\w ]) ?")
_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalize(text: str) -> str:
    """NFKC, lower case, single spaces, no spaces next to punctuation, stripped."""
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = _WS.sub(" ", t).strip()
    return _WS_NEAR_PUNCT.sub(r"\1", t)


def exact_key(text: str) -> str:
    return hashlib.sha1(normalize(text).encode("utf-8")).hexdigest()


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text or "").lower())


def shingle_tokens(text: str) -> list[str]:
    return _TOKEN.findall(unicodedata.normalize("NFKC", text or "").lower())


def ngrams(tokens: list[str], n: int) -> set[str]:
    """The distinct n-grams (space-joined); a text shorter than n gives none."""
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def shingles(tokens: list[str], k: int) -> set[str]:
    """k-shingles; a text shorter than k is one shingle (itself), an empty one none."""
    if not tokens:
        return set()
    if len(tokens) < k:
        return {" ".join(tokens)}
    return ngrams(tokens, k)


class MinHasher:
    """MinHash signatures (see the module docstring). Same (num_perm, seed) -> same signatures."""

    EMPTY = np.uint32(0xFFFFFFFF)

    def __init__(self, num_perm: int = 128, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, 2**63, num_perm, dtype=np.uint64) | np.uint64(1)  # odd multipliers
        self.b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)

    def signature(self, shingle_set: set[str]) -> np.ndarray:
        if not shingle_set:
            return np.full(self.num_perm, self.EMPTY, dtype=np.uint32)
        h = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in shingle_set), dtype=np.uint64, count=len(shingle_set))
        v = (h[:, None] * self.a[None, :] + self.b[None, :]) >> np.uint64(32)
        return v.min(axis=0).astype(np.uint32)

    def of_text(self, text: str, k: int) -> np.ndarray:
        return self.signature(shingles(shingle_tokens(text), k))


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))
