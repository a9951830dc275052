"""The Models page's method choice: what ``auto`` fitted, the rule and each candidate's figures, and a note when
the evidence for the choice was weak (with the cheapest fix: a few more gold responses)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import render
from db import repository as repo

_NUMBERS = (
    "score",
    "held-out bag log-likelihood",
    "gap to best",
    "paired SE",
    "gold AUC given label",
    "gold AUC",
)


def _how_judged(choice: dict[str, Any]) -> str:
    if str(choice.get("criterion", "")).startswith("gold"):
        return (
            "the AUC given the response label of gold sentences in held-out gold responses (hybrid was trained "
            "on one half of the gold responses and scored on the other). A candidate's paired SE is the spread "
            "of its AUC difference to the best over bootstrap draws of the gold responses, every candidate "
            "scored on the same draws."
        )
    return (
        "the exact likelihood of the held-out responses' labels under each candidate's calibrated scores "
        "(higher is better; no gold labels needed)."
    )


def _weak_note(choice: dict[str, Any]) -> None:
    """The weak-evidence warning and a link to the Gold queue, when the stored choice says so."""
    if not choice.get("weak_evidence"):
        return
    reason = render.md_escape(choice.get("weak_reason") or "the held-out figures were thin")
    st.warning(
        f"**Weak evidence for this choice:** {reason}. The cheapest fix is to label a few more gold responses "
        "(sentence labels on whole responses, ideally with both problem and fine sentences) and train again: "
        "`auto` then judges the candidates on how they rank sentences, with tighter standard errors.",
        icon=":material/help:",
    )
    st.page_link(
        "views/gold.py", label="Label gold responses on the Gold queue", icon=":material/workspace_premium:"
    )


def show_method_choice(versions: list[repo.ModelVersionRow]) -> None:
    """The ``Method choice`` section for the versions that ``auto`` chose a method for (none: nothing shown)."""
    chosen_by = [mv for mv in versions if mv.metrics.get("method_choice")]
    if not chosen_by:
        return
    st.subheader("Method choice", anchor=False)
    choice_id = st.selectbox(
        "Version",
        [mv.id for mv in chosen_by],
        index=next((i for i, mv in enumerate(chosen_by) if mv.is_active), 0),
        format_func=lambda i: f"v{next(m.version for m in chosen_by if m.id == i)}",
        key="models_choice_version",
    )
    picked = next(mv for mv in chosen_by if mv.id == choice_id)
    choice = picked.metrics["method_choice"]
    st.caption(
        f"`{picked.method}` fitted every candidate below on the same embeddings and kept "
        f"**{choice.get('chosen')}**, judged by {_how_judged(choice)} Candidates whose gap to the best is "
        "within the band (a multiple of the paired standard error of that gap) are tied within noise; the "
        "first of them in the rule's order is kept (without gold the simplest; with gold hybrid, the one "
        f"candidate that learns from the gold). Criterion: {choice.get('criterion')}; "
        + (f"rule: {choice['rule']}; " if choice.get("rule") else "")
        + f"{choice.get('seconds', 0):.0f} s in all."
    )
    _weak_note(choice)
    st.dataframe(
        [
            {
                "candidate": c.get("name"),
                "chosen": "●" if c.get("chosen") else "",
                "score": c.get("score"),
                "held-out bag log-likelihood": c.get("bag_log_likelihood"),
                "gap to best": c.get("gap_to_best"),
                "paired SE": c.get("paired_se"),
                "within band": {True: "yes", False: "no"}.get(c.get("within_band"), ""),
                "gold AUC given label": c.get("gold_auc_given_y"),
                "gold AUC": c.get("gold_auc"),
                "fit seconds": c.get("seconds"),
            }
            for c in choice.get("candidates", [])
        ],
        hide_index=True,
        column_config={k: st.column_config.NumberColumn(format="%.4f") for k in _NUMBERS},
    )
