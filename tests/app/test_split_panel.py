"""Review's "Fix the split" panel (AppTest): merge, split and undo change the stored sentences; a changed split
is shown uncoloured with a note until the next scoring; an edit from a stale view and one by an annotator who may
not label the response are refused with a message and write nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app import split_panel
from db import accounts, team
from db import repository as repo
from tests.app import review_driver as drive
from tests.app.conftest import app_test
from tests.app.data import tiny_records
from tests.app.test_auth import PASSWORD, sign_in


def _texts(engine: Any, rid: int) -> list[str]:
    return [s.text for s in repo.get_response(engine, rid).sentences]


def _errors(at: Any) -> str:
    return "\n".join(e.value for e in at.error)


def _score_everything(engine: Any, dataset_id: int) -> None:
    ids = repo.load_training_set(engine, dataset_id).sentence_ids
    mv = repo.create_model_version(engine, dataset_id, method="fractal")
    repo.store_scores(engine, mv.id, ids, np.full(len(ids), 0.8))
    repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id).id)


def test_merge_split_and_undo_from_the_review_page(store) -> None:
    dataset_id = store.ingest(tiny_records(3, with_labels=True)).dataset_id
    _score_everything(store.engine, dataset_id)
    at = app_test("views/review.py")
    rid = drive.nav(at).response_id
    original = _texts(store.engine, rid)
    assert not at.exception, at.exception
    assert split_panel.STALE_NOTE not in [i.value for i in at.info]
    assert all(s["score"] == 0.8 for s in drive.data(at)["response"]["sentences"])

    at.number_input(key=f"split_pick_{rid}").set_value(1).run()
    at.button(key="split_merge").click().run()
    assert not at.exception and not _errors(at), _errors(at) or at.exception
    assert _texts(store.engine, rid) == [f"{original[0]} {original[1]}", *original[2:]]
    assert "Merged sentences 1 and 2" in " ".join(t.value for t in at.toast)
    # The changed split has no scores yet: a note, and no sentence coloured with the old ones.
    assert split_panel.STALE_NOTE in [i.value for i in at.info]
    assert all(s["score"] is None for s in drive.data(at)["response"]["sentences"])
    # The merged sentences' labels keep their history, shown as on a replaced sentence.
    [history] = [d.value for d in at.dataframe if "sentence" in d.value.columns]
    assert "replaced by a split fix" in set(history["sentence"])

    # Split the merged sentence again where the two met.
    at.number_input(key=f"split_at_{rid}_1").set_value(len(original[0]) + 1).run()
    texts = [t.value for t in at.text]
    preview = texts.index(original[0])
    assert texts[preview : preview + 2] == original[:2]  # the preview of the two parts, as plain text
    at.button(key="split_split").click().run()
    assert not _errors(at), _errors(at)
    assert _texts(store.engine, rid) == original
    for _ in range(2):
        at.button(key="split_undo").click().run()
    assert not _errors(at), _errors(at)
    assert _texts(store.engine, rid) == original
    at.button(key="split_undo").click().run()
    assert "Nothing to undo" in " ".join(t.value for t in at.toast)
    changes = [t.value.split(": ", 1)[1] for t in at.text if ": " in t.value and " tester: " in t.value]
    assert changes == [
        "undid: merged sentences 1 and 2",
        f"undid: split sentence 1 at {len(original[0]) + 1}",
        f"split sentence 1 at {len(original[0]) + 1} · undone",
        "merged sentences 1 and 2 (2 label(s) ended) · undone",  # both had imported labels
    ], changes
    _score_everything(store.engine, dataset_id)
    at.run()
    assert split_panel.STALE_NOTE not in [i.value for i in at.info]


def test_the_last_sentence_split_and_undone_keeps_the_page_working(store) -> None:
    store.ingest(tiny_records(2))
    at = app_test("views/review.py")
    rid = drive.nav(at).response_id
    original = _texts(store.engine, rid)
    n = len(original)
    at.number_input(key=f"split_pick_{rid}").set_value(n).run()
    assert at.button(key="split_merge").disabled  # the last sentence has no next one
    at.button(key="split_split").click().run()
    assert len(_texts(store.engine, rid)) == n + 1
    at.number_input(key=f"split_pick_{rid}").set_value(n + 1).run()  # the new last sentence
    at.button(key="split_undo").click().run()
    assert not at.exception and not _errors(at), at.exception or _errors(at)
    assert _texts(store.engine, rid) == original
    assert at.number_input(key=f"split_pick_{rid}").value == n


def test_an_edit_from_a_stale_view_is_refused(store) -> None:
    store.ingest(tiny_records(2))
    at = app_test("views/review.py")
    rid = drive.nav(at).response_id
    repo.split_sentence(store.engine, rid, 0, 4, "someone-else")  # after the page showed the response
    after_theirs = _texts(store.engine, rid)
    at.button(key="split_merge").click().run()
    assert "changed the split of this response" in _errors(at)
    assert _texts(store.engine, rid) == after_theirs
    at.button(key="split_merge").click().run()  # the page now shows their split: a merge goes through
    assert not _errors(at) and len(_texts(store.engine, rid)) == len(after_theirs) - 1


@pytest.fixture
def team_store(store, monkeypatch) -> Any:
    monkeypatch.setenv("FRACTAL_AUTH", "on")
    dataset_id = store.ingest(tiny_records(2)).dataset_id
    for name in ("ann", "cy"):
        accounts.add_user(store.engine, name, "annotator", PASSWORD)
    team.assign(store.engine, dataset_id, ["ann"])
    return store


def test_an_annotator_who_may_not_label_the_response_may_not_change_its_split(team_store) -> None:
    cy = sign_in(app_test(), "cy")
    cy.switch_page("views/review.py")
    cy.run()
    cy.toggle(key="review_my_queue").set_value(False).run()
    rid = drive.nav(cy).response_id
    before = _texts(team_store.engine, rid)
    cy.button(key="split_merge").click().run()
    assert "assigned to other annotators" in _errors(cy)
    assert _texts(team_store.engine, rid) == before
    ann = sign_in(app_test(), "ann")
    ann.switch_page("views/review.py")
    ann.run()
    assert drive.nav(ann).response_id == rid
    ann.button(key="split_merge").click().run()
    assert not _errors(ann) and len(_texts(team_store.engine, rid)) == len(before) - 1
