"""The Export page's preference pairs download: a dataset's pairs as {prompt, chosen, rejected} rows with step
labels, their sources, scores and the colouring given the preference (``db.pairs_export``); the role is checked
on the server before anything is written."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from sqlalchemy import Engine

from app import jobs, render, state
from db.accounts import require_role
from db.pairs_export import PairsExportSummary, export_pairs
from db.pairs_read import count_pairs
from db.rows import DatasetRow, UserRow

PAIRS_FORMAT = "pairs"
"""The name of the pairs export in the exports folder (``<dataset>-pairs.jsonl``)."""


def export_pairs_now(
    engine: Engine, actor: UserRow, dataset_id: int, out: Path, *, model_version: int | None, human_only: bool
) -> PairsExportSummary:
    require_role(actor, "admin", "exporting")
    return export_pairs(engine, dataset_id, out, model_version=model_version, human_only=human_only)


def pairs_export_section(
    engine: Engine, actor: UserRow, dataset: DatasetRow, *, model_version: int | None, human_only: bool
) -> None:
    """Shown only for a dataset that holds preference pairs."""
    n_pairs = count_pairs(engine, dataset.id)
    if not n_pairs:
        return
    st.subheader("Preference pairs", anchor=False)
    st.caption(
        f"{n_pairs} pairs as {{prompt, chosen, rejected}} rows with each response's steps, step labels and who set "
        "them, step scores and the colouring given the preference (scores from the version chosen above; "
        "'Human labels only' applies)."
    )
    if st.button("Prepare pairs download", key="export_pairs_prepare"):
        out = jobs.export_path(state.settings(), dataset.name, PAIRS_FORMAT)
        summary = export_pairs_now(
            engine, actor, dataset.id, out, model_version=model_version, human_only=human_only
        )
        st.session_state["export_pairs_ready"] = summary.path
    ready = st.session_state.get("export_pairs_ready")
    if ready and Path(ready).name.startswith(f"{dataset.name}-") and Path(ready).exists():
        st.download_button(
            f"Download {Path(ready).name}",
            data=Path(ready).read_bytes(),
            file_name=Path(ready).name,
            mime="application/jsonl",
            key="export_pairs_download",
        )
        st.caption(render.md_escape(f"{n_pairs} pairs written."))
