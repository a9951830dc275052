"""AppTest checks for the rough edges a new user hit: each fails on the behaviour it replaces."""

from __future__ import annotations

import pytest

from db import repository as repo
from tests.app import review_driver as drive
from tests.app.conftest import app_test
from tests.app.data import FAST_TRAIN, tiny_records


def _progress_text(at) -> str:
    return at.get("progress")[0].proto.text


# ------------------------------------------------------------------------------------------------ Train page


def test_supervised_without_gold_is_refused_at_submit(store) -> None:
    store.ingest(tiny_records(6))
    at = app_test("views/train.py")
    at.selectbox(key="train_method").set_value("supervised").run()
    assert any("has none yet" in w.value for w in at.warning)
    assert at.button(key="train_start").disabled  # a browser cannot click it (AppTest refuses too)
    assert repo.list_jobs(store.engine, kind="train") == []
    # With gold labels the same method is offered.
    store.ingest(tiny_records(6, with_labels=True), name="gold", labels_as="gold")
    at = app_test("views/train.py")
    at.selectbox(key="_ds_select").set_value(repo.require_dataset(store.engine, "gold").id).run()
    at.selectbox(key="train_method").set_value("supervised").run()
    assert not at.button(key="train_start").disabled and not at.warning


def test_a_failed_job_shows_one_line_and_no_traceback(store) -> None:
    ds = store.ingest(tiny_records(6))
    # A job queued behind the page's back (the CLI, an old client) still fails cleanly in the worker.
    job = repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "supervised", "config": FAST_TRAIN}
    )
    store.run_jobs()
    done = repo.get_job(store.engine, job.id)
    assert done.state == "failed" and "\n" not in (done.error or "") and "gold sentence labels" in done.error
    assert "Traceback" not in done.log and 'File "' not in done.log
    at = app_test("views/train.py")
    [error] = at.error
    assert "gold sentence labels" in error.value and "Traceback" not in error.value
    assert not any("Traceback" in c.value or 'File "' in c.value for c in at.code)
    assert any("No model is active for this dataset yet" in i.value for i in at.info)
    assert _progress_text(at).startswith("failed at ")


