"""The Models page's version list with gold metrics, the waiting versions, activate and roll back."""

from __future__ import annotations

import streamlit as st
from sqlalchemy import Engine

from app import actions, render, state
from db import repository as repo
from db.repository import model_versions
from db.rows import UserRow
from fractal_core.evaluation.metrics import auc_interval


def metric(mv: repo.ModelVersionRow, which: str, key: str) -> float | None:
    value = (mv.metrics.get(which) or {}).get(key)
    return None if value is None else float(value)


def _auc_with_interval(mv: repo.ModelVersionRow, which: str) -> str:
    """``0.812 [0.70, 0.92]`` (95% Hanley-McNeil interval) or ``–``; a gold AUC from a handful of sentences
    is noise, and the width of the interval says how much."""
    auc = metric(mv, which, "instance_auc_roc")
    if auc is None:
        return "–"
    n = metric(mv, which, "instance_count")
    positives = metric(mv, which, "instance_positives")
    if n is None or positives is None:
        return f"{auc:.3f} (interval not recorded)"
    lo, hi = auc_interval(auc, int(positives), int(n - positives))
    return f"{auc:.3f} [{lo:.2f}, {hi:.2f}]"


def _sample(mv: repo.ModelVersionRow, which: str) -> str:
    """``n (positives / negatives)`` of the sentences a gold metric was computed on."""
    n = metric(mv, which, "instance_count")
    positives = metric(mv, which, "instance_positives")
    if n is None:
        return "–"
    if positives is None:
        return f"{int(n)}"
    return f"{int(n)} ({int(positives)} / {int(n - positives)})"


def _state(mv: repo.ModelVersionRow) -> str:
    """active / waiting / ready / training / failed: a held-back version says it waits."""
    if mv.is_active:
        return "● active"
    if model_versions.waiting_reason(mv) is not None:
        return "waiting"
    return mv.status


def show_versions(versions: list[repo.ModelVersionRow]) -> None:
    """Every version in a table: state, method, gold metrics before and after, file-label metrics."""
    st.subheader("Versions", anchor=False)
    st.caption(
        "Gold metrics compare the previously active version (before) with this one (after) on the gold "
        "sentences that existed when it was trained. Those gold labels were also used for training (hybrid "
        "prior). AUCs come with their 95% interval (Hanley-McNeil) and the number of sentences they are "
        "computed on (problem / fine): with few gold sentences the interval is wide. "
        "'AUC on file labels' uses the sentence labels that came with the uploaded file (not used for "
        "training)."
    )
    st.dataframe(
        [
            {
                "version": mv.version,
                "state": _state(mv),
                "method": mv.method,
                "gold n (problem / fine)": _sample(mv, "gold_after"),
                "AUC before [95% CI]": _auc_with_interval(mv, "gold_before"),
                "AUC after [95% CI]": _auc_with_interval(mv, "gold_after"),
                "AUPRC after": metric(mv, "gold_after", "instance_auprc"),
                "accuracy after": metric(mv, "gold_after", "instance_accuracy"),
                "file labels n": _sample(mv, "file_labels_after"),
                "AUC on file labels [95% CI]": _auc_with_interval(mv, "file_labels_after"),
                "scores": mv.n_scores,
                "created": mv.created_at.strftime("%Y-%m-%d %H:%M"),
                "error": mv.error or "",
            }
            for mv in versions
        ],
        hide_index=True,
        column_config={
            k: st.column_config.NumberColumn(format="%.3f") for k in ("AUPRC after", "accuracy after")
        },
    )


def show_waiting(engine: Engine, user: UserRow, ready: list[repo.ModelVersionRow]) -> None:
    """Each ready version held back by the evidence rule: why, and a button that activates it anyway."""
    for mv in ready:
        reason = model_versions.waiting_reason(mv)
        if reason is None:
            continue
        with st.container(border=True):
            st.markdown(
                f"**Version {mv.version} is waiting.** A new version becomes active only when it is not "
                "worse than the active one on the current gold set beyond noise. "
                + render.md_escape(reason[0].upper() + reason[1:])
                + "."
            )
            # The role is checked again on the server (actions.activate_model), whatever this button shows.
            if st.button(
                f"Activate version {mv.version}", key=f"models_activate_waiting_{mv.id}", type="primary"
            ):
                row = actions.activate_model(engine, user, mv.id)
                state.flash(f"Version {row.version} is now active.")
                st.rerun()


def show_activate_and_rollback(
    engine: Engine,
    user: UserRow,
    dataset_id: int,
    ready: list[repo.ModelVersionRow],
    active: repo.ModelVersionRow | None,
) -> None:
    """Activate any ready version, or roll the active one back to the version it replaced."""
    c1, c2 = st.columns(2)
    with c1:
        if ready:
            pick = st.selectbox(
                "Version",
                [mv.id for mv in ready],
                format_func=lambda i: f"v{next(m.version for m in ready if m.id == i)}",
                key="models_pick",
            )
            if st.button(
                "Activate", key="models_activate", disabled=active is not None and pick == active.id
            ):
                row = actions.activate_model(engine, user, pick)
                state.flash(f"Version {row.version} is now active.")
                st.rerun()
    with c2:
        if (
            active is not None
            and active.replaced_id is not None
            and st.button("Roll back", key="models_rollback")
        ):
            back = actions.rollback_model(engine, user, dataset_id)
            state.flash(f"Rolled back to version {back.version if back else '?'}.")
            st.rerun()
