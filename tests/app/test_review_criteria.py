"""Review on a dataset of a group of criteria (AppTest): the C key and the Criterion selector open the same
response in the sibling criterion's dataset, with its own labels; a label set there is that criterion's only."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from app import state
from app.components import response_view
from db import repository as repo
from tests.app import review_driver as drive
from tests.app.conftest import app_test
from tests.app.data import tiny_records

_seq = itertools.count(10_000)


def _criteria_records(n: int) -> list[dict[str, Any]]:
    out = []
    for i, rec in enumerate(tiny_records(n)):
        label = rec.pop("response_label")
        rec.pop("aggregation", None)
        rec.pop("sentence_labels", None)
        rec["criteria"] = {"wrong": {"response_label": label}, "helpful": {"response_label": i % 2}}
        out.append(rec)
    return out


def _shown(at: Any, engine: Any) -> tuple[int, str, str | None]:
    """(dataset, external id of the open response, criterion the component was told)."""
    data = drive.data(at)
    detail = repo.get_response(engine, data["response"]["id"])
    return detail.dataset_id, detail.external_id, data["criterion"]


def test_the_c_key_and_the_selector_switch_criterion_on_the_same_response(store) -> None:
    summary = store.ingest(_criteria_records(4), name="rated")
    ids = dict(zip(summary.criteria_datasets, summary.dataset_ids(), strict=True))
    helpful, wrong = ids["rated.helpful"], ids["rated.wrong"]
    at = app_test("views/review.py")
    assert not at.exception, at.exception
    assert drive.data(at)["criteria"] == ["helpful", "wrong"]
    assert "C" in dict(response_view.SHORTCUTS)
    dataset_id, external, criterion = _shown(at, store.engine)
    assert (dataset_id, criterion) == (helpful, "helpful")

    drive.send(at, "nav", {"seq": next(_seq), "criterion": 1})
    assert not at.exception, at.exception
    assert at.session_state[state.DATASET_KEY] == wrong
    assert _shown(at, store.engine) == (wrong, external, "wrong")
    assert at.radio(key=f"review_criterion_{wrong}").value == wrong

    # 0 on the first sentence labels criterion "wrong" only.
    drive.label(at, 0, 0)
    assert not at.exception, at.exception
    wrong_rid = repo.response_id_by_external(store.engine, wrong, external)
    helpful_rid = repo.response_id_by_external(store.engine, helpful, external)
    assert wrong_rid is not None and helpful_rid is not None
    assert repo.get_response(store.engine, wrong_rid).sentences[0].label == 0
    assert repo.get_response(store.engine, helpful_rid).sentences[0].label is None

    # The selector goes back to "helpful", on the same response; C from the last criterion wraps to the first.
    at.radio(key=f"review_criterion_{wrong}").set_value(helpful).run()
    assert not at.exception, at.exception
    assert _shown(at, store.engine) == (helpful, external, "helpful")
    drive.send(at, "nav", {"seq": next(_seq), "criterion": 1})
    drive.send(at, "nav", {"seq": next(_seq), "criterion": 1})
    assert _shown(at, store.engine) == (helpful, external, "helpful")


def test_an_ordinary_dataset_has_no_criterion_choice_and_ignores_c(store) -> None:
    dataset_id = store.ingest(tiny_records(2)).dataset_id
    at = app_test("views/review.py")
    assert drive.data(at)["criteria"] == [] and not at.radio
    before = _shown(at, store.engine)
    drive.send(at, "nav", {"seq": next(_seq), "criterion": 1})
    assert not at.exception and _shown(at, store.engine) == before and before[0] == dataset_id


def test_uploading_a_criteria_file_on_the_data_page_makes_one_dataset_per_criterion(store) -> None:
    import json

    body = "".join(json.dumps(r) + "\n" for r in _criteria_records(4)).encode()
    at = app_test("views/data.py")
    at.file_uploader[0].upload("rated.jsonl", body, "application/jsonl")
    at.run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert any("criteria: wrong" in t.value for t in at.text)  # the preview shows each criterion's label
    at.button(key="data_import").click().run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert {d.name: d.n_responses for d in repo.list_datasets(store.engine)} == {
        "rated.wrong": 4,
        "rated.helpful": 4,
    }
    assert any("one per criterion" in t.value for t in at.toast)
    # Follow-up work is queued for every criterion's dataset (embedding, then a first training).
    queued = {j.payload["dataset_id"] for j in repo.list_jobs(store.engine, kind="embed")}
    assert queued == {d.id for d in repo.list_datasets(store.engine)}


def test_a_split_fix_needs_the_right_to_label_the_response_in_every_criterion(store) -> None:
    from app import actions
    from db import accounts, team
    from db.accounts import PermissionDenied
    from tests.app.test_auth import PASSWORD

    summary = store.ingest(_criteria_records(2), name="rated")
    ids = dict(zip(summary.criteria_datasets, summary.dataset_ids(), strict=True))
    for name in ("ann", "cy"):
        accounts.add_user(store.engine, name, "annotator", PASSWORD)
    team.assign(store.engine, ids["rated.helpful"], ["cy"])  # criterion helpful: cy's alone
    ann, cy = accounts.get_user(store.engine, "ann"), accounts.get_user(store.engine, "cy")
    assert ann is not None and cy is not None
    rid = repo.response_id_by_external(store.engine, ids["rated.wrong"], "r000")
    assert rid is not None
    spans = [(s.start, s.end) for s in repo.get_response(store.engine, rid).sentences]
    with pytest.raises(PermissionDenied, match="another criterion"):
        actions.merge_sentences(store.engine, ann, rid, 0, expected=spans)
    assert [(s.start, s.end) for s in repo.get_response(store.engine, rid).sentences] == spans
    actions.merge_sentences(store.engine, cy, rid, 0, expected=spans)  # cy may label it in both
    sibling = repo.response_id_by_external(store.engine, ids["rated.helpful"], "r000")
    assert sibling is not None
    assert len(repo.get_response(store.engine, sibling).sentences) == len(spans) - 1