def test_cancelled_job_says_no_model_when_there_was_none(store) -> None:
    ds = store.ingest(tiny_records(6))
    job = repo.create_job(store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal"})
    repo.request_cancel(store.engine, job.id)
    at = app_test("views/train.py")
    infos = " ".join(i.value for i in at.info)
    assert "previously active model" not in infos and "No model is active for this dataset yet" in infos
    assert _progress_text(at).startswith("cancelled")


@pytest.mark.slow
def test_a_killed_job_can_be_retried_from_the_train_page(store) -> None:
    """A job failed because its worker died (the worker marks it on start) gets a Retry button that queues the
    same job again."""
    ds = store.ingest(tiny_records(6))
    payload = {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
    job = repo.create_job(store.engine, "train", payload, idempotency_key=f"train:{ds.dataset_id}")
    repo.claim_next_job(store.engine, "elsewhere:1")
    repo.finish_job(store.engine, job.id, "failed", error="worker elsewhere:1 died while running this job")
    at = app_test("views/train.py")
    at.button(key=f"retry_{job.id}").click().run()
    assert not at.exception
    again = [j for j in repo.list_jobs(store.engine, kind="train") if j.id != job.id]
    assert [(j.state, j.payload, j.idempotency_key) for j in again] == [
        ("queued", payload, f"train:{ds.dataset_id}")
    ]
    store.run_jobs()
    assert repo.get_job(store.engine, again[0].id).state == "succeeded"


@pytest.mark.slow
def test_finished_job_status_line_says_how_it_ended(store) -> None:
    ds = store.ingest(tiny_records(8))
    repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
    )
    store.run_jobs()
    at = app_test("views/train.py")
    [train] = [j for j in repo.list_jobs(store.engine) if j.kind == "train"]
    assert train.message and train.message != "succeeded"  # the worker's last progress message
    text = _progress_text(at)
    assert text.startswith("succeeded at ") and train.message not in text


# ------------------------------------------------------------------------------------------------ Gold queue


def _bare_strings(path) -> list[str]:
    """Expression statements that are string literals, other than the module docstring: Streamlit's magic
    writes each onto the page."""
    import ast

    body = ast.parse(path.read_text()).body
    return [
        node.value.value
        for i, node in enumerate(body)
        if i > 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if isinstance(node.value.value, str)
    ]


def test_no_page_writes_a_stray_docstring() -> None:
    from tests.app.conftest import REPO

    pages = [REPO / "app" / "main.py", *sorted((REPO / "app" / "views").glob("*.py"))]
    assert {p.name: _bare_strings(p) for p in pages} == {p.name: [] for p in pages}


def test_gold_queue_title_comes_first_and_budget_reads_right(store) -> None:
    store.ingest(tiny_records(8))
    at = app_test("views/gold.py")
    assert not at.exception
    assert not [m.value for m in at.markdown if "strateg" in m.value or "orderings" in m.value]
    assert any(m.value == "10% = 1 response" for m in at.metric)
    assert "1 to go" in _progress_text(at) and "0 responses with gold labels of the 1" in _progress_text(at)
    ds = repo.list_datasets(store.engine)[0]
    for row in repo.list_responses(store.engine, ds.id, sort="id", page_size=2).rows:
        repo.record_label(store.engine, repo.get_response(store.engine, row.id).sentences[0].id, 0, "tester")
    at = app_test("views/gold.py")
    text = _progress_text(at)
    assert text.startswith("Target reached: 2 responses with gold labels") and "of the 1 gold" not in text


def test_review_opened_from_the_gold_queue_follows_the_queue(store) -> None:
    store.ingest(tiny_records(8))
    at = app_test("views/gold.py")
    buttons = [b for b in at.button if b.key and b.key.startswith("gold_open_")]
    queue = [int(b.key.rsplit("_", 1)[1]) for b in buttons]
    buttons[3].click().run()
    assert drive.nav(at).response_id == queue[3]
    at.switch_page("views/review.py").run()  # AppTest does not follow st.switch_page for later runs
    assert drive.nav(at).response_id == queue[3]
    assert any(c.value.startswith("Following the Gold queue") for c in at.caption)
    assert any(m.value == "4 / 8" for m in at.metric)
    drive.move(at, 1)
    assert drive.nav(at).response_id == queue[4]
    drive.move(at, -1)
    drive.move(at, -1)
    assert drive.nav(at).response_id == queue[2]
    drive.press(
        at, drive.event(at, "accept_rest")
    )  # save & next (nothing scored to accept) moves along the queue too
    assert drive.nav(at).response_id == queue[3]
    at.button(key="review_leave_queue").click().run()  # back to the list: S follows the list again
    assert not any(c.value.startswith("Following") for c in at.caption)


# ------------------------------------------------------------------------------------------------ links


def _app_with_params(**params: str):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO

    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def test_link_to_a_missing_dataset_says_so(store) -> None:
    store.ingest(tiny_records(4), name="only")
    at = _app_with_params(dataset="999")
    assert not at.exception
    assert any("dataset 999" in w.value and "only" in w.value for w in at.warning)
    # Link text is shown as text: Markdown in it is escaped.
    at = _app_with_params(dataset="[x](javascript:alert(1))")
    assert any("\\[x\\]\\(javascript\\:alert\\(1\\)\\)" in w.value for w in at.warning)
    at = _app_with_params(dataset=str(repo.list_datasets(store.engine)[0].id), response="**bold**")
    assert any("\\*\\*bold\\*\\*" in w.value for w in at.warning)


def test_link_past_the_end_of_the_list_says_so(store) -> None:
    store.ingest(tiny_records(4))
    ds = repo.list_datasets(store.engine)[0]
    at = _app_with_params(dataset=str(ds.id), i="5000")
    assert any(
        "position 5001" in w.value and "out of range" in w.value and "4 responses" in w.value
        for w in at.warning
    )
    assert any(m.value == "4 / 4" for m in at.metric)  # the last position, said so (not a silent 1)


def test_link_to_a_response_shows_its_real_position(store) -> None:
    store.ingest(tiny_records(4))
    ds = repo.list_datasets(store.engine)[0]
    rows = repo.list_responses(store.engine, ds.id, sort="uncertainty").rows
    rid = rows[2].id
    for params in (
        {"response": str(rid)},
        {"response": str(rid), "i": "100000"},
        {"response": str(rid), "i": "0"},
    ):
        at = _app_with_params(dataset=str(ds.id), **params)
        assert drive.nav(at).response_id == rid, params
        assert any(m.value == "3 / 4" for m in at.metric), (params, [m.value for m in at.metric])
        assert not at.warning, params


def test_link_to_a_missing_response_says_so(store) -> None:
    store.ingest(tiny_records(4))
    ds = repo.list_datasets(store.engine)[0]
    at = _app_with_params(dataset=str(ds.id), response="987654", i="0")
    assert any("987654" in w.value and "not in the dataset" in w.value for w in at.warning)


# ------------------------------------------------------------------------------------------------ uploads


def _jsonl(records) -> bytes:
    import json

    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_rejected_uploads_are_deleted(store, monkeypatch) -> None:
    from app import uploads

    folder = store.home / "uploads"
    records = tiny_records(4)
    del records[1]["response_label"]  # rejected by the preview
    at = app_test("views/data.py")
    at.file_uploader[0].upload("bad.jsonl", _jsonl(records), "application/jsonl")
    at.run()
    assert at.error and list(folder.iterdir()) == []
    late = tiny_records(9)
    late[8]["aggregation"] = "median"  # past the preview: rejected on import
    at = app_test("views/data.py")
    at.file_uploader[0].upload("late.jsonl", _jsonl(late), "application/jsonl")
    at.run()
    at.button(key="data_import").click().run()
    assert at.error and list(folder.iterdir()) == []
    # A large file is imported by the worker; rejected there, it is deleted too.
    monkeypatch.setattr(uploads, "INLINE_MAX_BYTES", 10)
    at = app_test("views/data.py")
    at.file_uploader[0].upload("big.jsonl", _jsonl(late), "application/jsonl")
    at.run()
    at.button(key="data_import").click().run()
    assert len(list(folder.iterdir())) == 1
    store.run_jobs()
    [job] = repo.list_jobs(store.engine, kind="import")
    assert job.state == "failed" and "aggregation" in (job.error or "")
    assert list(folder.iterdir()) == []


# ------------------------------------------------------------------------------------------------ Models page


@pytest.mark.slow
def test_gold_auc_is_shown_with_its_sample_size_and_interval(store) -> None:
    ds = store.ingest(tiny_records(10, with_labels=True), labels_as="gold")
    repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
    )
    store.run_jobs()
    [mv] = repo.list_model_versions(store.engine, ds.dataset_id)
    n = int(mv.metrics["gold_after"]["instance_count"])
    positives = int(mv.metrics["gold_after"]["instance_positives"])
    at = app_test("views/models.py")
    table = at.dataframe[0].value
    row = table.iloc[0]
    assert row["gold n (problem / fine)"] == f"{n} ({positives} / {n - positives})"
    auc = mv.metrics["gold_after"]["instance_auc_roc"]
    assert row["AUC after [95% CI]"].startswith(f"{auc:.3f} [")
    lo, hi = (float(x) for x in row["AUC after [95% CI]"].split("[")[1].rstrip("]").split(","))
    assert lo <= auc <= hi and hi - lo > 0.05  # a few dozen sentences: a wide interval


