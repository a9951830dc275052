"""``fractal segment | embed | train | finetune | score | evaluate``: the library's commands (typer).

``register(app)`` adds them to the product's ``fractal`` command (app/cli.py); ``main()`` runs them alone.
Bad input prints one line ``file:line:field: why`` on stderr and exits with code 2; nothing is written. The
shared options and checks live in ``cli_options``, ``evaluate`` in ``cli_evaluate``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fractal_core.cli_criteria import CriterionOpt, criterion_splits, score_criteria, train_criteria
from fractal_core.cli_evaluate import evaluate_cmd
from fractal_core.cli_options import (
    PRECISIONS,
    DeviceOpt,
    EncoderOpt,
    PrecisionOpt,
    RayOpt,
    ScorerOpt,
    checked_encoder,
    fail,
    method_names,
    ray_embed_records,
    read_input,
    stage_bar,
    train_config,
)
from fractal_core.data.files import atomic_write_text, check_output_dir, check_output_file
from fractal_core.errors import InputError
from fractal_core.fitting.method_table import METHOD_NAMES, ONE_PASS_METHODS, one_pass_refusal


def segment_cmd(
    text: Annotated[str | None, typer.Argument(help="Text to split; '-' or nothing reads stdin.")] = None,
    mode: Annotated[str, typer.Option(help="sentences | steps")] = "sentences",
) -> None:
    """Split a response into sentences (or reasoning steps) with character offsets, as JSON lines."""
    from fractal_core.data.segment import segment

    if mode not in ("sentences", "steps"):
        raise fail(f"--mode: expected sentences or steps, got {mode!r}")
    source = sys.stdin.read() if text in (None, "-") else text
    for span in segment(source or "", mode=mode):  # type: ignore[arg-type]
        typer.echo(json.dumps({"start": span.start, "end": span.end, "text": span.text}, ensure_ascii=False))


def embed_cmd(
    data: Annotated[
        Path, typer.Argument(help="A JSONL/CSV/Parquet file or a directory of train/valid/test.jsonl")
    ],
    encoder: EncoderOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    ray: RayOpt = None,
) -> None:
    """Embed every sentence and context once into the on-disk cache (later runs reuse it)."""
    from fractal_core.embedding.encoder import encoder_id_for, get_encoder

    try:
        splits = read_input(data)
    except InputError as err:
        raise fail(str(err)) from None
    config = checked_encoder(encoder, device, precision)
    records = [r for part in splits.values() for r in part]
    started = time.perf_counter()
    if ray:
        ray_embed_records(records, config, ray)
        encoder_id = encoder_id_for(config)
    else:
        enc = get_encoder(config)
        enc.encode([s.text for r in records for s in r.spans], show_progress=True)
        enc.encode_windows([r.context for r in records])
        encoder_id = enc.encoder_id
    typer.echo(
        f"embedded {sum(len(r.spans) for r in records)} sentences of {len(records)} responses with "
        f"{encoder_id} in {time.perf_counter() - started:.1f}s" + (f" on Ray ({ray})" if ray else "")
    )


def train_cmd(
    data: Annotated[
        Path, typer.Argument(help="Training file, or a directory with train.jsonl (+ valid.jsonl)")
    ],
    out: Annotated[Path, typer.Option(help="Directory to save the model in")],
    method: Annotated[
        str, typer.Option(help="fractal (default), pslab, hybrid, bagloss, priors, supervised ...")
    ] = "fractal",
    seed: int = 0,
    max_epochs: Annotated[int | None, typer.Option(help="Override the default epoch bound")] = None,
    scorer: ScorerOpt = "default",
    encoder: EncoderOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    criterion: CriterionOpt = None,
) -> None:
    """Train a sentence scorer from response labels (sentence labels in the file are used as gold). Data with
    several criteria train one model for all of them (methods bagloss, priors, pslab), or one with --criterion."""

    from fractal_core.fitting.estimator import FractalModel

    [method] = method_names(method)
    try:
        splits = read_input(data)
    except InputError as err:
        raise fail(str(err)) from None
    splits = criterion_splits(splits, criterion, joint=True)
    config = train_config(device, max_epochs, scorer)
    if splits["train"][0].criteria is not None:
        return train_criteria(
            splits,
            out,
            method=method,
            config=config,
            encoder=checked_encoder(encoder, device, precision),
            seed=seed,
        )
    try:
        check_output_dir(out, FractalModel.FILES)  # the output is checked before training, not after it
    except InputError as err:
        raise fail(str(err)) from None
    bar, progress = stage_bar()

    try:
        model = FractalModel(
            method, config=config, encoder=checked_encoder(encoder, device, precision), seed=seed
        ).fit(splits["train"], valid=splits.get("valid"), progress=progress)
    except ValueError as err:
        bar.close()
        raise fail(str(err)) from None
    bar.close()
    try:
        model.save(out)
    except InputError as err:  # the path changed while training
        raise fail(str(err)) from None
    shown = {k: round(v, 4) for k, v in model.metrics_.items() if isinstance(v, float) and not math.isnan(v)}
    typer.echo(f"saved {model.resolved_method_} model to {out}  {shown}")


def score_cmd(
    model_dir: Annotated[Path, typer.Option("--model", help="A directory written by `fractal train`")],
    data: Annotated[Path, typer.Argument(help="Responses to score (JSONL/CSV/Parquet)")],
    out: Annotated[Path, typer.Option(help="Output JSONL: each response with sentence offsets and scores")],
    segment_mode: Annotated[str, typer.Option(help="sentences | steps, for raw `text` input")] = "sentences",
    ray: RayOpt = None,
    device: Annotated[
        str | None, typer.Option(help="Run the encoder and scorer here (default: the model's own setting)")
    ] = None,
    criterion: Annotated[
        str | None, typer.Option(help="A model of several criteria: write this criterion's scores only")
    ] = None,
) -> None:
    """Score every sentence of every response with a trained model (every criterion of a multi-criterion one)."""
    from fractal_core.data.io import read_records
    from fractal_core.fitting.criteria_model import META_FILE
    from fractal_core.fitting.estimator import FractalModel

    finetuned = (model_dir / "finetune.json").is_file()
    several = (model_dir / META_FILE).is_file()
    if several and (ray or device is not None):
        raise fail("--ray / --device: a model of several criteria runs where it was trained; leave them out")
    if criterion is not None and not several:
        raise fail(f"--criterion: {model_dir} scores one label (it is not a model of several criteria)")
    if not finetuned and not several and not (model_dir / "model.json").is_file():
        raise fail(f"{model_dir}: no model.json (train one with `fractal train` or `fractal finetune`)")
    try:
        check_output_file(out)
        records = read_records(data, segment_mode=segment_mode)  # type: ignore[arg-type]
    except InputError as err:
        raise fail(str(err)) from None
    if several:
        return score_criteria(model_dir, records, out, criterion)
    if finetuned:
        from fractal_core.experimental.finetune import FinetuneResult

        if ray:
            raise fail("--ray: a fine-tuned model encodes whole token sequences itself; run without --ray")
        if device is not None:
            checked_encoder(None, device)  # a bad --device: exit 2
        _write_scores(out, records, FinetuneResult.load(model_dir, device=device).predict(records))
        return
    model = FractalModel.load(model_dir)
    if device is not None:
        model_on_device(model, device)
    if ray:  # the encoder runs on the cluster; the small scorer then reads the cache here
        from fractal_core.embedding.encoder import EncoderConfig

        ray_embed_records(records, model.encoder or EncoderConfig(), ray)
    _write_scores(out, records, model.predict(records))


def model_on_device(model: Any, device: str) -> Any:
    """``model`` (a loaded FractalModel) set to run its encoder and scorer on ``device``; a bad device: exit 2."""
    from dataclasses import replace

    encoder_config = checked_encoder(model.encoder.model_path if model.encoder else None, device)
    model.encoder = replace(model.encoder, device=device) if model.encoder else encoder_config
    model.config = replace(model._config(), device=device)
    return model


def _write_scores(out: Path, records: list[Any], scores: list[Any]) -> None:
    """Each response with its sentence offsets and scores, one JSON line each, written atomically."""
    from fractal_core.data.io import record_to_dict

    lines = []
    for record, score in zip(records, scores, strict=True):
        row = record_to_dict(record)
        row["offsets"] = [[s.start, s.end] for s in record.spans]
        row["sentence_scores"] = [round(float(v), 6) for v in score]
        lines.append(json.dumps(row, ensure_ascii=False))
    try:
        atomic_write_text(out, "\n".join(lines) + "\n")
    except InputError as err:
        raise fail(str(err)) from None
    typer.echo(f"scored {sum(len(s) for s in scores)} sentences of {len(records)} responses -> {out}")


def finetune_cmd(
    data: Annotated[
        Path, typer.Argument(help="Training file, or a directory with train.jsonl (+ valid.jsonl)")
    ],
    out: Annotated[Path, typer.Option(help="Directory to save the fine-tuned scorer in")],
    encoder: EncoderOpt = None,
    device: DeviceOpt = "auto",
    epochs: Annotated[int, typer.Option(help="Upper bound on epochs (the best validated one is kept)")] = 3,
    max_length: Annotated[int, typer.Option(help="Tokens per [context; earlier sentences; sentence]")] = 192,
    method: Annotated[
        str,
        typer.Option(
            help=f"one_pass: the method trained, its objective unchanged ({', '.join(ONE_PASS_METHODS)}); "
            "per_step: bagloss"
        ),
    ] = "bagloss",
    gold_weight: Annotated[
        float | None,
        typer.Option(
            help="Weight of an extra loss on the gold sentence labels in the file, added to the bag stage "
            "(default: 1 with bagloss, 0 with any other method, which keeps its own objective)"
        ),
    ] = None,
    route: Annotated[
        str,
        typer.Option(
            help="per_step: one sequence per sentence, every layer trained; one_pass: each response read once "
            "(block-causal for step data), lower layers frozen and cached, the top --train-layers trained"
        ),
    ] = "per_step",
    train_layers: Annotated[
        int,
        typer.Option(help="one_pass: top encoder layers trained (0: 1 and 2 tried, the best on valid kept)"),
    ] = 0,
    attention: Annotated[
        str, typer.Option(help="one_pass: auto (block-causal for first-error step data) | causal | full")
    ] = "auto",
    window_tokens: Annotated[int, typer.Option(help="one_pass: tokens per window of a response")] = 384,
    seed: int = 0,
) -> None:
    """Fine-tune the encoder with the bag loss: each sentence is scored over its context and the sentences
    before it (token level). `fractal score --model OUT` then scores with it."""
    from fractal_core.experimental.finetune import FinetuneConfig, FinetuneResult, finetune
    from fractal_core.experimental.finetune_config import ROUTES
    from fractal_core.fitting.estimator import task_of

    if gold_weight is None:
        gold_weight = 1.0 if method == "bagloss" else 0.0
    if epochs < 1 or max_length < 8 or gold_weight < 0:
        raise fail("--epochs must be >= 1, --max-length >= 8 and --gold-weight >= 0")
    if route not in ROUTES:
        raise fail(f"--route: expected one of {', '.join(ROUTES)}, got {route!r}")
    if method not in METHOD_NAMES:
        raise fail(f"--method: unknown method {method!r}; choose one of {', '.join(ONE_PASS_METHODS)}")
    refusal = one_pass_refusal(method) if route == "one_pass" else None
    if route != "one_pass" and method != "bagloss":
        refusal = f"the per-step route trains bagloss only, not {method!r} (--route one_pass trains it)"
    if refusal is not None:
        raise fail(f"--method: {refusal}")
    if attention not in ("auto", "causal", "full"):
        raise fail(f"--attention: expected auto, causal or full, got {attention!r}")
    if train_layers < 0 or window_tokens < 16:
        raise fail("--train-layers must be >= 0 and --window-tokens >= 16")
    try:
        check_output_dir(out, FinetuneResult.FILES)
        if out.is_dir():  # a new OUT gets its encoder folder when saved
            check_output_dir(out / "encoder")
        splits = read_input(data)
    except InputError as err:
        raise fail(str(err)) from None
    encoder_config = checked_encoder(encoder, device)
    config = FinetuneConfig(
        encoder=encoder_config.model_path, device=device, epochs=epochs, max_length=max_length,
        gold_weight=gold_weight, method=method, route=route, train_layers=train_layers,  # type: ignore[arg-type]
        attention=attention, window_tokens=window_tokens,  # type: ignore[arg-type]
    )  # fmt: skip
    aggregation, n_classes = task_of([r for part in splits.values() for r in part])
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc="finetune", unit="%")

    def progress(stage: str, fraction: float, message: str) -> None:
        bar.n = int(100 * fraction)
        bar.set_postfix_str(message)
        bar.refresh()

    try:
        result = finetune(
            splits["train"], splits.get("valid"), aggregation=aggregation, n_classes=n_classes, config=config,
            seed=seed, progress=progress,
        )  # fmt: skip
    except ValueError as err:
        raise fail(str(err)) from None
    finally:
        bar.close()
    result.save(out)
    chosen = ""
    if result.layer_choice is not None:
        tried = ", ".join(f"{k}: {v:.4f}" for k, v in result.layer_choice["valid_score"].items())
        chosen = f"; top {result.config.train_layers} layers trained, chosen on valid ({tried})"
    valid = f"valid {result.valid_score[result.best_epoch]:.4f}, " if result.valid_score else ""
    typer.echo(
        f"saved fine-tuned scorer to {out} (best epoch {result.best_epoch + 1}, "
        f"{valid}{result.seconds:.0f}s on {result.device}{chosen})"
    )


def register(app: typer.Typer) -> None:
    """Add the library's commands to ``app``."""
    app.command("segment")(segment_cmd)
    app.command("embed")(embed_cmd)
    app.command("train")(train_cmd)
    app.command("score")(score_cmd)
    app.command("finetune")(finetune_cmd)
    app.command("evaluate")(evaluate_cmd)


def main() -> None:
    app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
    register(app)
    app()


if __name__ == "__main__":
    main()


__all__ = ["PRECISIONS", "EncoderOpt", "checked_encoder", "main", "register"]
