"""Every business query of FRACTAL Studio: the app, the worker and the CLI call these, never SQL.

All functions take an :class:`~sqlalchemy.Engine` first and return plain rows from :mod:`db.rows`. Writes
run through :func:`db.engine.run_write` (one transaction each, retried on lock contention), so a failed call
leaves nothing behind.

One module per concern, every public name re-exported here (``from db import repository as repo``):

- :mod:`db.repository.datasets`: create, look up and list datasets, their gold target;
- :mod:`db.repository.responses`: the response list (filters, sorting, pages) and one response in full;
- :mod:`db.repository.labels`: sentence labels, undo, history and the gold budget, gathered from
  :mod:`~db.repository.label_events` (the one write path), :mod:`~db.repository.label_undo` and
  :mod:`~db.repository.label_views` (history, gold budget);
- :mod:`db.repository.model_versions`: training runs, their scores, activation and rollback, gathered from
  :mod:`~db.repository.model_registry` (register, read, finish, activate, roll back),
  :mod:`~db.repository.model_scores` (sentence scores, per-response summaries) and
  :mod:`~db.repository.model_activation` (activation only on evidence from the current gold set);
- :mod:`db.repository.records`: a dataset as ``fractal_core`` training records;
- :mod:`db.repository.segment_edits`: fixing a response's split by hand (merge, split, undo);
- the job queue, re-exported from :mod:`db.jobs`.
"""

from db.jobs import (
    append_log,
    claim_next_job,
    create_job,
    finish_job,
    get_job,
    heartbeat,
    is_cancel_requested,
    list_jobs,
    mark_stale_jobs_failed,
    request_cancel,
    update_progress,
)
from db.repository.datasets import (
    create_dataset,
    criteria_siblings,
    get_dataset,
    list_datasets,
    parse_label_kind,
    require_dataset,
    segment_modes,
    set_gold_target,
    staging_dataset_ids,
    validate_dataset_name,
)
from db.repository.labels import (
    StaleLabelError,
    gold_budget,
    label_history,
    record_label,
    record_labels,
    undo_last,
)
from db.repository.model_versions import (
    activate_model_version,
    active_model_version,
    active_model_version_id,
    create_model_version,
    find_model_version,
    finish_model_version,
    get_model_version,
    labelled_scores,
    list_model_versions,
    rollback_model_version,
    store_response_summaries,
    store_scores,
)
from db.repository.records import load_records, load_training_set
from db.repository.responses import (
    MAX_PAGE_SIZE,
    PREVIEW_CHARS,
    LabelStatus,
    SortKey,
    get_response,
    list_responses,
    response_id_by_external,
)
from db.repository.segment_edits import (
    StaleSplitError,
    merge_sentences,
    segment_history,
    sibling_responses,
    split_sentence,
    undo_segment_edit,
)
from db.rows import (
    DatasetRow,
    GoldBudget,
    IngestSummary,
    JobRow,
    LabelChange,
    LabelledScores,
    ModelVersionRow,
    ResponseDetail,
    ResponseListRow,
    ResponsePage,
    SaveResult,
    SegmentEditResult,
    SegmentEditRow,
    SentenceRow,
    TrainingSet,
    UndoResult,
)

__all__ = [
    "MAX_PAGE_SIZE",
    "PREVIEW_CHARS",
    "DatasetRow",
    "GoldBudget",
    "IngestSummary",
    "JobRow",
    "LabelChange",
    "LabelStatus",
    "LabelledScores",
    "ModelVersionRow",
    "ResponseDetail",
    "ResponseListRow",
    "ResponsePage",
    "SaveResult",
    "SegmentEditResult",
    "SegmentEditRow",
    "SentenceRow",
    "SortKey",
    "TrainingSet",
    "UndoResult",
    "activate_model_version",
    "active_model_version",
    "active_model_version_id",
    "append_log",
    "claim_next_job",
    "create_dataset",
    "create_job",
    "create_model_version",
    "find_model_version",
    "finish_job",
    "finish_model_version",
    "get_dataset",
    "get_job",
    "get_model_version",
    "get_response",
    "gold_budget",
    "heartbeat",
    "is_cancel_requested",
    "label_history",
    "labelled_scores",
    "criteria_siblings",
    "list_datasets",
    "list_jobs",
    "list_model_versions",
    "list_responses",
    "mark_stale_jobs_failed",
    "parse_label_kind",
    "record_label",
    "record_labels",
    "request_cancel",
    "require_dataset",
    "response_id_by_external",
    "rollback_model_version",
    "segment_modes",
    "set_gold_target",
    "staging_dataset_ids",
    "store_response_summaries",
    "StaleLabelError",
    "StaleSplitError",
    "merge_sentences",
    "segment_history",
    "sibling_responses",
    "split_sentence",
    "undo_segment_edit",
    "store_scores",
    "undo_last",
    "update_progress",
    "validate_dataset_name",
    "load_records",
    "load_training_set",
]
