"""The Models page's comparison of two versions on the current gold set, and its cached bootstraps."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import render
from db import repository as repo
from db.repository import model_versions
from fractal_core.evaluation import versions as compare


# The bootstraps are cached on their inputs: a rerun of the page (any widget) with the same gold labels and
# scores does not draw them again; a new gold label changes the inputs and so the figures.
@st.cache_data(show_spinner=False, max_entries=64)
def _compare(
    a: np.ndarray, b: np.ndarray, labels: np.ndarray, responses: np.ndarray
) -> compare.VersionComparison:
    return compare.compare_versions(a, b, labels, responses, seed=0)


@st.cache_data(show_spinner=False, max_entries=256)
def cached_auc(scores: np.ndarray, labels: np.ndarray, responses: np.ndarray) -> compare.Estimate:
    return compare.auc_estimate(scores, labels, responses, seed=0)


def _fmt(e: compare.Estimate, signed: bool = False) -> str:
    if not np.isfinite(e.value):
        return "–"
    value = f"{e.value:+.3f}" if signed else f"{e.value:.3f}"
    if not np.isfinite(e.low):
        return value
    return f"{value} [{e.low:+.3f}, {e.high:+.3f}]" if signed else f"{value} [{e.low:.2f}, {e.high:.2f}]"


def show_comparison(ready: list[repo.ModelVersionRow], gold_now: model_versions.GoldScores) -> None:
    """Two versions picked (the active one first) measured on the same gold sentences, with a verdict."""
    if len(ready) < 2:
        return
    st.subheader("Compare two versions on the current gold set", anchor=False)
    ids = [mv.id for mv in ready]
    label_of = {mv.id: f"v{mv.version}" + (" (active)" if mv.is_active else "") for mv in ready}
    ca, cb = st.columns(2)
    a_id = ca.selectbox(
        "Version A",
        ids,
        index=next((i for i, mv in enumerate(ready) if mv.is_active), 1),
        format_func=lambda i: label_of[i],
        key="models_cmp_a",
    )
    b_id = cb.selectbox(
        "Version B",
        ids,
        index=next(i for i, v in enumerate(ids) if v != a_id),
        format_func=lambda i: label_of[i],
        key="models_cmp_b",
    )
    if a_id == b_id:
        st.caption("Pick two different versions.")
    else:
        result = _compare(*gold_now.scored_by(a_id, b_id))
        name_a, name_b = label_of[a_id], label_of[b_id]
        st.dataframe(
            [
                {
                    "on the gold set": what,
                    name_a: _fmt(t[0]),
                    name_b: _fmt(t[1]),
                    "difference B - A [95% CI]": _fmt(t[2], signed=True),
                }
                for what, t in (
                    ("AUC-ROC (higher is better)", result.auc),
                    ("Brier score (lower is better)", result.brier),
                    ("accuracy at 0.5 (higher is better)", result.accuracy),
                )
            ],
            hide_index=True,
            key="models_cmp_table",
        )
        verdict = (
            f"{name_b} is not worse than {name_a} beyond noise"
            if result.not_worse
            else f"{name_b} is not shown to be as good as {name_a}"
        )
        st.caption(
            render.md_escape(
                f"{verdict}: {result.reason}. Both versions on the same {result.n_sentences} gold sentences "
                f"({result.n_positives} problem) of {result.n_responses} responses, labelled now (including "
                f"labels added after either was trained). Intervals: {result.resamples} bootstrap draws of whole "
                f"responses, the same draws for both versions (paired). Gold labels also train the hybrid prior, "
                "so a version trained on more of them is measured partly on what it saw."
            )
        )
