"""From a first upload to a scored Review without the command line: the upload queues embedding and training,
Review's "not scored yet" leads to the Train page, and response labels written as words are mapped in the form."""

from __future__ import annotations

import json

import pytest

from db import repository as repo
from db.ingest import ingest_file
from fractal_core.errors import InputError
from tests.app.conftest import app_test
from tests.app.data import tiny_records

VERDICTS = "uid,question,answer,verdict\n" + "".join(
    f'u{i},"What is {i}+1?","It is {i + 1 + i % 2}. Done.",{"wrong" if i % 2 else "correct"}\n'
    for i in range(6)
)


def _page_links(at) -> list[str]:
    return [f"{e.proto.page} {e.proto.label}" for e in at.get("page_link")]


def test_verdict_words_are_mapped_to_labels_in_the_upload_form(store) -> None:
    at = app_test("views/data.py")
    at.file_uploader[0].upload("verdicts.csv", VERDICTS.encode(), "text/csv")
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="data_map_response_label").value == "verdict"
    # The words are listed and must each get a value before anything can be imported.
    assert at.number_input(key="data_label_word_0").label == "correct"
    assert at.number_input(key="data_label_word_1").label == "wrong"
    assert any("'correct'" in i.value and "'wrong'" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "data_import"]
    at.number_input(key="data_label_word_0").set_value(0.0).run()
    assert any("'wrong'" in i.value and "'correct'" not in i.value for i in at.info)
    at.number_input(key="data_label_word_1").set_value(1.0).run()
    assert not at.error, [e.value for e in at.error]
    at.button(key="data_import").click().run()
    assert not at.exception and not at.error
    [ds] = repo.list_datasets(store.engine)
    page = repo.list_responses(store.engine, ds.id, sort="id", page=0, page_size=10)
    assert [r.response_label for r in page.rows] == [0, 1, 0, 1, 0, 1]
    # The upload queued embedding and the first training (which scores every response).
    jobs = sorted(repo.list_jobs(store.engine), key=lambda j: j.id)
    assert [(j.kind, j.payload["dataset_id"]) for j in jobs] == [("embed", ds.id), ("train", ds.id)]
    assert jobs[1].payload["method"] == "fractal" and jobs[1].idempotency_key == f"train:{ds.id}"


def test_an_unmapped_label_word_is_refused_with_its_line_and_nothing_is_stored(store) -> None:
    path = store.home / "verdicts.csv"
    path.write_text(VERDICTS.replace('u3,"What is 3+1?","It is 5. Done.",wrong', "u3,x,y,unsure"))
    with pytest.raises(InputError) as caught:
        ingest_file(
            store.engine,
            path,
            "v",
            column_map={"uid": "id", "question": "context", "answer": "text", "verdict": "response_label"},
            label_map={"correct": 0, "wrong": 1},
        )
    assert (caught.value.line, caught.value.field) == (5, "response_label")
    assert "unsure" in caught.value.reason
    assert repo.list_datasets(store.engine) == []


def test_upload_into_a_dataset_with_a_model_rescores_instead_of_training(store) -> None:
    from app.jobs import queue_after_import
    from db.repository import model_versions

    ds = store.ingest(tiny_records(4))
    assert [j.kind for j in queue_after_import(store.engine, ds.dataset_id)] == ["embed", "train"]
    mv = repo.create_model_version(store.engine, ds.dataset_id, method="hand")
    data = repo.load_training_set(store.engine, ds.dataset_id)
    repo.store_scores(store.engine, mv.id, data.sentence_ids, [0.5] * len(data.sentence_ids))
    model_versions.activate_if_not_worse(store.engine, repo.finish_model_version(store.engine, mv.id).id)
    assert [j.kind for j in queue_after_import(store.engine, ds.dataset_id)] == ["embed", "score"]


@pytest.mark.slow
def test_first_upload_ends_in_a_scored_review(store) -> None:
    at = app_test("views/data.py")
    data = "".join(json.dumps(r) + "\n" for r in tiny_records(8)).encode()
    at.file_uploader[0].upload("first.jsonl", data, "application/jsonl")
    at.run()
    at.button(key="data_import").click().run()
    assert not at.exception and not at.error

    review = app_test("views/review.py")
    assert not review.exception, review.exception
    assert any("not scored yet" in c.value for c in review.caption)
    assert any(
        link.startswith("train ") for link in _page_links(review)
    )  # not a dead end: one click to Train
    assert any("(train) is queued" in c.value for c in review.caption)

    store.run_jobs()  # the worker: embed, then train and score
    [ds] = repo.list_datasets(store.engine)
    assert ds.active_model_version_id is not None
    review = app_test("views/review.py")
    assert any("scores from the active model" in c.value for c in review.caption)
    page = repo.list_responses(store.engine, ds.id, sort="id", page=0, page_size=20)
    assert all(r.score is not None for r in page.rows)
