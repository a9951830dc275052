"""Plain, immutable rows returned by :mod:`db.repository` (never ORM objects: nothing lazy-loads later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from fractal_core.data.records import ResponseRecord


@dataclass(frozen=True, slots=True)
class DatasetRow:
    id: int
    name: str
    description: str
    label_kind: str  # "binary" | "ordinal" | "proportion"
    max_label: float
    gold_target: float  # target fraction of responses with gold labels, e.g. 0.1
    n_responses: int
    n_sentences: int
    n_gold_responses: int  # responses with at least one current gold/reviewed label
    label_balance: dict[str, int]  # response label (as text) -> number of responses
    active_model_version_id: int | None
    created_at: datetime
    # A dataset of a group of criteria (db.ingest_criteria): the group and the criterion; None otherwise.
    criteria_group: str | None = None
    criterion: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseListRow:
    """One line of the review list (no full text: ``preview`` is the first 200 characters)."""

    id: int
    external_id: str
    preview: str
    response_label: float | None  # None: no label of its own (a response of a preference pair)
    aggregation: str
    split: str | None
    n_sentences: int
    n_gold: int  # sentences with a current gold/reviewed label
    score: float | None  # aggregate of sentence scores under the model version; None when unscored
    uncertainty: float | None
    disagreement: float | None  # |score - normalised response label|; > 0.5 means the model disagrees


@dataclass(frozen=True, slots=True)
class ResponsePage:
    rows: list[ResponseListRow]
    total: int  # rows matching the filters, over all pages
    page: int  # 0-based
    page_size: int
    model_version_id: int | None  # the version whose scores were used (the active one by default)


@dataclass(frozen=True, slots=True)
class SentenceRow:
    id: int
    position: int
    start: int  # character offset into ResponseDetail.text
    end: int  # exclusive
    text: str
    label: int | None  # current label, None when unlabelled
    label_source: str | None  # one of db.sources.LABEL_SOURCES, None when unlabelled
    annotator: str | None
    labelled_at: datetime | None
    score: float | None
    uncertainty: float | None
    label_version: int | None = (
        None  # the label's version (its event id): a save from this view sends it back
    )
    # What the given-label view reads: ``score`` through the model version's step calibration when it was chosen
    # on valid for that view (``fractal_core.mil.reviewer.view_scores``), else ``score`` itself.
    view_score: float | None = None


@dataclass(frozen=True, slots=True)
class ResponseDetail:
    id: int
    dataset_id: int
    external_id: str
    context: str
    text: str
    response_label: float | None  # None: no label of its own (a response of a preference pair)
    aggregation: str
    label_kind: str
    split: str | None
    task: str | None
    meta: dict[str, Any]
    sentences: list[SentenceRow]
    model_version_id: int | None
    score: float | None
    uncertainty: float | None
    disagreement: float | None
    consistency_warning: str | None  # check_consistency over the current labels
    # The split was changed by hand since the model version scored it: some sentences have no score in it
    # (db.repository.segment_edits); its scores must not be shown as if they described this split.
    scores_stale: bool = False


@dataclass(frozen=True, slots=True)
class SegmentEditResult:
    """What a merge, split or undo of a response's split did (``db.repository.segment_edits``)."""

    edit_id: int
    kind: str  # merge | split | undo
    response_id: int
    position: int  # first sentence (0-based) replaced
    n_sentences: int  # the response's sentences after it
    sentence_ids: list[int]  # the new rows, in order
    ended_labels: (
        int  # labels (shared, own, adjudications) on the replaced sentences, ended and kept in its row
    )
    restored_labels: int  # an undo: labels given back
    undone_edit_id: int | None  # an undo: the edit it reverted


@dataclass(frozen=True, slots=True)
class SegmentEditRow:
    """One recorded split fix of a response (``segment_edits``), for its history."""

    id: int
    kind: str  # merge | split | undo
    position: int  # 0-based
    offset: int | None
    editor: str
    at: datetime
    ended_labels: int
    undoes_id: int | None  # an undo: the change it reverted
    undone: bool  # a later undo reverted this change


@dataclass(frozen=True, slots=True)
class LabelChange:
    event_id: int
    sentence_id: int
    response_id: int
    old_label: int | None
    new_label: int | None
    annotator: str
    source: str
    at: datetime


@dataclass(frozen=True, slots=True)
class LabelConflict:
    """A sentence whose label someone else changed after the saving view was read."""

    sentence_id: int
    position: int  # 0-based position in its response
    label: int | None  # their label now (None: they cleared it)
    annotator: str | None
    source: str | None
    version: int | None  # the label's version now: send it back to replace their label knowingly


@dataclass(frozen=True, slots=True)
class SaveResult:
    changes: list[LabelChange]  # only sentences whose label actually changed
    warning: str | None  # MIL consistency warning after the save, None when consistent


@dataclass(frozen=True, slots=True)
class UndoResult:
    reverted: list[LabelChange]  # the undo events written
    skipped: list[int] = field(default_factory=list)  # sentence ids changed by someone else since; left alone
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class GoldBudget:
    gold_responses: int
    total_responses: int
    target_fraction: float

    @property
    def fraction(self) -> float:
        return self.gold_responses / self.total_responses if self.total_responses else 0.0


