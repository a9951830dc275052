"""AppTest behaviour: upload errors, imports, a correction stored, the consistency warning, undo, starting a job."""

from __future__ import annotations

import json

import numpy as np
import pytest

from db import repository as repo
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
    at.button(key="k_next").click().run()  # cursor to sentence 2
    at.button(key="k_zero").click().run()  # label it 0 (consistent with a 0 response)
    assert not at.exception
    history = repo.label_history(store.engine, response_id=first.id)
    assert [(h.sentence_id, h.old_label, h.new_label, h.annotator, h.source) for h in history] == [
        (first.sentences[1].id, None, 0, "tester", "human")
    ]
    at.button(key="k_undo").click().run()
    assert repo.get_response(store.engine, first.id).sentences[1].label is None


def test_contradicting_label_warns_before_storing(store) -> None:
    store.ingest(tiny_records(6))
    at = app_test("views/review.py")
    first = _first_response(store)
    at.button(key="k_one").click().run()  # a problem sentence in a response labelled 0 (max): contradiction
    assert any("contradicts the response label" in e.value for e in at.error)
    assert repo.label_history(store.engine, response_id=first.id) == []  # nothing stored yet
    at.button(key="pending_no").click().run()
    assert repo.label_history(store.engine, response_id=first.id) == []
    at.button(key="k_one").click().run()
    at.button(key="pending_yes").click().run()
    detail = repo.get_response(store.engine, first.id)
    assert detail.sentences[0].label == 1
    assert detail.consistency_warning  # the page keeps showing the stored contradiction
    assert any("contradict" in w.value for w in at.warning)


def test_per_sentence_control_stores_label(store) -> None:
    store.ingest(tiny_records(6))
    at = app_test("views/review.py")
    first = _first_response(store)
    sid = first.sentences[2].id
    control = next(w for w in at.get("button_group") if w.key and w.key.startswith(f"lab-{sid}-"))
    control.set_value("0").run()
    assert not at.exception
    assert repo.get_response(store.engine, first.id).sentences[2].label == 0


def test_save_and_next_moves_on(store) -> None:
    store.ingest(tiny_records(6))
    at = app_test("views/review.py")
    first = _first_response(store)
    at.button(key="k_save").click().run()  # nothing scored: nothing to accept, just the next response
    assert not at.exception
    assert at.session_state["review_response_id"] != first.id
    at.button(key="k_back").click().run()
    assert at.session_state["review_response_id"] == first.id


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
    assert at.session_state["review_response_id"] == rid


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
def test_review_with_scores_shows_colours_and_save_accepts_model_labels(store) -> None:
    from tests.app.data import FAST_TRAIN

    ds = store.ingest(tiny_records(8))
    repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
    )
    store.run_jobs()
    at = app_test("views/review.py")
    [response_html] = [m.value for m in at.markdown if m.value.startswith('<div class="fs-response"')]
    assert "fs-none" not in response_html and "fs-s" in response_html  # every sentence has a colour bin
    rid = at.session_state["review_response_id"]
    detail = repo.get_response(store.engine, rid)
    at.button(key="k_save").click().run()
    if any(b.key == "pending_yes" for b in at.button):  # the model's labels contradict the response label
        at.button(key="pending_yes").click().run()
    after = repo.get_response(store.engine, rid)
    assert [s.label for s in after.sentences] == [int(s.score >= 0.5) for s in detail.sentences]
    assert {s.label_source for s in after.sentences} == {"model"}
    assert at.session_state["review_response_id"] != rid


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
    assert at.session_state["review_response_id"] == first.id
    assert any(c.value.startswith("1 response ·") for c in at.caption)
    at.selectbox(key="review_status").set_value(None).run()
    at.text_input(key="review_annotator").input("someone-else").run()
    assert any("No response matches" in i.value for i in at.info)
    at.text_input(key="review_annotator").input("tester").run()
    assert at.session_state["review_response_id"] == first.id


def test_ordinal_dataset_offers_every_level(store) -> None:
    records = tiny_records(6)
    for i, r in enumerate(records):
        r["response_label"] = i % 3  # levels 0..2
    store.ingest(records)
    [ds] = repo.list_datasets(store.engine)
    assert ds.label_kind == "ordinal"
    at = app_test("views/review.py")
    rid = at.session_state["review_response_id"]
    detail = repo.get_response(store.engine, rid)
    if detail.response_label != 2:
        target = next(
            r.id for r in repo.list_responses(store.engine, ds.id, sort="id").rows if r.response_label == 2
        )
        at.session_state["review_response_id"] = target
        at.run()
        rid = target
    at.button(key="k_level_2").click().run()
    assert not at.exception
    assert repo.get_response(store.engine, rid).sentences[0].label == 2
    control = next(w for w in at.get("button_group") if w.key and w.key.startswith("lab-"))
    assert control.options == ["–", "0", "1", "2"]


def test_annotator_name_from_sidebar_is_recorded(store) -> None:
    store.ingest(tiny_records(4))
    at = app_test("views/review.py")
    assert at.text_input(key="annotator_name").value == "tester"  # FRACTAL_ANNOTATOR
    at.text_input(key="annotator_name").input("[bob](javascript:x)").run()
    first = _first_response(store)
    at.button(key="k_zero").click().run()
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
def test_first_problem_key_jumps_to_the_most_likely_first_error(store) -> None:
    from app import review
    from tests.app.data import FAST_TRAIN

    ds = store.ingest(tiny_records(8))
    repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
    )
    store.run_jobs()
    rows = repo.list_responses(store.engine, ds.dataset_id, sort="id").rows
    clean = repo.get_response(store.engine, next(r.id for r in rows if r.response_label == 0))
    assert review.likely_first_error(clean) is None  # labelled "no error": nothing to jump to
    at = app_test("views/review.py")
    target = next(r.id for r in rows if r.response_label == 1)
    at.session_state["review_response_id"] = target
    at.run()
    detail = repo.get_response(store.engine, target)
    p = [s.score for s in detail.sentences]
    first = [p[i] * np.prod([1 - q for q in p[:i]]) for i in range(len(p))]  # p_i * prod_{j<i} (1 - p_j)
    assert review.likely_first_error(detail)[0] == int(np.argmax(first))
    at.session_state["review_focus"] = (int(np.argmax(first)) + 1) % len(p)  # start elsewhere
    at.run()
    at.button(key="k_first").click().run()
    assert not at.exception
    assert at.session_state["review_focus"] == int(np.argmax(first))
