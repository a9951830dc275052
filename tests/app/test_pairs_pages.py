"""AppTest: every page renders on a dataset of preference pairs (responses without a label of their own)."""

from __future__ import annotations

import itertools
import json

import pytest

from db.pairs_ingest import ingest_pairs
from tests.app import review_driver as drive
from tests.app.conftest import app_test
from tests.app.test_pages import PAGES

_ids = itertools.count(10_000)

ROWS = [
    {
        "id": f"p{i}",
        "context": f"What is {i} + 2?",
        "a_text": f"It is {i + 5}. Done.",
        "b_text": f"It is {i + 2}. Done.",
        "preferred": "b",
    }
    for i in range(4)
]


@pytest.mark.parametrize("page", PAGES)
def test_page_with_a_pairs_dataset(store, tmp_path, page: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    app_test()  # creates the store as `fractal serve` does
    ingest_pairs(store.engine, path, "prefs", imported_by="tester")
    at = app_test(page)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    if page == "views/review.py":
        assert any(m.value == "none" for m in at.metric), "the response label of an unlabelled response"


def test_data_page_uploads_pairs_and_refuses_a_bad_row(store) -> None:
    from db import repository as repo

    at = app_test("views/data.py")
    at.toggle(key="pairs_mode").set_value(True).run()
    assert not at.exception, at.exception
    bad = [*ROWS[:1], {**ROWS[1], "preferred": "c"}]
    at.file_uploader[0].upload(
        "bad.jsonl", "".join(json.dumps(r) + "\n" for r in bad).encode(), "application/jsonl"
    )
    at.run()
    assert any("Line 2, field preferred" in e.value for e in at.error), [e.value for e in at.error]
    assert not [b for b in at.button if b.key == "pairs_import"]
    at.file_uploader[0].upload(
        "prefs.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS).encode(), "application/jsonl"
    )
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.text_input(key="pairs_dataset").set_value("prefs").run()
    at.button(key="pairs_import").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [ds] = repo.list_datasets(store.engine)
    assert ds.name == "prefs" and ds.n_responses == 8
    from db.pairs_read import load_pairs

    pairs = load_pairs(store.engine, ds.id)
    assert (
        len(pairs) == 4
        and {p.annotator for p in pairs} == {"tester"}
        and {p.source for p in pairs} == {"imported"}
    )


def test_export_page_writes_the_pairs(store, tmp_path) -> None:
    from app.settings import load_settings

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    app_test()
    ingest_pairs(store.engine, path, "prefs", imported_by="tester")
    at = app_test("views/export.py")
    assert not at.exception, at.exception
    at.button(key="export_pairs_prepare").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    out = load_settings(store.db_url).exports_dir / "prefs-pairs.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3"]
    assert rows[0]["chosen"] == "It is 2. Done." and rows[0]["rejected_scores"] is None  # no model yet
    assert rows[0]["preference_annotator"] == "tester"


def _pairs(store, tmp_path, rows=ROWS):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    app_test()
    return ingest_pairs(store.engine, path, "prefs", imported_by="tester")


def _sides(at):
    return drive.data(at)["pair"]["sides"]


def _event(at, side: int, kind: str = "set", labels: dict[int, int | None] | None = None):
    """A label event as the pair component builds it, on ``side`` (0 chosen, 1 rejected); ``labels`` maps
    sentence positions to levels."""
    shown = _sides(at)[side]
    by_position = {shown["sentences"][p]["id"]: v for p, v in (labels or {}).items()}
    versions = {s["id"]: s["version"] for s in shown["sentences"]}
    return {
        "id": next(_ids),
        "response_id": shown["id"],
        "kind": kind,
        "labels": {str(k): v for k, v in by_position.items()},
        "versions": {str(k): versions[k] for k in by_position},
    }


def _score_pairs(store, dataset_id: int, score: float = 0.3) -> None:
    """Every sentence of the dataset scored ``score`` by an active model version."""
    import numpy as np

    from db import repository as repo
    from fractal_core.mil.semantics import ResponseSummaries

    responses = [r.id for r in repo.list_responses(store.engine, dataset_id, page_size=100).rows]
    ids = [s.id for r in responses for s in repo.get_response(store.engine, r).sentences]
    mv = repo.create_model_version(store.engine, dataset_id, method="hand")
    repo.store_scores(store.engine, mv.id, ids, np.full(len(ids), score))
    b = len(responses)  # as the pairs job stores them: a response without a label disagrees with none
    summaries = ResponseSummaries(np.full(b, score), np.full(b, 0.5), np.zeros(b), np.full(b, -1, np.int8))
    repo.store_response_summaries(store.engine, mv.id, responses, summaries)
    repo.activate_model_version(store.engine, repo.finish_model_version(store.engine, mv.id).id)


