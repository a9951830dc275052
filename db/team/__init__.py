"""Team work on a dataset: assignment queues with overlap, each annotator's own labels of overlap responses,
agreement, adjudication, progress, guidelines and comments/flags.

- :func:`assign` puts every not yet assigned response of a dataset into annotators' queues: a seeded sample of
  ``overlap_fraction`` of them goes to ``overlap_k`` different annotators each, every other response to one,
  spread evenly. Nobody else (below reviewer) may label an assigned response.
- On an *overlap* response (two or more assignees) each assignee's labels are kept apart in ``annotations``
  (history: ``label_events`` in that annotator's layer, written by the one label path of
  :mod:`db.repository.labels`); the gold view (``current_labels``, what training uses) is set by a
  reviewer's :func:`adjudicate`, recorded with who and when in ``adjudications``. On other responses labels go
  straight to the gold view, as without a team.
- :func:`agreement` computes Krippendorff's alpha, Cohen's kappa per annotator pair and per-label agreement
  over the annotations with :mod:`fractal_core.evaluation.agreement` (vectorised).

One module per concern, every public name re-exported here (``from db import team``):

- :mod:`db.team.settings`: the overlap rule and the guidelines of a dataset;
- :mod:`db.team.assignments`: assignment queues and each annotator's progress;
- :mod:`db.team.annotations`: annotators' own labels of overlap responses;
- :mod:`db.team.agreement_stats`: agreement over those labels;
- :mod:`db.team.adjudication`: disagreements and the reviewer's gold labels;
- :mod:`db.team.notes`: comments and flags on responses.
"""

from db.team.adjudication import adjudicate, adjudicated_labels, disagreements
from db.team.agreement_stats import agreement
from db.team.annotations import (
    annotation_history,
    annotations_by_annotator,
    own_labels,
    record_annotations,
    undo_annotation,
)
from db.team.assignments import assign, assignees, mark_done, progress, queue
from db.team.notes import MAX_NOTE_CHARS, add_note, notes
from db.team.settings import (
    MAX_GUIDELINES_CHARS,
    TeamSettings,
    set_guidelines,
    set_overlap,
    team_settings,
)

__all__ = [
    "MAX_GUIDELINES_CHARS",
    "MAX_NOTE_CHARS",
    "TeamSettings",
    "add_note",
    "adjudicate",
    "adjudicated_labels",
    "agreement",
    "annotation_history",
    "annotations_by_annotator",
    "assign",
    "assignees",
    "disagreements",
    "mark_done",
    "notes",
    "own_labels",
    "progress",
    "queue",
    "record_annotations",
    "set_guidelines",
    "set_overlap",
    "team_settings",
    "undo_annotation",
]
