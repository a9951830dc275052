"""AppTest behaviour: upload errors, imports, a correction stored, the consistency warning, undo, starting a job."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from db import repository as repo
from tests.app import review_driver as drive
from tests.app.conftest import app_test
from tests.app.data import tiny_records


def _jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_upload_error_names_line_and_field_and_stores_nothing(store) -> None:
    records = tiny_records(4)
    del records[2]["response_label"]  # line 3
    at = app_test("views/data.py")
    at.file_uploader[0].upload("bad.jsonl", _jsonl(records), "application/jsonl")
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Line 3" in errors and "response\\_label" in errors
    assert not [b for b in at.button if b.key == "data_import"]  # no import offered for a broken file
    assert repo.list_datasets(store.engine) == []


def test_upload_error_after_the_preview_rows_is_reported_on_import(store) -> None:
    records = tiny_records(9)
    records[8]["aggregation"] = "median"  # line 9: beyond the 5-row preview
    at = app_test("views/data.py")
    at.file_uploader[0].upload("late.jsonl", _jsonl(records), "application/jsonl")
    at.run()
    assert not at.error
    at.button(key="data_import").click().run()
    errors = " ".join(e.value for e in at.error)
    assert "Nothing was stored" in errors and "Line 9" in errors and "aggregation" in errors
    assert repo.list_datasets(store.engine) == []


def test_upload_imports_and_selects_dataset(store) -> None:
    at = app_test("views/data.py")
    at.file_uploader[0].upload("my data.jsonl", _jsonl(tiny_records(6)), "application/jsonl")
    at.run()
    assert at.text_input(key="data_dataset").value == "my-data"
    at.button(key="data_import").click().run()
    assert not at.exception
    [ds] = repo.list_datasets(store.engine)
    assert (ds.name, ds.n_responses) == ("my-data", 6)
    assert any("Imported 6 responses" in t.value for t in at.toast)


def test_csv_column_mapping(store) -> None:
    csv = "uid,question,answer,y\n" + "".join(
        f'u{i},"What is {i}+1?","It is {i + 1}. Done.",{i % 2}\n' for i in range(4)
    )
    at = app_test("views/data.py")
    at.file_uploader[0].upload("t.csv", csv.encode(), "text/csv")
    at.run()
    # The guesses map uid -> id, question -> context, answer -> text, y -> response_label.
    assert at.selectbox(key="data_map_id").value == "uid"
    assert at.selectbox(key="data_map_response_label").value == "y"
    at.button(key="data_import").click().run()
    assert not at.error, [e.value for e in at.error]
    [ds] = repo.list_datasets(store.engine)
    assert ds.n_responses == 4 and ds.n_sentences == 8


def _first_response(store):
    ds = repo.list_datasets(store.engine)[0]
    page = repo.list_responses(store.engine, ds.id, sort="id", page=0, page_size=1)
    return repo.get_response(store.engine, page.rows[0].id)


def test_keyboard_correction_is_stored_with_who_and_undo_reverts(store) -> None:
    store.ingest(tiny_records(6))
    at = app_test("views/review.py")
    first = _first_response(store)
    assert first.response_label == 0
    drive.label(at, 1, 0)  # sentence 2 labelled 0 (consistent with a 0 response)
    assert not at.exception
    history = repo.label_history(store.engine, response_id=first.id)
    assert [(h.sentence_id, h.old_label, h.new_label, h.annotator, h.source) for h in history] == [
        (first.sentences[1].id, None, 0, "tester", "human")
    ]
    shown = drive.data(at)
    assert shown["acked"] > 0 and shown["response"]["sentences"][1]["label"] == 0  # the browser shows "saved"
    drive.press(at, drive.event(at, "undo"))
    assert repo.get_response(store.engine, first.id).sentences[1].label is None


def test_contradicting_label_warns_before_storing(store) -> None:
    store.ingest(tiny_records(6))
    at = app_test("views/review.py")
    first = _first_response(store)
    drive.label(at, 0, 1)  # a problem sentence in a response labelled 0 (max): contradiction
    question = drive.data(at)["question"]
    assert question is not None and "response label" in question["warning"]
    assert repo.label_history(store.engine, response_id=first.id) == []  # nothing stored yet
    # Esc drops the change in the browser; Y sends the same change again, "store anyway".
    drive.label(at, 0, 1, force=True)
    assert drive.data(at)["question"] is None
    detail = repo.get_response(store.engine, first.id)
    assert detail.sentences[0].label == 1
    assert detail.consistency_warning  # the page keeps showing the stored contradiction
    assert any("contradict" in w.value for w in at.warning)


def test_sentence_list_under_the_response_renders_math(store) -> None:
    records = tiny_records(2)
    records[0]["sentences"][0] = "So $x^2 = 4$ and the answer is \\boxed{2}."
    store.ingest(records)
    at = app_test("views/review.py")
    [first] = drive.data(at)["response"]["sentences"][:1]
    visible = re.sub(r'title="[^"]*"', "", first["html"])  # the source stays only in the hover title
    assert visible.count("<math") == 2 and "$" not in visible and "boxed" not in visible


def test_save_and_next_moves_on(store) -> None:
    store.ingest(tiny_records(6))
    at = app_test("views/review.py")
    first = _first_response(store)
    drive.press(
        at, drive.event(at, "accept_rest")
    )  # nothing scored: nothing to accept, just the next response
    assert not at.exception
    assert drive.nav(at).response_id != first.id
    drive.move(at, -1)
    assert drive.nav(at).response_id == first.id
    drive.move(at, 1)
    assert drive.nav(at).response_id != first.id


def test_start_training_twice_makes_one_job(store) -> None:
    ds = store.ingest(tiny_records(6))
    at = app_test("views/train.py")
    at.button(key="train_start").click().run()
    at.button(key="train_start").click().run()
    assert not at.exception
    jobs = repo.list_jobs(store.engine, kind="train")
    assert len(jobs) == 1 and jobs[0].state == "queued" and jobs[0].payload["dataset_id"] == ds.dataset_id
    at.button(key=f"cancel_{jobs[0].id}").click().run()
    assert repo.get_job(store.engine, jobs[0].id).state == "cancelled"


@pytest.mark.slow
def test_gold_queue_opens_review(store) -> None:
    store.ingest(tiny_records(8))
    at = app_test("views/gold.py")
    assert any("0 / 8" in str(m.value) for m in at.metric)
    button = next(b for b in at.button if b.key and b.key.startswith("gold_open_"))
    rid = int(button.key.rsplit("_", 1)[1])
    button.click().run()
    assert drive.nav(at).response_id == rid


def _two_versions(store):
    from tests.app.data import FAST_TRAIN

    ds = store.ingest(tiny_records(10, with_labels=True), labels_as="gold")
    for _ in range(2):
        repo.create_job(
            store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
        )
        store.run_jobs()
    return ds


@pytest.mark.slow
def test_models_page_rollback_and_activate(store) -> None:
    ds = _two_versions(store)
    at = app_test("views/models.py")
    assert not at.exception, at.exception
    assert (
        len(at.get("plotly_chart")) >= 3
    )  # score distribution, reliability, version comparison (+ budget curve)
    assert repo.active_model_version(store.engine, ds.dataset_id).version == 2
    at.button(key="models_rollback").click().run()
    assert repo.active_model_version(store.engine, ds.dataset_id).version == 1
    v2 = next(mv for mv in repo.list_model_versions(store.engine, ds.dataset_id) if mv.version == 2)
    at.selectbox(key="models_pick").set_value(v2.id).run()
    at.button(key="models_activate").click().run()
    assert repo.active_model_version(store.engine, ds.dataset_id).version == 2


@pytest.mark.slow
def test_train_page_shows_finished_job(store) -> None:
    _two_versions(store)
    at = app_test("views/train.py")
    assert not at.exception
    assert any("model version 2 is active" in s.value for s in at.success)
    assert "[embed]" in at.code[0].value


def test_export_page_prepares_every_format(store) -> None:
    store.ingest(tiny_records(5, with_labels=True))
    at = app_test("views/export.py")
    for fmt in ("native", "stepwise-jsonl", "stepwise-parquet", "prm800k", "kto"):
        at.selectbox(key="export_fmt").set_value(fmt).run()
        at.button(key="export_prepare").click().run()
        assert not at.exception, at.exception
        assert any("rows written" in s.value for s in at.success), fmt
        assert at.get("download_button"), fmt


@pytest.mark.slow
def test_review_with_scores_colours_by_the_reviewer_view_and_n_accepts_its_labels(store) -> None:
    from app import review
    from fractal_core.mil import reviewer
    from tests.app.data import FAST_TRAIN

    ds = store.ingest(tiny_records(8))
    repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
    )
    store.run_jobs()
    at = app_test("views/review.py")
    shown = drive.data(at)["response"]
    rid = shown["id"]
    detail = repo.get_response(store.engine, rid)
    assert all(s["score"] is not None for s in shown["sentences"])  # the browser colours every sentence
    # The F key's target is the library's pick for the stored labels, with the version's rule.
    scores = np.array([s.score for s in detail.sentences])
    entered = np.full(len(scores), np.nan)
    assert shown["first_error"] == reviewer.pick_first_error(
        scores, entered, detail.response_label, aggregation="max", rule=reviewer.DEFAULT_FIRST_ERROR_RULE
    )
    drive.press(at, drive.event(at, "accept_rest"))  # N
    want = reviewer.accept_rest(scores, entered, detail.response_label, aggregation="max")
    after = repo.get_response(store.engine, rid)
    assert [s.label for s in after.sentences] == want.tolist()
    assert {s.label_source for s in after.sentences} == {review.MODEL_SOURCE}
    assert drive.nav(at).response_id != rid


def test_import_into_a_new_dataset_selects_it_and_sidebar_switches_back(store) -> None:
    store.ingest(tiny_records(3), name="first")
    at = app_test("views/data.py")
    at.file_uploader[0].upload("second.jsonl", _jsonl(tiny_records(5)), "application/jsonl")
    at.run()
    at.button(key="data_import").click().run()
    second = repo.require_dataset(store.engine, "second")
    assert at.session_state["dataset_id"] == second.id
    assert at.selectbox(key="_ds_select").value == second.id
    first = repo.require_dataset(store.engine, "first")
    at.selectbox(key="_ds_select").set_value(first.id).run()
    assert at.session_state["dataset_id"] == first.id


def test_review_filters_by_status_and_annotator(store) -> None:
    store.ingest(tiny_records(6))
    first = _first_response(store)
    repo.record_label(store.engine, first.sentences[0].id, 0, "tester")
    at = app_test("views/review.py")
    at.selectbox(key="review_status").set_value("any_gold").run()
    assert drive.nav(at).response_id == first.id
    assert any(c.value.startswith("1 response ·") for c in at.caption)
    at.selectbox(key="review_status").set_value(None).run()
    at.text_input(key="review_annotator").input("someone-else").run()
    assert any("No response matches" in i.value for i in at.info)
    at.text_input(key="review_annotator").input("tester").run()
    assert drive.nav(at).response_id == first.id


def test_ordinal_dataset_offers_every_level(store) -> None:
    records = tiny_records(6)
    for i, r in enumerate(records):
        r["response_label"] = i % 3  # levels 0..2
    store.ingest(records)
    [ds] = repo.list_datasets(store.engine)
    assert ds.label_kind == "ordinal"
    at = app_test("views/review.py")
    assert drive.data(at)["levels"] == [0, 1, 2]
    target = next(
        r.id for r in repo.list_responses(store.engine, ds.id, sort="id").rows if r.response_label == 2
    )
    drive.nav(at).response_id = target
    at.run()
    drive.label(at, 0, 2)
    assert not at.exception
    assert repo.get_response(store.engine, target).sentences[0].label == 2


def test_annotator_name_from_sidebar_is_recorded(store) -> None:
    store.ingest(tiny_records(4))
    at = app_test("views/review.py")
    assert at.text_input(key="annotator_name").value == "tester"  # FRACTAL_ANNOTATOR
    at.text_input(key="annotator_name").input("[bob](javascript:x)").run()
    first = _first_response(store)
    drive.label(at, 0, 0)
    [event] = repo.label_history(store.engine, response_id=first.id)
    assert event.annotator == "[bob](javascript:x)"
    assert (
        at.query_params["who"] == ["[bob](javascript:x)"] or at.query_params["who"] == "[bob](javascript:x)"
    )


@pytest.mark.slow
def test_large_upload_and_export_go_to_the_worker(store, monkeypatch) -> None:
    from app import jobs, uploads

    monkeypatch.setattr(uploads, "INLINE_MAX_BYTES", 10)
    monkeypatch.setattr(jobs, "EXPORT_INLINE_MAX_RESPONSES", 1)
    at = app_test("views/data.py")
    at.file_uploader[0].upload("big.jsonl", _jsonl(tiny_records(4)), "application/jsonl")
    at.run()
    at.button(key="data_import").click().run()
    assert repo.list_datasets(store.engine) == []  # nothing imported in the web process
    [job] = repo.list_jobs(store.engine, kind="import")
    assert job.state == "queued" and job.payload["dataset"] == "big"
    store.run_jobs()
    ds = repo.require_dataset(store.engine, "big")
    assert ds.n_responses == 4
    at = app_test("views/export.py")
    at.button(key="export_job").click().run()
    [export] = repo.list_jobs(store.engine, kind="export")
    store.run_jobs()
    at.run()
    assert repo.get_job(store.engine, export.id).state == "succeeded"
    assert any(b.key == f"export_job_dl_{export.id}" for b in at.get("download_button"))


@pytest.mark.slow
def test_first_problem_key_uses_the_rule_stored_with_the_model_version(store) -> None:
    from app import review
    from fractal_core.mil import reviewer
    from tests.app.data import FAST_TRAIN

    ds = store.ingest(tiny_records(8))
    repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
    )
    store.run_jobs()
    rows = repo.list_responses(store.engine, ds.dataset_id, sort="id").rows
    clean = repo.get_response(store.engine, next(r.id for r in rows if r.response_label == 0))
    rule = review.first_error_rule(repo.active_model_version(store.engine, ds.dataset_id))
    assert rule.rule == reviewer.DEFAULT_FIRST_ERROR_RULE  # the version stores none: the library's default
    assert review.first_error(clean, rule=rule) is None  # labelled "no error": nothing to jump to
    target = repo.get_response(store.engine, next(r.id for r in rows if r.response_label == 1))
    p = np.array([s.score for s in target.sentences])
    first = [p[i] * np.prod([1 - q for q in p[:i]]) for i in range(len(p))]  # p_i * prod_{j<i} (1 - p_j)
    mode = review.first_error(target, rule=review.FirstErrorRule("first_error_mode"))
    assert mode == int(np.argmax(first))
    at = app_test("views/review.py")
    drive.nav(at).response_id = target.id
    at.run()
    assert drive.data(at)["response"]["first_error"] == review.first_error(target, rule=rule)
