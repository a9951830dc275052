"""Data: upload responses (JSONL / CSV / Parquet), preview their segmentation, see datasets and their balance."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import actions, page, render, state, uploads
from app.pairs_upload import pairs_section
from db import repository as repo
from fractal_core.data.extras import ExtraColumns
from fractal_core.errors import InputError

ctx = page.page("Data", "admin")
user, engine = ctx.user, ctx.engine
ss = st.session_state

# ------------------------------------------------------------------------------------------- datasets
rows = repo.list_datasets(engine)
st.subheader("Datasets", anchor=False)
if not rows:
    st.info("No dataset yet. Upload a file below.")
else:
    st.dataframe(
        [
            {
                "dataset": d.name,
                "responses": d.n_responses,
                "sentences": d.n_sentences,
                "gold responses": d.n_gold_responses,
                "label kind": d.label_kind,
                "label balance": ", ".join(f"{k}: {v}" for k, v in sorted(d.label_balance.items())),
                "model": "active" if d.active_model_version_id else "none yet",
            }
            for d in rows
        ],
        hide_index=True,
    )

if st.toggle("Upload preference pairs (A better than B) instead", key="pairs_mode"):
    pairs_section(engine, user)  # their own upload form
    st.stop()

# ------------------------------------------------------------------------------------------- upload
st.subheader("Upload responses", anchor=False)
st.caption(
    "One response per row: `id`, `context` (optional), `text` or `sentences`, `response_label`, "
    "`aggregation` (max / min / mean), optional `sentence_labels`. Other columns are listed below, to keep in "
    "meta or leave out. Bad rows are reported with their line and field, and nothing is stored."
)
upload = st.file_uploader("File", type=["jsonl", "json", "csv", "parquet"], key="data_upload")
if upload is None:
    st.stop()

saved = uploads.save_upload(state.settings(), upload.name, upload.getvalue())
fmt = uploads.format_of(upload.name)
c1, c2, c3 = st.columns(3)
default_name = uploads.default_dataset_name(upload.name)
existing = {d.name for d in rows}
name = c1.text_input(
    "Dataset", value=default_name, key="data_dataset", help="A new or an existing dataset name"
)
segment_mode = c2.selectbox(
    "Split raw text into",
    ["sentences", "steps"],
    key="data_segment",
    help="How `text` is cut; pre-split `sentences` are kept as given (steps: one per line / numbered step)",
)
labels_as = c3.selectbox(
    "Sentence labels in the file are",
    ["imported", "gold"],
    key="data_labels_as",
    help="imported: kept for evaluation only; gold: trusted corrections used by training (hybrid prior)",
)

column_map: dict[str, str] | None = None
if fmt == "csv":
    header = uploads.csv_header(saved)
    st.markdown("**Column mapping** (which of your columns holds each field)")
    cols = st.columns(len(uploads.SCHEMA_FIELDS))
    column_map = {}
    for col, (field, required) in zip(cols, uploads.SCHEMA_FIELDS.items(), strict=True):
        guess = uploads.guess_column(field, header)
        options = ["(none)", *header]
        choice = col.selectbox(
            field + (" *" if required else ""),
            options,
            index=options.index(guess) if guess in options else 0,
            key=f"data_map_{field}",
        )
        if choice != "(none)" and choice != field:
            column_map[choice] = field

# Columns outside the schema (model name, timestamp, notes...): listed, then kept in each response's meta
# (default) or left out, as chosen; the library applies the choice (and refuses reserved meta keys).
extra_columns: ExtraColumns = "refuse"
extra_names = uploads.extra_columns(saved, fmt, column_map)
if extra_names:
    where = " (found in the first rows)" if fmt == "jsonl" else ""
    st.markdown(f"**Columns not in the schema**{where}")
    st.text(", ".join(extra_names))  # a file's text: shown as plain text, never Markdown or HTML
    for note in uploads.extra_notes(extra_names, fmt):
        st.warning(note, icon=":material/warning:")
    choice = st.radio(
        "Extra columns",
        list(uploads.EXTRA_CHOICES),
        key="data_extra_columns",
        horizontal=True,
        help="Kept in meta: each value is stored in the response's meta under the column's name (exports carry "
        "it). Left out: not stored. The import summary names them either way.",
    )
    extra_columns = uploads.EXTRA_CHOICES[choice]

# Response labels written as words (a verdict column of correct / wrong): each word gets a label value here;
# the library applies the mapping before validation and refuses any value left out, with its line.
label_map: dict[str, float] | None = None
if fmt == "csv":
    label_column = next((c for c, f in (column_map or {}).items() if f == "response_label"), "response_label")
    words = uploads.label_words(saved, label_column)
    if words:
        st.markdown(
            f"**Response labels are words** (column '{render.md_escape(label_column)}'): give each a label "
            "value. With `max` aggregation 1 means the response has a problem; a value left empty is refused."
        )
        label_map = {}
        cols = st.columns(min(len(words), 4))
        for i, word in enumerate(words):
            value = cols[i % len(cols)].number_input(
                render.md_escape(word) if word else "(empty)",  # a file's text: shown, never Markdown
                min_value=0.0,
                step=1.0,
                value=None,
                key=f"data_label_word_{i}",
            )
            if value is not None:
                label_map[word] = float(value)
        missing = [w for w in words if w not in label_map]
        if missing:
            st.info(
                "Give a label value to "
                + ", ".join(f"'{render.md_escape(w)}'" if w else "(empty)" for w in missing)
                + " to see the preview and import."
            )
            st.stop()

# Preview: parse the first rows exactly as ingest will (errors here already name line and field).
try:
    preview = uploads.preview(
        saved,
        fmt=fmt,
        segment_mode=segment_mode,
        column_map=column_map,
        label_map=label_map,
        extra_columns=extra_columns,
        limit=5,
    )
except InputError as exc:
    uploads.discard(saved)
    st.error(uploads.describe_error(exc), icon=":material/error:")
    st.stop()

st.markdown("**Preview** (first rows, as they will be segmented)")
for rec in preview:
    with st.container(border=True):
        st.html(render.render_title("Response", rec.id))
        if rec.criteria:  # several criteria: one dataset per criterion, of a group named as the dataset
            judged = ", ".join(f"{n} {c.response_label:g} ({c.aggregation})" for n, c in rec.criteria.items())
            st.text(f"criteria: {judged} · {len(rec.spans)} sentences")
        else:
            st.text(
                f"label {rec.response_label:g} · aggregation {rec.aggregation} · {len(rec.spans)} sentences"
            )
        if rec.meta:
            shown = json.dumps(rec.meta, ensure_ascii=False)
            st.text("meta: " + (shown if len(shown) <= 300 else shown[:297] + "..."))
        labels = rec.sentence_labels if labels_as == "gold" else None
        state.show_html(render.render_response(rec.text, [(s.start, s.end) for s in rec.spans], None, labels))

big = saved.stat().st_size > uploads.INLINE_MAX_BYTES
action = "Queue import (large file: runs in the worker)" if big else "Import"
if st.button(action, key="data_import", type="primary", disabled=not name.strip()):
    import_options = {
        "format": fmt,
        "segment_mode": segment_mode,
        "column_map": column_map,
        "label_map": label_map,
        "extra_columns": extra_columns,
        "labels_as": labels_as,
        "imported_by": state.annotator(),
    }
    if big:
        job = actions.queue_import(engine, user, saved, name.strip(), import_options)
        state.flash(f"Import queued as job {job.id}; follow it on the Train page.", "info")
        st.rerun()
    try:
        summary = actions.import_file(engine, user, saved, name.strip(), import_options)
    except InputError as exc:
        uploads.discard(saved)
        st.error("Nothing was stored. " + uploads.describe_error(exc), icon=":material/error:")
    else:
        state.datasets_changed()
        ss[state.DATASET_KEY] = summary.dataset_id
        into = (
            f"the datasets {', '.join(summary.criteria_datasets)} (one per criterion of the group "
            f"{summary.dataset!r})"
            if summary.criteria_datasets
            else f"{summary.dataset!r}" + ("" if name.strip() in existing else " (new dataset)")
        )
        state.flash(
            f"Imported {summary.n_responses} responses ({summary.n_sentences} sentences) into "
            + render.md_escape(into)
            + "."
            + (f" Extra columns {render.md_escape(summary.extras_note())}." if summary.extra_columns else "")
        )
        st.rerun()

if rows:
    st.subheader("Label balance", anchor=False)
    balance = pd.DataFrame(
        [
            {"dataset": d.name, "response label": k, "responses": v}
            for d in rows
            for k, v in d.label_balance.items()
        ]
    )
    st.bar_chart(balance, x="response label", y="responses", color="dataset", stack=False)
