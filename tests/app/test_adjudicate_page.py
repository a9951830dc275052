"""AppTest of Adjudicate: a tie has no default, contradicting gold labels need the consistency question, each
annotator's labels and the model's given-label scores show side by side, formulas are rendered."""

from __future__ import annotations

import re

from db import repository as repo
from db import team
from tests.app.conftest import app_test
from tests.app.data import tiny_records


def _overlap(store, *, extra_text: str | None = None):
    """Response r000 (labelled 0, max) annotated by ann and bob: they agree on sentence 1 and tie on 2."""
    ds = store.ingest(tiny_records(4, extra_text=extra_text), name="work")
    page = repo.list_responses(store.engine, ds.dataset_id, sort="id", page=0, page_size=10)
    rid = page.rows[0].id
    detail = repo.get_response(store.engine, rid)
    s1, s2 = detail.sentences[0].id, detail.sentences[1].id
    team.record_annotations(store.engine, rid, {s1: 0, s2: 0}, "ann")
    team.record_annotations(store.engine, rid, {s1: 0, s2: 1}, "bob")
    return ds, rid, detail


def _adjudicate_page():
    at = app_test("views/adjudicate.py")
    assert not at.exception, at.exception
    return at


def test_a_tie_has_no_default_and_must_be_decided(store) -> None:
    _, rid, detail = _overlap(store)
    s1, s2 = detail.sentences[0].id, detail.sentences[1].id
    at = _adjudicate_page()
    assert at.segmented_control(key=f"adj-{rid}-{s1}").value == "0"  # both said 0
    assert at.segmented_control(key=f"adj-{rid}-{s2}").value is None  # 0 against 1: nothing preselected
    at.button(key="adj_save").click().run()
    assert any("sentence(s) 2" in e.value and "Nothing was stored" in e.value for e in at.error)
    assert team.adjudicated_labels(store.engine, [rid]) == {}
    assert repo.get_response(store.engine, rid).sentences[1].label is None

    at.segmented_control(key=f"adj-{rid}-{s2}").set_value("0").run()
    at.button(key="adj_save").click().run()
    assert not at.exception and not at.error
    stored = repo.get_response(store.engine, rid).sentences
    assert [s.label for s in stored[:2]] == [0, 0] and stored[1].annotator == "tester"
    assert team.adjudicated_labels(store.engine, [rid])[rid]["labels"][s2] == 0


def test_contradicting_gold_asks_first(store) -> None:
    _, rid, detail = _overlap(store)
    s2 = detail.sentences[1].id
    at = _adjudicate_page()
    # r000 is labelled 0 (max): a problem sentence contradicts it.
    at.segmented_control(key=f"adj-{rid}-{s2}").set_value("1").run()
    at.button(key="adj_save").click().run()
    [question] = [w for w in at.warning if "contradict" in w.value]
    assert "Store them anyway" in question.value
    assert team.adjudicated_labels(store.engine, [rid]) == {}
    at.button(key="adj_cancel").click().run()
    assert not [w for w in at.warning if "contradict" in w.value]
    assert team.adjudicated_labels(store.engine, [rid]) == {}

    # Asked again, and a change of a picker withdraws the question (it was about other labels).
    at.button(key="adj_save").click().run()
    at.segmented_control(key=f"adj-{rid}-{s2}").set_value("0").run()
    assert not [w for w in at.warning if "contradict" in w.value]
    at.segmented_control(key=f"adj-{rid}-{s2}").set_value("1").run()
    at.button(key="adj_save").click().run()
    at.button(key="adj_confirm").click().run()
    assert not at.exception
    assert repo.get_response(store.engine, rid).sentences[1].label == 1
    assert team.adjudicated_labels(store.engine, [rid])[rid]["labels"][s2] == 1


def test_annotators_and_given_label_scores_side_by_side_with_math(store) -> None:
    ds, rid, detail = _overlap(store, extra_text=r"Hence $x^2 + 1 = 5$ gives $x = 2$.")
    mv = repo.create_model_version(store.engine, ds.dataset_id, method="hand")
    data = repo.load_training_set(store.engine, ds.dataset_id)
    repo.store_scores(store.engine, mv.id, data.sentence_ids, [0.7] * len(data.sentence_ids))
    repo.activate_model_version(store.engine, repo.finish_model_version(store.engine, mv.id).id)
    at = _adjudicate_page()
    cells = [m.value for m in at.markdown]
    # ann and bob per sentence: the tied sentence shows both labels.
    assert any("ann: **0**" in c and "bob: **1**" in c and "sentence 2" in c for c in cells)
    # r000 is labelled 0 (max): given that label every sentence is fine, whatever its raw score.
    assert sum("**0.00** (0.70)" in c for c in cells) == len(detail.sentences) == 4
    html = "\n".join(cells)
    shown = re.sub(r'title="[^"]*"', "", html)  # the source stays one hover away, in the title only
    assert "<math" in html and "$x^2" not in shown
