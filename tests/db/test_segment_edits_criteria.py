"""A split fix on one dataset of a group of criteria applies to the same response in every sibling in the same
transaction (undo likewise), each sibling keeping its own labels' history; a sibling whose split differs refuses
the whole edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from db import repository as repo
from db.engine import run_write
from db.ingest import ingest_file
from db.integrity import check_store
from db.models import Sentence
from fractal_core.errors import InputError
from tests.db.conftest import store_digest, write_jsonl

SENTENCES = ["First step is fine.", "Second step, then a third one.", "Fourth step.", "Fifth."]


def _group(engine: Engine, tmp_path: Path) -> dict[str, int]:
    """Group ``g`` (criteria wrong, helpful): response x1 in each, with different sentence labels; x2 beside."""
    rows: list[dict[str, Any]] = [
        {
            "id": "x1",
            "sentences": SENTENCES,
            "criteria": {
                "wrong": {"response_label": 1, "sentence_labels": [0, 1, 0, None]},
                "helpful": {"response_label": 1, "sentence_labels": [1, None, None, 0]},
            },
        },
        {
            "id": "x2",
            "sentences": ["Alone."],
            "criteria": {"wrong": {"response_label": 0}, "helpful": {"response_label": 0}},
        },
    ]
    summary = ingest_file(engine, write_jsonl(tmp_path / "g.jsonl", rows), "g", labels_as="gold")
    wrong, helpful = summary.dataset_ids()
    return {
        "wrong": repo.response_id_by_external(engine, wrong, "x1") or -1,
        "helpful": repo.response_id_by_external(engine, helpful, "x1") or -1,
    }


def _split(engine: Engine, rid: int) -> tuple[list[tuple[int, int]], list[int | None]]:
    detail = repo.get_response(engine, rid)
    return [(s.start, s.end) for s in detail.sentences], [s.label for s in detail.sentences]


def test_an_edit_and_its_undo_apply_to_every_criterion(engine: Engine, tmp_path: Path) -> None:
    ids = _group(engine, tmp_path)
    assert repo.sibling_responses(engine, ids["wrong"]) == [ids["helpful"]]
    spans_before, _ = _split(engine, ids["wrong"])
    repo.merge_sentences(engine, ids["wrong"], 1, "ann", expected=spans_before)
    (w_spans, w_labels), (h_spans, h_labels) = _split(engine, ids["wrong"]), _split(engine, ids["helpful"])
    assert w_spans == h_spans and len(w_spans) == 3
    assert w_labels == [0, None, None] and h_labels == [1, None, 0]  # each keeps its own untouched labels
    # A split from the other criterion's page, then undo there: both walk back together.
    repo.split_sentence(engine, ids["helpful"], 0, 6, "ann", expected=h_spans)
    assert _split(engine, ids["wrong"])[0] == _split(engine, ids["helpful"])[0] and len(w_spans) + 1 == 4
    assert repo.undo_segment_edit(engine, ids["wrong"], "ann") is not None
    assert repo.undo_segment_edit(engine, ids["helpful"], "ann") is not None
    assert _split(engine, ids["wrong"]) == (spans_before, [0, 1, 0, None])
    assert _split(engine, ids["helpful"]) == (spans_before, [1, None, None, 0])
    assert [e.kind for e in repo.segment_history(engine, ids["helpful"])] == [
        "merge",
        "split",
        "undo",
        "undo",
    ]
    assert repo.undo_segment_edit(engine, ids["helpful"], "ann") is None
    assert check_store(engine).clean


def test_a_sibling_with_another_split_refuses_the_whole_edit(engine: Engine, tmp_path: Path) -> None:
    ids = _group(engine, tmp_path)
    # Make the sibling's split differ (as if changed outside the tool): the edit must write nothing.
    run_write(
        engine,
        lambda s: s.execute(
            update(Sentence)
            .where(Sentence.response_id == ids["helpful"], Sentence.position == 3)
            .values(start=50)
        ),
    )
    before = store_digest(engine, logical=True)
    with pytest.raises(InputError, match="another split"):
        repo.merge_sentences(engine, ids["wrong"], 0, "ann")
    assert store_digest(engine, logical=True) == before