@dataclass(frozen=True, slots=True)
class ModelVersionRow:
    id: int
    dataset_id: int
    version: int
    method: str
    status: str  # "training" | "ready" | "failed"
    config: dict[str, Any]
    metrics: dict[str, Any]
    artifact_path: str | None
    error: str | None
    parent_id: int | None
    replaced_id: int | None
    is_active: bool
    n_scores: int
    created_at: datetime
    finished_at: datetime | None
    activated_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    kind: str
    payload: dict[str, Any]
    state: str  # "queued" | "running" | "succeeded" | "failed" | "cancelled"
    idempotency_key: str | None
    progress: float  # in [0, 1]
    message: str
    log: str
    result: dict[str, Any]
    error: str | None
    worker_id: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class IngestSummary:
    dataset_id: int
    dataset: str
    file: str
    sha256: str
    format: str
    n_responses: int
    n_sentences: int
    n_labels: int  # sentence labels stored
    labels_source: str  # the source the file's sentence labels were stored with
    seconds: float
    extra_columns: tuple[str, ...] = ()  # columns outside the schema met in the file, sorted
    extras_mode: str = "refuse"  # what happened to them: kept in meta, or left out (drop)
    # A file with several criteria: the datasets it filled (one per criterion, of group ``dataset``), in order.
    criteria_datasets: tuple[str, ...] = ()
    criteria_dataset_ids: tuple[int, ...] = ()

    def dataset_ids(self) -> tuple[int, ...]:
        """Every dataset the file went into: one per criterion, else the one dataset."""
        return self.criteria_dataset_ids or (self.dataset_id,)

    def extras_note(self) -> str:
        """What happened to the extra columns, in a sentence (empty when the file had none)."""
        if not self.extra_columns:
            return ""
        names = ", ".join(self.extra_columns)
        return f"kept in meta: {names}" if self.extras_mode == "meta" else f"left out: {names}"


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """A dataset as ``fractal_core`` records plus the database ids to write results back under.

    ``response_ids`` (B,) int64, one per record; ``sentence_ids`` (N,) int64 in the records' flattened span
    order, record i's at ``offsets[i]:offsets[i + 1]`` (``offsets`` (B + 1,)); ``file_labels`` (N,) int64, every
    current sentence label including imported ones (-1: none).
    """

    records: list[ResponseRecord]
    response_ids: np.ndarray
    sentence_ids: np.ndarray
    offsets: np.ndarray
    file_labels: np.ndarray

    def sentence_ids_of(self, i: int) -> list[int]:
        """The sentence ids of record ``i``, in its spans' order."""
        return [int(v) for v in self.sentence_ids[self.offsets[i] : self.offsets[i + 1]]]


@dataclass(frozen=True, slots=True)
class LabelledScores:
    """Scores (n,) of one model version on sentences with a current label, the labels (n,) int64 and whether
    each label's source counts as gold (n,) bool (else imported from a file)."""

    scores: np.ndarray
    labels: np.ndarray
    gold: np.ndarray


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user as the app sees it (never the password hash)."""

    id: int  # 0 for the single local user of ``fractal serve --no-auth`` (not stored)
    name: str
    role: str  # "annotator" | "reviewer" | "admin"
    disabled: bool
    must_change_password: bool  # the first sign-in with a one-time password must replace it
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class AssignSummary:
    n_responses: int  # responses newly assigned
    n_overlap: int  # of which given to several annotators
    per_annotator: dict[str, int]  # annotator -> responses newly in their queue


@dataclass(frozen=True, slots=True)
class PairAgreementRow:
    annotator_a: str
    annotator_b: str
    n_sentences: int  # sentences both labelled
    kappa: float  # Cohen's kappa (NaN when undefined)
    percent: float  # share of those sentences with the same label


@dataclass(frozen=True, slots=True)
class AgreementReport:
    dataset_id: int
    n_labels: int  # annotator labels of overlap responses
    n_sentences: int  # sentences with labels from two or more annotators
    n_responses: int  # overlap responses with at least one such sentence
    alpha: float  # Krippendorff's alpha (nominal for binary, interval for ordinal); NaN when undefined
    per_label: dict[int, float]  # label -> share of its values matched by the other annotators
    pairs: list[PairAgreementRow]


@dataclass(frozen=True, slots=True)
class ProgressRow:
    annotator: str
    assigned: int
    done: int
    labels_total: int  # label changes they made (gold and own annotations)
    labels_last_hour: int
    labels_per_hour: float  # over their active span (first to last change), 0 with fewer than 2 changes


@dataclass(frozen=True, slots=True)
class NoteRow:
    id: int
    response_id: int
    author: str
    flag: str | None
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DisagreementRow:
    response_id: int
    external_id: str
    annotators: list[str]
    n_disagreeing: int  # sentences where the annotators' labels differ
    adjudicated: bool
