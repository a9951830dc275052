"""The store's schema (SQLAlchemy 2 typed ORM). Alembic revisions in ``db/migrations`` build exactly this.

Tables and why they exist, by module (every name is re-exported here: ``from db.models import Dataset``):

- :mod:`db.models.base`: the declarative ``Base`` (its ``metadata`` is what Alembic compares with), the
  constraint naming convention, timezone-aware UTC times and the CHECK helpers.
- :mod:`db.models.datasets`: ``datasets``, a named collection of responses that remembers its label kind and
  the active model version; ``ingested_files``, one row per file ingested (sha256), so the same file is never
  ingested twice, and the import's state while it is being staged (see :mod:`db.ingest`); ``responses`` (bags)
  and ``sentences`` (instances, with character offsets into ``responses.text``); ``segment_edits``, the
  history of a person's fixes of a response's split (merge, split, undo) with the labels each ended; a sentence
  a fix replaced stays as a retired row (``retired_by``), which every reader leaves out with ``live_sentence()``.
- :mod:`db.models.model_versions`: ``model_versions``, one training run each (method, config, metrics,
  artifact, status, parent); ``sentence_scores``, one score per (model version, sentence);
  ``response_scores``, the per-response summary of those scores (aggregate score, uncertainty, disagreement
  with the bag label), written once when a version finishes, so that list pages sort on an index instead of
  aggregating 100k rows per request; ``model_files``, a trained model's files kept in the store.
- :mod:`db.models.labels`: ``label_events``, the append-only label history (who, when, old, new, source, to
  whom the new label is attributed; triggers refuse UPDATE and DELETE) of the shared view and of each overlap
  annotator's own labels; ``current_labels`` (shared view) and ``annotations`` (own labels, in
  :mod:`db.models.team`) are its current views, written in the same transaction as every event. Sources:
  :mod:`db.sources`.
- :mod:`db.models.team`: ``assignments`` (annotators' queues), ``annotations``, ``adjudications`` and
  ``response_notes``.
- :mod:`db.models.accounts`: ``users`` (names, roles, argon2 password hashes), ``user_sessions`` (signed-in
  browsers, token hashes, expiry) and ``sign_in_failures`` (wrong passwords per user name and client, for the
  sign-in slowdown).
- :mod:`db.models.pairs`: ``preference_pairs``, two responses of a dataset and which one is preferred (strength,
  source, who ingested it); a response that came in a pair without a label of its own has ``response_label``
  NULL.
- :mod:`db.models.store`: ``jobs``, the background work queue, and ``store_info`` (the store's id).

Times are timezone-aware UTC. Labels are integers (0/1 binary, 0..C-1 ordinal); a cleared label is a
``label_events.new_label`` of NULL and no ``current_labels`` row.
"""

from db.models.accounts import ROLES, SignInFailure, User, UserSession
from db.models.base import NAMING, Base, UTCDateTime, label_in_range, one_of, utcnow
from db.models.datasets import (
    FILE_FORMATS,
    IMPORT_STATES,
    RETIRED_POSITION,
    SEGMENT_EDIT_KINDS,
    SEGMENT_MODES,
    Dataset,
    IngestedFile,
    Response,
    SegmentEdit,
    Sentence,
    live_sentence,
)
from db.models.labels import CurrentLabel, LabelEvent
from db.models.model_versions import MODEL_STATUSES, ModelFile, ModelVersion, ResponseScore, SentenceScore
from db.models.pairs import PAIR_SOURCES, PreferencePair
from db.models.store import JOB_STATES, Job, StoreInfo
from db.models.team import NOTE_FLAGS, Adjudication, Annotation, Assignment, ResponseNote

# The label vocabulary lives in db.sources; re-exported here for the readers that import it with the tables.
from db.sources import GOLD_SOURCES, HUMAN_SOURCES, LABEL_SOURCES

__all__ = [
    "FILE_FORMATS",
    "GOLD_SOURCES",
    "HUMAN_SOURCES",
    "IMPORT_STATES",
    "JOB_STATES",
    "LABEL_SOURCES",
    "MODEL_STATUSES",
    "NAMING",
    "NOTE_FLAGS",
    "PAIR_SOURCES",
    "RETIRED_POSITION",
    "ROLES",
    "SEGMENT_EDIT_KINDS",
    "SEGMENT_MODES",
    "Adjudication",
    "Annotation",
    "Assignment",
    "Base",
    "CurrentLabel",
    "Dataset",
    "IngestedFile",
    "Job",
    "LabelEvent",
    "ModelFile",
    "ModelVersion",
    "PreferencePair",
    "Response",
    "ResponseNote",
    "ResponseScore",
    "SegmentEdit",
    "Sentence",
    "SentenceScore",
    "SignInFailure",
    "StoreInfo",
    "UTCDateTime",
    "User",
    "UserSession",
    "label_in_range",
    "live_sentence",
    "one_of",
    "utcnow",
]
