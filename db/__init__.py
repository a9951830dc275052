"""FRACTAL Studio's store: SQLAlchemy 2 over SQLite by default, any SQLAlchemy URL (PostgreSQL) for teams.

Public API (stable; the app, the worker and the CLI use only these):

- :mod:`db.engine`: ``get_engine(url=None, *, check_schema=True, create=True) -> Engine`` (url, else
  ``$FRACTAL_DB_URL``, else ``sqlite:///$FRACTAL_HOME/fractal.db`` with ``FRACTAL_HOME`` defaulting to
  ``./.fractal``; with ``create`` a new database is created at the newest schema, without it a store that does
  not exist raises ``db.connect.StoreError``, as does a URL that cannot be opened; an outdated one raises
  ``db.schema.SchemaOutdatedError`` naming ``fractal db upgrade``), ``session_scope(engine, *, write=True)``,
  ``run_write(engine, fn)`` (retries lock contention), ``run_read(engine, fn)``, ``resolve_url(url)``.
- :mod:`db.schema`: ``upgrade(engine, revision="head")``, ``current_revision(engine)``, ``head_revision()``.
- :mod:`db.repository` (a package, one module per concern): datasets (``create_dataset``, ``get_dataset``,
  ``require_dataset``, ``list_datasets``, ``set_gold_target``), responses (``list_responses``, ``get_response``,
  ``response_id_by_external``), labels (``record_label``, ``record_labels``, ``undo_last``, ``label_history``,
  ``gold_budget``), model versions (``create_model_version``, ``store_scores``, ``store_response_summaries``,
  ``finish_model_version``, ``activate_model_version``, ``rollback_model_version``, ``active_model_version``,
  ``get_model_version``, ``find_model_version``, ``list_model_versions``, ``labelled_scores``), training
  records (``load_training_set``, ``load_records``), split fixes (``merge_sentences``, ``split_sentence``,
  ``undo_segment_edit``) and the job queue re-exported from :mod:`db.jobs`
  (``create_job``, ``get_job``, ``list_jobs``, ``claim_next_job``, ``heartbeat``, ``update_progress``,
  ``append_log``, ``finish_job``, ``request_cancel``, ``is_cancel_requested``, ``mark_stale_jobs_failed``).
- response semantics (aggregate score, uncertainty, disagreement, the consistency check) come from
  :mod:`fractal_core.mil.semantics`; the store keeps what it computed per model version.
- :mod:`db.ingest`: ``ingest_file(engine, path, dataset, ...) -> IngestSummary``.
- :mod:`db.export`: ``export_dataset(engine, dataset, out, *, format, model_version=None) -> ExportSummary``.
- :mod:`db.cli`: ``register(app: typer.Typer)`` adds ``ingest``, ``export`` and ``db upgrade|current|datasets``;
  :mod:`db.segments_cli` adds ``segments merge|split|undo``.

Returned rows are frozen dataclasses from :mod:`db.rows`, never ORM objects. See ``db/README.md``.
"""
