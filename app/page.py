"""The top of every page in ``app/views``: who may open it, its title and messages, and the dataset it works on.

A page starts with one call; a user whose role may not open it sees "not allowed" (and no data), and a page
that needs a dataset says how to get one when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from sqlalchemy import Engine

from app import auth, state
from db.rows import DatasetRow, UserRow

NO_DATA = "No data yet. Upload responses on the Data page."


@dataclass(frozen=True)
class Page:
    """What a page works with: the signed-in user (their role checked) and the store."""

    user: UserRow
    engine: Engine


@dataclass(frozen=True)
class DatasetPage(Page):
    """A page that works on the dataset chosen in the sidebar."""

    dataset: DatasetRow


def page(title: str, role: str) -> Page:
    """Check the role (stop with "not allowed" otherwise), show the title and the flashed messages."""
    user = auth.require(role)
    st.header(title)
    state.show_flashes()
    return Page(user, state.engine())


def dataset_page(
    title: str, role: str, *, fresh: bool = False, empty: str = NO_DATA, data_link: bool = False
) -> DatasetPage:
    """:func:`page` for the dataset chosen in the sidebar (``fresh``: with counts read now). Without a dataset
    the page says ``empty`` (with a link to the Data page when ``data_link``) and stops."""
    base = page(title, role)
    dataset = state.current_dataset(fresh=fresh)
    if dataset is None:
        st.info(empty)
        if data_link:
            st.page_link("views/data.py", label="Go to Data", icon=":material/upload_file:")
        st.stop()
    assert dataset is not None
    return DatasetPage(base.user, base.engine, dataset)