def test_pairs_page_shows_a_pair_side_by_side_and_opens_review(store, tmp_path) -> None:
    _pairs(store, tmp_path)
    at = app_test("views/pairs.py")
    assert not at.exception, at.exception
    chosen, rejected = _sides(at)
    assert chosen["title"] == "Chosen · p0:b" and rejected["title"] == "Rejected · p0:a"
    assert "It is 2." in chosen["html"] and "It is 5." in rejected["html"]
    assert 'id="fs-side0-0"' in chosen["html"] and 'id="fs-side1-1"' in rejected["html"]
    assert all(s["colour"] is None for s in chosen["sentences"] + rejected["sentences"])
    assert chosen["first_error"] is None  # F has nowhere to go while unscored
    assert sum("Not scored yet" in c.value for c in at.caption) == 1
    at.number_input(key="pairs_index").set_value(2).run()
    assert _sides(at)[1]["title"] == "Rejected · p1:a"
    at.button(key="pairs_open_rejected").click().run()
    assert not at.exception, at.exception
    assert any(m.value == "none" for m in at.metric)  # Review shows the pair's unlabelled response


def test_pair_keys_label_both_sides_through_reviews_path(store, tmp_path) -> None:
    from db import repository as repo

    _pairs(store, tmp_path)
    at = app_test("views/pairs.py")
    first, second = _event(at, 0, labels={0: 0}), _event(at, 1, labels={1: 1})
    at = drive.press(at, first, second)
    assert not at.exception, at.exception
    chosen, rejected = _sides(at)
    assert drive.data(at)["acked"] == second["id"] and drive.data(at)["refused"] is None
    assert chosen["sentences"][0]["label"] == 0 and rejected["sentences"][1]["label"] == 1
    for shown, position, level in ((chosen, 0, 0), (rejected, 1, 1)):
        stored = repo.get_response(store.engine, shown["id"]).sentences[position]
        assert (stored.label, stored.label_source, stored.annotator) == (level, "human", "tester")
    # The same batch again (a reload before the answer arrived) stores nothing twice.
    at = drive.press(at, first, second)
    assert len(repo.label_history(store.engine, response_id=rejected["id"])) == 1
    # U undoes the last change of the side the cursor is on; a stale view is refused with the other label.
    at = drive.press(at, _event(at, 1, kind="undo"))
    assert repo.get_response(store.engine, rejected["id"]).sentences[1].label is None
    stale = _event(at, 0, labels={1: 1})
    repo.record_labels(store.engine, chosen["id"], {chosen["sentences"][1]["id"]: 0}, "bob")
    at = drive.press(at, stale)
    conflict = drive.data(at)["conflict"]
    assert conflict is not None and "bob set 0" in conflict["items"][0]["text"]
    assert repo.get_response(store.engine, chosen["id"]).sentences[1].label == 0


def test_pair_event_naming_the_other_sides_sentence_is_refused(store, tmp_path) -> None:
    from db import repository as repo

    _pairs(store, tmp_path)
    at = app_test("views/pairs.py")
    wrong = _event(at, 1, labels={0: 1})
    wrong["response_id"] = _sides(at)[0]["id"]  # the rejected side's sentence under the chosen response
    at = drive.press(at, wrong)
    assert "another response" in drive.data(at)["refused"]
    assert not repo.label_history(store.engine, response_id=_sides(at)[1]["id"])


def test_pair_labels_go_under_the_signed_in_name_and_respect_assignments(
    store, tmp_path, monkeypatch
) -> None:
    from db import accounts, team
    from db import repository as repo
    from tests.app.test_auth import PASSWORD, sign_in

    monkeypatch.setenv("FRACTAL_AUTH", "on")
    summary = _pairs(store, tmp_path)
    for name in ("ann", "cy"):
        accounts.add_user(store.engine, name, "annotator", PASSWORD)
    at = sign_in(app_test(), "ann")
    at.switch_page("views/pairs.py").run()
    assert not at.exception, at.exception
    at = drive.press(at, _event(at, 1, labels={0: 1}))
    rejected = _sides(at)[1]
    stored = repo.get_response(store.engine, rejected["id"]).sentences[0]
    assert (stored.label, stored.label_source, stored.annotator) == (1, "human", "ann")
    # Every response is now cy's work: the server refuses ann's label, and nothing is stored.
    chosen_id = _sides(at)[0]["id"]
    team.assign(store.engine, summary.dataset_id, ["cy"])
    at = drive.press(at, _event(at, 0, labels={0: 0}))
    assert drive.data(at)["refused"], drive.data(at)
    assert not repo.label_history(store.engine, response_id=chosen_id)


