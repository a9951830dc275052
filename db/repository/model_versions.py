"""Model versions, one import away: every name of the three modules that hold them.

- :mod:`db.repository.model_registry`: register a training run, read versions, finish, activate, roll back;
- :mod:`db.repository.model_scores`: store a run's sentence scores and per-response summaries, read the scores
  of labelled sentences;
- :mod:`db.repository.model_activation`: activate a new version only when it is not worse than the active one
  on the current gold set (the evidence, the decision, why a version waits).
"""

from db.repository.model_activation import (
    ActivationDecision,
    GoldScores,
    activate_if_not_worse,
    compare_on_current_gold,
    current_gold_scores,
    waiting_reason,
)
from db.repository.model_registry import (
    activate_model_version,
    active_model_version,
    active_model_version_id,
    create_model_version,
    find_model_version,
    finish_model_version,
    get_model_version,
    list_model_versions,
    rollback_model_version,
)
from db.repository.model_scores import labelled_scores, store_response_summaries, store_scores

__all__ = [
    "ActivationDecision",
    "GoldScores",
    "activate_if_not_worse",
    "activate_model_version",
    "active_model_version",
    "active_model_version_id",
    "compare_on_current_gold",
    "create_model_version",
    "current_gold_scores",
    "find_model_version",
    "finish_model_version",
    "get_model_version",
    "labelled_scores",
    "list_model_versions",
    "rollback_model_version",
    "store_response_summaries",
    "store_scores",
    "waiting_reason",
]
