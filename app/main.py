"""FRACTAL Studio web app: the one entry file. Sets up the page, the shared stylesheet and the dataset picker,
then routes with ``st.navigation`` to the thin pages in ``app/views``.

(The pages are not in ``app/pages`` on purpose: Streamlit still treats a ``pages/`` folder next to the entry
file as a legacy multipage app, which runs a page without this file when its URL is opened directly.)

Run with ``fractal serve`` (which also starts the worker) or ``streamlit run app/main.py``.
"""

from __future__ import annotations

import streamlit as st

from app import render, state

st.set_page_config(page_title="FRACTAL Studio", page_icon=":material/scatter_plot:", layout="wide")
# The stylesheet for highlighted responses: fixed classes only, emitted once per run.
st.html(render.CSS)

PAGES = [
    st.Page("views/review.py", title="Review", icon=":material/rate_review:", default=True),
    st.Page("views/gold.py", title="Gold queue", icon=":material/workspace_premium:"),
    st.Page("views/data.py", title="Data", icon=":material/upload_file:"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/models.py", title="Models", icon=":material/insights:"),
    st.Page("views/export.py", title="Export", icon=":material/download:"),
]
page = st.navigation(PAGES)
state.warm_imports()

with st.sidebar:
    st.title("FRACTAL Studio")
    try:
        state.dataset_picker()
    except Exception as exc:  # a bad store must still show a readable page, not a stack trace
        st.error("Cannot open the database: " + render.md_escape(exc))
        st.stop()
    state.annotator_picker()

page.run()
