"""Team work in the app (AppTest, sign-in on): an admin assigns with overlap, two annotators label the same
responses apart, a third may not touch them, a reviewer sees agreement and adjudicates; comments and the label
history show on Review."""

from __future__ import annotations

from typing import Any

import pytest

from db import accounts, team
from db import repository as repo
from tests.app import review_driver as drive
from tests.app.conftest import app_test
from tests.app.data import tiny_records
from tests.app.test_auth import PASSWORD, _texts, sign_in
from tests.app.xss_payloads import XSS_PAYLOADS


@pytest.fixture
def crew(store, monkeypatch) -> Any:
    monkeypatch.setenv("FRACTAL_AUTH", "on")
    store.ingest(tiny_records(6), name="work")
    for name, role in (
        ("boss", "admin"),
        ("rita", "reviewer"),
        ("ann", "annotator"),
        ("bob", "annotator"),
        ("cy", "annotator"),
    ):
        accounts.add_user(store.engine, name, role, PASSWORD)
    return store


def _assign_everything_to_ann_and_bob(engine: Any) -> None:
    at = sign_in(app_test(), "boss")
    at.switch_page("views/team.py")
    at.run()
    at.number_input(key="team_k").set_value(2)
    at.number_input(key="team_p").set_value(100)
    at.multiselect(key="team_people").set_value(["ann", "bob"])
    at.text_area(key="team_guidelines").input("# Rules\\n\\nMark the **first** wrong step.")
    at.button(key="team_guidelines_save").click().run()
    at.button(key="team_assign").click().run()
    assert not at.exception, at.exception


def test_overlap_labels_are_kept_apart_then_agreement_and_adjudication(crew) -> None:
    engine = crew.engine
    _assign_everything_to_ann_and_bob(engine)
    dataset = repo.get_dataset(engine, "work")
    assert dataset is not None
    assert len(team.queue(engine, dataset.id, "ann")) == len(team.queue(engine, dataset.id, "bob")) == 6

    ann = sign_in(app_test(), "ann")
    rid = drive.nav(ann).response_id
    assert ann.toggle(key="review_my_queue").value is True
    assert "Overlap response" in _texts(ann)
    drive.label(ann, 0, 0)  # sentence 1: fine
    bob = sign_in(app_test(), "bob")
    assert drive.nav(bob).response_id == rid
    drive.label(bob, 0, 1)  # sentence 1: problem (response r000 is labelled 0: store anyway)
    assert drive.data(bob)["question"] is not None
    drive.label(bob, 0, 1, force=True)  # Y: store anyway
    assert not ann.exception and not bob.exception
    first = repo.get_response(engine, rid).sentences[0]
    assert first.label is None  # the gold view is untouched: both labels are kept apart
    assert team.annotations_by_annotator(engine, rid) == {"ann": {first.id: 0}, "bob": {first.id: 1}}

    # A third annotator may read the response but not label it.
    cy = sign_in(app_test(), "cy")
    cy.toggle(key="review_my_queue").set_value(False).run()
    assert drive.nav(cy).response_id == rid
    drive.label(cy, 0, 0)
    assert not cy.exception, cy.exception
    assert "assigned to other annotators" in (drive.data(cy)["refused"] or "")
    assert repo.label_history(engine, response_id=rid) == []
    assert "cy" not in team.annotations_by_annotator(engine, rid)

    rita = sign_in(app_test(), "rita")
    rita.switch_page("views/agreement.py")
    rita.run()
    assert not rita.exception, rita.exception
    pairs = rita.dataframe[0].value  # the pairs table (progress follows)
    assert list(pairs["annotator A"]) == ["ann"] and list(pairs["same label"]) == ["0%"]
    rita.switch_page("views/adjudicate.py")
    rita.run()
    assert not rita.exception, rita.exception
    assert rita.selectbox(key="adj_pick").value == rid
    # ann said 0 and bob 1: a tie is not preselected, the reviewer decides it.
    rita.segmented_control(key=f"adj-{rid}-{first.id}").set_value("0").run()
    rita.button(key="adj_save").click().run()
    assert not rita.exception, rita.exception
    first = repo.get_response(engine, rid).sentences[0]
    assert first.label_source == "adjudicated" and first.annotator == "rita"
    assert team.adjudicated_labels(engine, [rid])[rid]["reviewer"] == "rita"


def test_comment_flag_guidelines_and_history_on_review(crew) -> None:
    engine = crew.engine
    _assign_everything_to_ann_and_bob(engine)
    ann = sign_in(app_test(), "ann")
    rid = drive.nav(ann).response_id
    drive.label(ann, 0, 0)
    ann.text_area(key="note_text").input(XSS_PAYLOADS[0])
    ann.selectbox(key="note_flag").set_value("unsure")
    ann.button(key="note_add").click().run()
    assert not ann.exception, ann.exception
    [note] = team.notes(engine, rid)
    assert (note.author, note.flag, note.text) == ("ann", "unsure", XSS_PAYLOADS[0])
    texts = [t.value for t in ann.text]
    assert any(XSS_PAYLOADS[0] in t and "ann [unsure]" in t for t in texts)  # shown as plain text
    history = ann.dataframe[-1].value  # the label history, last on the page
    assert list(history["who"]) == ["ann"] and list(history["kind"]) == ["annotation"]
    guidelines = [h.proto.body for h in ann.html if "Rules" in h.proto.body]
    assert guidelines and "<strong>first</strong>" in guidelines[0]
