"""The Data page's pairs upload: a preference pairs file previewed as it will be read, then stored
(``db.pairs_ingest``) under the signed-in admin; the role is checked on the server before anything is stored."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from sqlalchemy import Engine

from app import render, state, uploads
from db.accounts import require_role
from db.pairs_ingest import PairsIngestSummary, ingest_pairs
from db.rows import UserRow
from fractal_core.data.pairs import iter_pairs
from fractal_core.errors import InputError

PREVIEW_PAIRS = 3


def import_pairs(
    engine: Engine, actor: UserRow, path: Path, dataset: str, segment_mode: str
) -> PairsIngestSummary:
    """Store a pairs file as ``actor`` (an admin): the pairs are recorded as imported by them, never by a name
    from the page or the file."""
    require_role(actor, "admin", "uploading data")
    return ingest_pairs(engine, path, dataset, segment_mode=segment_mode, imported_by=actor.name)  # type: ignore[arg-type]


def pairs_section(engine: Engine, actor: UserRow) -> None:
    """Upload preference pairs: file, dataset name, segmentation, a preview of the first pairs, Import."""
    st.subheader("Upload preference pairs", anchor=False)
    st.caption(
        "One pair per row: `id`, `context`, the two responses as `a_text`/`a_sentences` and `b_...` with "
        "`preferred` (a or b), or `chosen_...` and `rejected_...`; optional `strength` in [0, 1] and each "
        "response's own `<side>_id` and `<side>_response_label`. Bad rows are reported with their line and "
        "field, and nothing is stored."
    )
    upload = st.file_uploader("Pairs file", type=["jsonl", "json", "csv", "parquet"], key="pairs_upload")
    if upload is None:
        return
    saved = uploads.save_upload(state.settings(), upload.name, upload.getvalue())
    c1, c2 = st.columns(2)
    name = c1.text_input("Dataset", value=uploads.default_dataset_name(upload.name), key="pairs_dataset")
    segment_mode = c2.selectbox("Split raw text into", ["sentences", "steps"], key="pairs_segment")
    try:
        preview = []
        fmt, mode = uploads.format_of(upload.name), segment_mode
        for _, pair in iter_pairs(saved, format=fmt, segment_mode=mode):  # type: ignore[arg-type]
            preview.append(pair)
            if len(preview) >= PREVIEW_PAIRS:
                break
    except InputError as exc:
        uploads.discard(saved)
        st.error(uploads.describe_error(exc), icon=":material/error:")
        return
    st.markdown("**Preview** (first pairs, as they will be segmented)")
    for pair in preview:
        with st.container(border=True):
            st.html(render.render_title("Pair", pair.id))
            st.text(f"strength {pair.strength:g}")
            left, right = st.columns(2)
            for col, record, side in ((left, pair.chosen, "chosen"), (right, pair.rejected, "rejected")):
                with col:
                    st.text(f"{side}: {record.id}")  # a file's text: plain text, never Markdown
                    state.show_html(
                        render.render_response(
                            record.text, [(s.start, s.end) for s in record.spans], None, None
                        )
                    )
    if st.button("Import pairs", key="pairs_import", type="primary", disabled=not name.strip()):
        try:
            summary = import_pairs(engine, actor, saved, name.strip(), segment_mode)
        except InputError as exc:
            uploads.discard(saved)
            st.error("Nothing was stored. " + uploads.describe_error(exc), icon=":material/error:")
            return
        state.datasets_changed()
        ss = st.session_state
        ss[state.DATASET_KEY] = summary.dataset_id
        state.flash(
            f"Imported {summary.n_pairs} preference pairs ({summary.n_responses} responses, "
            f"{summary.n_sentences} sentences) into {summary.dataset!r}."
        )
        st.rerun()
