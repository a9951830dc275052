"""The upload page's choice for columns outside the schema: listed, kept in meta (default) or left out, named in
the summary; reserved meta keys refused; the choice reaches the preview, the inline import and the import job."""

from __future__ import annotations

import json

import pytest

from app import actions, uploads
from app.job_files import run_import
from db import accounts
from db import repository as repo
from tests.app.conftest import app_test, make_store
from tests.engines import ENGINES


@pytest.fixture(params=ENGINES)
def store(request, tmp_path, monkeypatch):
    with make_store(request.param, tmp_path, monkeypatch) as made:
        yield made


CSV = "uid,question,answer,y,model,<b>notes</b>\n" + "".join(
    f'u{i},"What is {i}+1?","It is {i + 1}. Done.",{i % 2},gpt-{i % 2},note *{i}*\n' for i in range(4)
)


def _upload(name: str, data: bytes, mime: str = "text/csv"):
    at = app_test("views/data.py")
    at.file_uploader[0].upload(name, data, mime)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def _stored_meta(store) -> dict[str, dict]:
    [ds] = repo.list_datasets(store.engine)
    return {r.id: r.meta for r in repo.load_records(store.engine, ds.id)}


def test_extra_columns_are_listed_and_kept_in_meta_by_default(store) -> None:
    at = _upload("t.csv", CSV.encode())
    assert at.selectbox(key="data_map_id").value == "uid"  # the mapping comes first, as before
    # Listed as plain text (never Markdown or HTML), with the default choice: keep them in meta.
    assert any(t.value == "model, <b>notes</b>" for t in at.text)
    assert at.radio(key="data_extra_columns").value == "keep them in each response's meta"
    assert any(t.value.startswith("meta: ") and '"model": "gpt-0"' in t.value for t in at.text)  # the preview
    at.button(key="data_import").click().run()
    assert not at.error, [e.value for e in at.error]
    assert _stored_meta(store)["u1"] == {"model": "gpt-1", "<b>notes</b>": "note *1*"}
    toast = " ".join(t.value for t in at.toast)
    assert "Imported 4 responses" in toast and "kept in meta" in toast
    assert "\\<b\\>notes\\</b\\>, model" in toast  # Markdown-escaped: the column name shows literally


def test_extra_columns_left_out_when_chosen(store) -> None:
    at = _upload("t.csv", CSV.encode())
    at.radio(key="data_extra_columns").set_value("leave them out").run()
    assert not at.error and not [t for t in at.text if t.value.startswith("meta: ")]
    at.button(key="data_import").click().run()
    assert not at.error, [e.value for e in at.error]
    assert set(map(json.dumps, _stored_meta(store).values())) == {"{}"}
    assert any("left out" in t.value and "\\<b\\>notes\\</b\\>, model" in t.value for t in at.toast)


def test_a_reserved_column_is_flagged_and_refused_unless_left_out(store) -> None:
    csv = "id,text,response_label,fractal\n" + "".join(f"r{i},Hi. There.,{i % 2},x\n" for i in range(3))
    at = app_test("views/data.py")
    at.file_uploader[0].upload("r.csv", csv.encode(), "text/csv")
    at.run()
    assert any("reserved" in w.value for w in at.warning)
    errors = " ".join(e.value for e in at.error)
    assert "Line 2, field fractal" in errors and "reserved" in errors
    assert not [b for b in at.button if b.key == "data_import"] and repo.list_datasets(store.engine) == []
    # The rejected file was deleted, but the page still holds it: choosing to leave the columns out imports it.
    at.radio(key="data_extra_columns").set_value("leave them out").run()
    assert not at.error, [e.value for e in at.error]
    at.button(key="data_import").click().run()
    assert _stored_meta(store) == {"r0": {}, "r1": {}, "r2": {}}


def test_jsonl_keys_outside_the_schema_are_listed_with_a_typo_warning(store) -> None:
    rows = [
        {"id": f"j{i}", "sentences": ["A.", "B."], "response_label": 0, "sentencelabels": [0, 0], "run": i}
        for i in range(3)
    ]
    at = _upload("j.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode(), "application/jsonl")
    assert any(t.value == "sentencelabels, run" for t in at.text)
    assert any("misspelt 'sentence_labels'" in w.value and "fix the name" in w.value for w in at.warning)
    at.radio(key="data_extra_columns").set_value("leave them out").run()
    at.button(key="data_import").click().run()
    assert _stored_meta(store)["j1"] == {}


def test_a_file_without_extras_offers_no_choice(store) -> None:
    csv = "id,text,response_label\n" + "".join(f"r{i},Hi. There.,{i % 2}\n" for i in range(3))
    at = _upload("plain.csv", csv.encode())
    assert not at.radio and not at.warning


def test_the_choice_reaches_the_import_job(store) -> None:
    path = store.home / "t.csv"
    path.write_text(CSV, encoding="utf-8")
    admin = accounts.add_user(store.engine, "boss", "admin", "a long enough password")
    options = {
        "format": "csv",
        "column_map": {"uid": "id", "question": "context", "answer": "text", "y": "response_label"},
        "extra_columns": "meta",
    }
    job = actions.queue_import(store.engine, admin, path, "queued", options)
    assert job.payload["extra_columns"] == "meta"

    class Ctx:
        lines: list[str] = []

        def set(self, *args, **kwargs) -> None:
            pass

        def log(self, line: str) -> None:
            self.lines.append(line)

    ctx = Ctx()
    result = run_import(store.engine, None, job.payload, ctx)  # type: ignore[arg-type]
    assert result["extra_columns"] == ["<b>notes</b>", "model"] and result["extras_mode"] == "meta"
    assert "extra columns kept in meta: <b>notes</b>, model" in ctx.lines[-1]
    assert _stored_meta(store)["u0"]["model"] == "gpt-0"
    assert uploads.extra_columns(path, "csv", options["column_map"]) == ["model", "<b>notes</b>"]


def test_header_cells_are_named_as_the_reader_names_them(tmp_path) -> None:
    path = tmp_path / "h.csv"
    path.write_text(" uid , verdict ,model\na,correct,m\nb,wrong,m\n", encoding="utf-8")
    assert uploads.csv_header(path) == ["uid", "verdict", "model"]
    assert uploads.label_words(path, "verdict") == ["correct", "wrong"]
    assert uploads.extra_columns(path, "csv", {"uid": "id", "verdict": "response_label"}) == ["model"]
