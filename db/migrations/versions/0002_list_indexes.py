"""indexes for the review list: sort responses by a model version's uncertainty, disagreement or score, page
through a dataset in id order, and filter by annotator without scanning every label.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_responses_dataset_id_id", "responses", ["dataset_id", "id"])
    op.create_index(
        "ix_response_scores_mv_uncertainty",
        "response_scores",
        ["model_version_id", "uncertainty", "response_id"],
    )
    op.create_index(
        "ix_response_scores_mv_disagreement",
        "response_scores",
        ["model_version_id", "disagreement", "response_id"],
    )
    op.create_index(
        "ix_response_scores_mv_score", "response_scores", ["model_version_id", "score", "response_id"]
    )
    op.create_index("ix_current_labels_annotator_response", "current_labels", ["annotator", "response_id"])


def downgrade() -> None:
    op.drop_index("ix_current_labels_annotator_response", "current_labels")
    op.drop_index("ix_response_scores_mv_score", "response_scores")
    op.drop_index("ix_response_scores_mv_disagreement", "response_scores")
    op.drop_index("ix_response_scores_mv_uncertainty", "response_scores")
    op.drop_index("ix_responses_dataset_id_id", "responses")
