"""Review across the criteria of a group: the same response in a sibling criterion's dataset (the C key and the
Criterion selector), opened with that dataset's scores and labels, so that 0/1 then label that criterion.

The datasets of a group hold the same responses under the same external ids (:mod:`db.ingest_criteria`);
switching is a move to another dataset of the sidebar with the same response open. Every label written there
goes through :mod:`app.actions` like any Review action (the role checks are the server's, per action)."""

from __future__ import annotations

import streamlit as st
from sqlalchemy import Engine

from app import review, state
from db import repository as repo
from db.rows import DatasetRow


def siblings(engine: Engine, dataset_id: int) -> list[DatasetRow]:
    """The datasets of ``dataset_id``'s group by criterion name (itself included); [] outside a group."""
    rows = repo.criteria_siblings(engine, dataset_id)
    return rows if len(rows) > 1 else []


def next_criterion(rows: list[DatasetRow], dataset_id: int) -> int:
    """The dataset of the criterion after ``dataset_id``'s (the first after the last)."""
    ids = [d.id for d in rows]
    return ids[(ids.index(dataset_id) + 1) % len(ids)]


def target(
    engine: Engine, rows: list[DatasetRow], dataset_id: int, external_id: str
) -> tuple[int, int] | None:
    """(dataset, response) that shows response ``external_id`` judged on criterion dataset ``dataset_id`` of
    the group ``rows``; None when that dataset is not in the group or lacks the response."""
    if dataset_id not in {d.id for d in rows}:
        return None
    response_id = repo.response_id_by_external(engine, dataset_id, external_id)
    return None if response_id is None else (dataset_id, response_id)


def open_in(where: tuple[int, int]) -> None:
    """Make the Review page open response ``where[1]`` of dataset ``where[0]`` on its next run: the sidebar's
    dataset follows, and the list finds the response's position as for a link."""
    dataset_id, response_id = where
    old = st.session_state.get(review.NAV_KEY)
    st.session_state[state.DATASET_KEY] = dataset_id
    st.session_state[review.NAV_KEY] = review.ReviewNav(
        link_read=True,
        response_id=response_id,
        link_response=response_id,
        # The browser's numbering of events and moves goes on across the switch (it keeps one outbox).
        acked=old.acked if isinstance(old, review.ReviewNav) else 0,
        batch=old.batch if isinstance(old, review.ReviewNav) else 0,
    )


def switch(engine: Engine, rows: list[DatasetRow], dataset_id: int, external_id: str) -> None:
    """Open response ``external_id`` in criterion dataset ``dataset_id`` on the page's next run."""
    where = target(engine, rows, dataset_id, external_id)
    if where is None:
        state.flash("This response is not in that criterion's dataset.", "warning")
        return
    open_in(where)


def selector(engine: Engine, rows: list[DatasetRow], dataset: DatasetRow, external_id: str) -> None:
    """The visible Criterion choice above the response (the C key moves to the next one)."""
    ids = [d.id for d in rows]
    key = f"review_criterion_{dataset.id}"
    st.radio(
        "Criterion",
        ids,
        index=ids.index(dataset.id),
        format_func={d.id: str(d.criterion) for d in rows}.__getitem__,
        horizontal=True,
        key=key,
        on_change=lambda: switch(engine, rows, int(st.session_state[key]), external_id),
        help=f"The same response judged on another criterion of the group {dataset.criteria_group} (key C: "
        "the next one); colours and labels are that criterion's.",
    )
