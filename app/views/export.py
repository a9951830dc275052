"""Export: every format of the store as a download; large datasets are written by the worker."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import actions, jobs, page, render, state
from app.pairs_export_view import pairs_export_section
from db import repository as repo
from db.export import FORMATS

DESCRIPTIONS = {
    "native": "Native JSONL, lossless: text, offsets, labels with who/when, scores, provenance (re-importable)",
    "stepwise-jsonl": "Stepwise supervision {prompt, completions, labels} as JSONL (TRL PRM trainer)",
    "stepwise-parquet": "Stepwise supervision {prompt, completions, labels} as Parquet",
    "prm800k": "PRM800K-style step ratings (+1 / 0 / -1)",
    "kto": "Response-level {prompt, completion, label} (KTO)",
}
MIME = {".jsonl": "application/jsonl", ".parquet": "application/vnd.apache.parquet"}

ctx = page.dataset_page("Export", "admin", fresh=True)
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset

fmt = st.selectbox(
    "Format", list(FORMATS), format_func=lambda f: f"{f}: {DESCRIPTIONS.get(f, '')}", key="export_fmt"
)
versions = [mv for mv in repo.list_model_versions(engine, dataset.id) if mv.status == "ready"]
choices: list[int | None] = [None, *[mv.version for mv in versions]]
version = st.selectbox(
    "Scores from",
    choices,
    format_func=lambda v: "the active model version" if v is None else f"version {v}",
    key="export_version",
)
c1, c2 = st.columns(2)
human_only = c1.checkbox(
    "Human labels only",
    key="export_human_only",
    help="Only labels a person set here (human, adjudicated): no imported labels, no labels accepted from the model.",
)
soft_labels = c2.checkbox(
    "Add soft labels",
    key="export_soft_labels",
    help="Every unlabelled sentence gets the model's probability given the response label.",
)
options = {"human_only": human_only, "soft_labels": soft_labels}
inline = dataset.n_responses <= jobs.EXPORT_INLINE_MAX_RESPONSES
out = jobs.export_path(state.settings(), dataset.name, fmt)

if inline:
    if st.button("Prepare download", key="export_prepare", type="primary"):
        summary = actions.export_now(
            engine, user, dataset.id, out, format=fmt, model_version=version, **options
        )
        st.session_state["export_ready"] = {
            "path": summary.path,
            "rows": summary.n_rows,
            "skipped": summary.n_skipped,
            "why": "; ".join(f"{n}: {why}" for why, n in sorted(summary.left_out.items())),
        }
else:
    st.caption(f"{dataset.n_responses} responses: the export runs in the worker and appears below when done.")
    if st.button("Start export job", key="export_job", type="primary"):
        job = actions.queue_export(engine, user, dataset.id, format=fmt, model_version=version, **options)
        state.flash(f"Export job {job.id} queued.", "info")
        st.rerun()

pairs_export_section(engine, user, dataset, model_version=version, human_only=human_only)


def download(path_text: str, label: str, key: str) -> None:
    path = Path(path_text)
    if not path.exists():
        st.caption(render.md_escape(f"{path.name} is no longer on disk; export again."))
        return
    st.download_button(
        label,
        data=path.read_bytes(),
        file_name=path.name,
        mime=MIME.get(path.suffix, "application/octet-stream"),
        key=key,
    )


ready = st.session_state.get("export_ready")
if ready and Path(ready["path"]).name.startswith(f"{dataset.name}-"):
    left_out = f" ({ready['skipped']} responses left out: {ready.get('why', '')})" if ready["skipped"] else ""
    st.success(render.md_escape(f"{ready['rows']} rows written{left_out}."))
    download(ready["path"], f"Download {Path(ready['path']).name}", "export_download")


@st.fragment(run_every=2.0)
def export_jobs() -> None:
    assert dataset is not None
    recent = [
        j
        for j in repo.list_jobs(engine, kind="export", limit=20)
        if j.payload.get("dataset_id") == dataset.id
    ]
    if not recent:
        return
    st.subheader("Export jobs", anchor=False)
    for j in recent[:5]:
        line = f"Job {j.id}: {j.payload.get('format')} · {j.state}"
        if j.state == "succeeded":
            download(j.result["path"], f"Download ({line})", f"export_job_dl_{j.id}")
        elif j.state == "failed":
            st.error(render.md_escape(f"{line}: {j.error}"))
        else:
            st.progress(j.progress, text=render.md_escape(line))


export_jobs()