def test_colours_follow_the_labels_entered(store, tmp_path) -> None:
    summary = _pairs(store, tmp_path)
    _score_pairs(store, summary.dataset_id)
    at = app_test("views/pairs.py")
    chosen, rejected = _sides(at)
    before = [s["colour"] for s in chosen["sentences"] + rejected["sentences"]]
    assert all(c is not None for c in before)
    assert min(before[2:]) > 0.3 > max(before[:2])  # the loser explains the preference
    assert rejected["first_error"] in (0, 1) and not any("Not scored" in c.value for c in at.caption)
    at = drive.press(at, _event(at, 1, labels={0: 1}))
    chosen, rejected = _sides(at)
    after = [s["colour"] for s in chosen["sentences"] + rejected["sentences"]]
    assert after[2] == 1.0  # a labelled sentence is known
    assert after[3] < before[3]  # the loss is explained: the loser's other sentence falls
    assert after[:2] != before[:2]  # and the winner's sentences are re-conditioned too
    assert rejected["first_error"] == 1  # F skips the labelled sentence


def test_s_and_p_move_between_pairs(store, tmp_path) -> None:
    _pairs(store, tmp_path)
    at = app_test("views/pairs.py")
    at = drive.move(at, 1)
    assert not at.exception, at.exception
    assert at.number_input(key="pairs_index").value == 2 and _sides(at)[0]["title"] == "Chosen · p1:b"
    at = drive.move(at, -1)
    at = drive.move(at, -1)  # the first pair stays the first
    assert at.number_input(key="pairs_index").value == 1


def test_untrusted_pair_text_reaches_the_page_escaped(store, tmp_path) -> None:
    from tests.app.test_render import ALLOWED_TAGS, _attrs_ok, _parse
    from tests.app.xss_payloads import XSS_PAYLOADS

    rows = [
        {
            "id": f"x{i}<b>",
            "context": payload,
            "a_text": f"{payload} Done.",
            "b_text": "Fine.",
            "preferred": "b",
        }
        for i, payload in enumerate(XSS_PAYLOADS)
    ]
    _pairs(store, tmp_path, rows)
    at = app_test("views/pairs.py")
    for i, payload in enumerate(XSS_PAYLOADS):
        at.number_input(key="pairs_index").set_value(i + 1).run()
        assert not at.exception, at.exception
        chosen, rejected = _sides(at)
        assert rejected["title"] == f"Rejected · x{i}<b>:a"  # set as text by the browser
        for html in (rejected["html"], *(s["html"] for s in rejected["sentences"])):
            seen = _parse(html)
            assert all(t in ALLOWED_TAGS and _attrs_ok(t, a) for t, a in seen.tags), seen.tags
        assert payload in "".join(_parse(rejected["html"]).text)  # shown as text


@pytest.mark.slow
def test_pairs_page_colours_a_trained_pair(store, tmp_path) -> None:
    from db import repository as repo
    from tests.app.data import FAST_TRAIN

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    app_test()
    summary = ingest_pairs(store.engine, path, "prefs", imported_by="tester")
    repo.create_job(
        store.engine,
        "train",
        {"dataset_id": summary.dataset_id, "method": "fractal", "config": FAST_TRAIN, "seed": 0},
    )
    store.run_jobs()
    at = app_test("views/pairs.py")
    assert not at.exception, at.exception
    assert not any("Not scored yet" in c.value for c in at.caption)


def test_train_page_of_a_pairs_dataset_offers_the_responses_labels_choice(store, tmp_path) -> None:
    from db import repository as repo

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    app_test()
    ingest_pairs(store.engine, path, "prefs", imported_by="tester")
    at = app_test("views/train.py")
    choice = at.radio(key="train_response_labels")
    assert choice.value == "beside" and choice.options[1].startswith("Pairs alone")
    choice.set_value("alone").run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [job] = repo.list_jobs(store.engine, kind="train")
    assert job.payload["response_labels"] == "alone"


def test_train_page_of_a_responses_dataset_has_no_pairs_choice(store) -> None:
    from tests.app.data import tiny_records

    store.ingest(tiny_records(6))
    at = app_test("views/train.py")
    assert not [r for r in at.radio if r.key == "train_response_labels"]
