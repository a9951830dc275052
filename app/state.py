"""Per-process resources and per-session selections shared by the pages (UI glue only, no business logic).

The engine is created once per Streamlit process (``st.cache_resource``); the selected dataset, the response
being reviewed and the keyboard cursor live in ``st.session_state`` so they survive reruns, and the selected
dataset and response are mirrored in the URL query string so a browser reload returns to the same place.
"""

from __future__ import annotations

import threading
from typing import Any

import streamlit as st
from sqlalchemy import Engine

from app import render, review
from app.settings import AppSettings, load_settings
from db import repository as repo
from db.engine import get_engine
from db.rows import DatasetRow

DATASET_KEY = "dataset_id"


@st.cache_resource(show_spinner=False)
def _settings() -> AppSettings:
    return load_settings()


def settings() -> AppSettings:
    return _settings()


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    return get_engine(url, create=False)  # the store is created by `fractal serve`, never by a page


@st.cache_resource(show_spinner=False)
def warm_imports() -> None:
    """Import the torch-backed library in the background once per process, so the first visit to Train or
    Models does not wait for it (the UI only reads method names; the worker does the heavy work)."""

    def load() -> None:
        import fractal_core.fitting.methods  # noqa: F401

    threading.Thread(target=load, name="warm-imports", daemon=True).start()


def engine() -> Engine:
    """The store's engine (schema checked once per process; an outdated one raises with the upgrade command)."""
    return _engine(settings().db_url)


DATASETS_TTL_S = 10
"""How long the sidebar's dataset list (with counts) is reused. ``repo.list_datasets`` aggregates counts over
every response (~100 ms at 100k responses); paying that on every keypress would blow the page budget, and the
sidebar's counts may lag a few seconds. Pages that show counts read them fresh."""


@st.cache_data(ttl=DATASETS_TTL_S, show_spinner=False)
def _datasets(url: str) -> list[DatasetRow]:
    return repo.list_datasets(_engine(url))


def datasets() -> list[DatasetRow]:
    return _datasets(settings().db_url)


def datasets_changed() -> None:
    """Forget the cached dataset list (after an import created or grew a dataset)."""
    _datasets.clear()


def _forget_review_position(*, link_read: bool = True) -> None:
    """Another dataset: the Review page starts over at the top of its list (the URL's position belonged to the
    old one, so it is not read again)."""
    st.session_state[review.NAV_KEY] = review.ReviewNav(link_read=link_read)


def _on_pick() -> None:
    # Runs before the rerun: the sidebar choice becomes the current dataset, and the old position is dropped.
    st.session_state[DATASET_KEY] = st.session_state["_ds_select"]
    _forget_review_position()


def dataset_picker() -> DatasetRow | None:
    """Sidebar selector of the current dataset; remembers the choice in the session and the URL.

    Pages may set ``st.session_state[DATASET_KEY]`` (e.g. after an import); the widget follows it.
    """
    ss = st.session_state
    rows = datasets()
    if not rows or ss.get(DATASET_KEY) not in {d.id for d in rows}:
        # Possibly stale (a worker imported a dataset since): an empty store or a new session reads afresh.
        datasets_changed()
        rows = datasets()
    if not rows:
        ss.pop(DATASET_KEY, None)
        st.caption("No dataset yet: upload one on the **Data** page.")
        return None
    ids = [d.id for d in rows]
    wanted = ss.get(DATASET_KEY)
    if wanted not in ids:
        from_url = st.query_params.get("dataset")
        wanted = int(from_url) if from_url and from_url.isdigit() and int(from_url) in ids else ids[0]
        if from_url and wanted != (int(from_url) if from_url.isdigit() else None):
            # Say so rather than silently open another dataset than the link names.
            name = next(d.name for d in rows if d.id == wanted)
            # URL text is user text: escaped, so it cannot become a link or formatting in the message.
            message = f"The link names dataset {from_url}, which does not exist here: showing {name}."
            flash(render.md_escape(message), "warning")
            # The rest of the link (response, position) belonged to that dataset: do not apply it here.
            _forget_review_position()
        else:
            # A new session on a dataset the link names (or the default one): the link's position applies.
            _forget_review_position(link_read=False)
    ss[DATASET_KEY] = wanted
    if ss.get("_ds_select") != wanted:
        ss["_ds_select"] = (
            wanted  # set before the widget exists, so a page's choice wins over the old widget value
        )
    names = {d.id: f"{d.name} ({d.n_responses} responses)" for d in rows}
    st.selectbox("Dataset", ids, format_func=names.__getitem__, key="_ds_select", on_change=_on_pick)
    st.query_params["dataset"] = str(wanted)
    return next(d for d in rows if d.id == wanted)


def current_dataset(*, fresh: bool = False) -> DatasetRow | None:
    """The dataset chosen in the sidebar (None when there is none); ``fresh=True`` re-reads its counts."""
    dataset_id = st.session_state.get(DATASET_KEY)
    if dataset_id is None:
        return None
    if fresh:
        return repo.get_dataset(engine(), int(dataset_id))
    row = next((d for d in datasets() if d.id == dataset_id), None)
    return row if row is not None else repo.get_dataset(engine(), int(dataset_id))


ANNOTATOR_MAX_CHARS = 128  # the store's column width


def annotator_picker() -> str:
    """Without sign-in only: sidebar field for the name recorded with every label; kept in the URL (``?who=``)
    across reloads. With sign-in the name is the signed-in user's and there is no such field."""
    ss = st.session_state
    if "annotator_name" not in ss:
        ss["annotator_name"] = st.query_params.get("who") or settings().annotator
    st.text_input(
        "Annotator", key="annotator_name", max_chars=ANNOTATOR_MAX_CHARS, help="Recorded with your labels"
    )
    name = annotator()
    st.query_params["who"] = name
    return name


def annotator() -> str:
    """The current annotator's name (the sidebar field; FRACTAL_ANNOTATOR or the login name by default)."""
    name = str(st.session_state.get("annotator_name") or "").strip()[:ANNOTATOR_MAX_CHARS]
    return name or settings().annotator


def flash(message: str, kind: str = "success") -> None:
    """Show ``message`` once on the next run (survives the ``st.rerun`` that follows an action)."""
    st.session_state.setdefault("_flash", []).append((kind, message))


def show_flashes() -> None:
    for kind, message in st.session_state.pop("_flash", []):
        if kind in ("success", "info"):
            # A toast does not push the page down, so the response does not jump on every keypress.
            st.toast(message, icon=":material/check:" if kind == "success" else ":material/info:")
        else:
            getattr(st, kind)(message)


def show_html(fragment: str) -> None:
    """Show a ``<div>`` fragment built by ``app.render`` (escaped text, allow-listed MathML) on the page."""
    st.markdown(render.markdown_block(fragment), unsafe_allow_html=True)


def fmt_score(value: Any) -> str:
    return "–" if value is None else f"{float(value):.2f}"


def fmt_label(value: float | None) -> str:
    """A response label as shown: ``none`` for a response without one (it came in a preference pair)."""
    return "none" if value is None else f"{value:g}"