@pytest.mark.slow
def test_method_choice_shows_the_rule_and_each_candidates_standard_error(store) -> None:
    ds = store.ingest(tiny_records(12, with_labels=True))  # response labels only: the likelihood criterion
    repo.create_job(
        store.engine, "train", {"dataset_id": ds.dataset_id, "method": "fractal", "config": FAST_TRAIN}
    )
    store.run_jobs()
    [mv] = repo.list_model_versions(store.engine, ds.dataset_id)
    stored = mv.metrics["method_choice"]
    at = app_test("views/models.py")
    assert not at.exception, at.exception
    assert any(stored["rule"] in c.value for c in at.caption)
    table = next(d.value for d in at.dataframe if "paired SE" in d.value.columns)
    assert list(table["candidate"]) == [c["name"] for c in stored["candidates"]]
    for (_, row), c in zip(table.iterrows(), stored["candidates"], strict=True):
        assert row["paired SE"] == pytest.approx(c["paired_se"])
        assert row["gap to best"] == pytest.approx(c["gap_to_best"])
        assert row["within band"] == ("yes" if c["within_band"] else "no")
        assert row["chosen"] == ("●" if c["chosen"] else "")


def test_upload_error_names_the_real_column(store) -> None:
    csv = "id,text,sentence_labels,response_label\n" + 'a,"Hi ""there"". Bye.","[0,,1]",1\n'
    at = app_test("views/data.py")
    at.file_uploader[0].upload("bad.csv", csv.encode(), "text/csv")
    at.run()
    errors = " ".join(e.value for e in at.error)
    assert "Line 2" in errors and "column 28" in errors and "column 4" not in errors
