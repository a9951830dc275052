"""Step scores of new responses for a caller outside the store (a training loop asking for process rewards).

A request holds responses as ``{"context": ..., "sentences": [...]}`` or ``{"context": ..., "text": ...}``;
:func:`responses_from_request` checks them with the file reader's own rules and segments raw text exactly as an
ingest does (:func:`fractal_core.data.io.record_from_mapping`), and :func:`score_responses` scores a batch of
them with :meth:`FractalModel.predict` (the one scoring path: one embedding pass and one scorer pass for the
whole batch) and reads the response score off the sentence scores with :mod:`fractal_core.mil.semantics`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fractal_core.data.io import SegmentMode, record_from_mapping
from fractal_core.data.records import ResponseRecord, Span
from fractal_core.errors import InputError
from fractal_core.fitting.config import TrainConfig
from fractal_core.mil import semantics

if TYPE_CHECKING:
    from fractal_core.fitting.estimator import FractalModel

REQUEST_FIELDS = ("id", "context", "sentences", "text")
"""The fields a response of a request may have: ``sentences`` (kept as given) or ``text`` (segmented)."""


@dataclass(frozen=True)
class ScoredResponse:
    """One response's step scores: ``spans`` index into ``text`` (the given text, or the given sentences joined
    by one space), ``scores`` (n_spans,) are the marginal P(label >= 1) of each span, ``response_score`` the
    response-level score under the model's aggregation."""

    id: str
    text: str
    spans: list[Span]
    scores: np.ndarray
    response_score: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with the key names of ``fractal score``'s output."""
        return {
            "id": self.id,
            "text": self.text,
            "sentences": [s.text for s in self.spans],
            "offsets": [[s.start, s.end] for s in self.spans],
            "sentence_scores": [float(v) for v in self.scores],
            "response_score": float(self.response_score),
        }


def responses_from_request(
    items: Any,
    *,
    segment_mode: SegmentMode,
    aggregation: str,
    max_responses: int = 1024,
    max_field_chars: int = 200_000,
) -> list[ResponseRecord]:
    """Checked records (one per item, in order) from a request's ``responses`` list.

    Raises:
        InputError: the first bad item, its ``field`` named like ``responses[3].text``; nothing is scored.
    """
    if not isinstance(items, list):
        raise InputError(f"must be a list of responses, got {_json_type(items)}", field="responses")
    if not items:
        raise InputError("must hold at least one response", field="responses")
    if len(items) > max_responses:
        raise InputError(
            f"{len(items)} responses in one request; the limit is {max_responses}", field="responses"
        )
    records = []
    for i, item in enumerate(items):  # request parsing, not scoring: each item is checked on its own
        where = f"responses[{i}]"
        if not isinstance(item, dict):
            raise InputError(f"must be an object, got {_json_type(item)}", field=where)
        unknown = sorted(set(item) - set(REQUEST_FIELDS))
        if unknown:
            raise InputError(
                "unknown field; a response has context and either sentences or text (and an optional id)",
                field=f"{where}.{unknown[0]}",
            )
        if "sentences" in item and "text" in item:
            raise InputError("give either sentences or text, not both", field=f"{where}.text")
        row = {"id": str(i), **item, "response_label": 0, "aggregation": aggregation}
        try:
            records.append(
                record_from_mapping(row, segment_mode=segment_mode, max_field_chars=max_field_chars)
            )
        except InputError as err:
            raise InputError(err.reason, field=f"{where}.{err.field}" if err.field else where) from None
    return records


def score_responses(model: FractalModel, records: Sequence[ResponseRecord]) -> list[ScoredResponse]:
    """Score ``records`` (B responses, N spans in all) in one pass: span scores (N,) from
    :meth:`FractalModel.predict`, response scores (B,) from :func:`semantics.response_scores` with the model's
    aggregation and bag variant (as the store's scores are read)."""
    per_response = model.predict(records)  # B arrays, (n_b,) each
    flat = np.concatenate(per_response).astype(np.float64)  # (N,)
    sizes = np.array([len(r.spans) for r in records], dtype=np.int64)
    bag_index = np.repeat(np.arange(len(records), dtype=np.int64), sizes)  # (N,)
    config = model.config or TrainConfig()
    response = semantics.response_scores(
        flat,
        bag_index,
        len(records),
        aggregation=model.aggregation_,
        variant=config.bag_variant,
        temperature=config.lse_temperature,
    )  # (B,)
    return [
        ScoredResponse(record.id, record.text, record.spans, scores, float(r))
        for record, scores, r in zip(records, per_response, response, strict=True)
    ]


def model_digest(directory: str | Path, names: Sequence[str]) -> str:
    """A short content id (16 hex digits of a sha256) of a saved model's files ``names`` in ``directory``:
    two servers answer with the same id exactly when they load the same weights and settings."""
    digest = hashlib.sha256()
    for name in sorted(names):
        path = Path(directory) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


__all__ = ["REQUEST_FIELDS", "ScoredResponse", "model_digest", "responses_from_request", "score_responses"]
