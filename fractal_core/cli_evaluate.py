"""``fractal evaluate``: compare methods on a dataset over seeds and print a table of mean ± sd."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fractal_core.cli_criteria import CriterionOpt, criterion_splits
from fractal_core.cli_options import (
    DeviceOpt,
    EncoderOpt,
    PrecisionOpt,
    ScorerOpt,
    checked_encoder,
    fail,
    method_names,
    train_config,
)
from fractal_core.data.files import atomic_write_text, check_output_file
from fractal_core.errors import InputError

DEFAULT_EVAL_METHODS = "naive,constant,prior_only,bagloss,priors,pslab,hybrid,supervised"
TABLE_KEYS = (
    "instance_auc_roc",
    "instance_auprc",
    "instance_mae",
    "posterior_auc_roc",
    "posterior_auc_roc_calibrated",
    "step_ece",
    "step_ece_calibrated",
    "bag_auc_roc",
    "first_error_acc",
    "first_error_acc_given_y",
    "first_error_top3_given_y",
    "first_error_f1",
    "fkey_top1",
    "train_seconds",
)


def _fmt(stats: dict[str, float]) -> str:
    if math.isnan(stats["mean"]):
        return "-"
    return f"{stats['mean']:.3f}±{stats['std']:.3f}"


def print_table(results: list[dict[str, Any]]) -> None:
    """One row per method: mean ± std over seeds of the headline metrics."""
    from fractal_core.evaluation.metrics import summarize

    methods = list(dict.fromkeys(r["method"] for r in results))
    header = ["method", "gold", *TABLE_KEYS]
    rows = [header]
    for method in methods:
        runs = [r for r in results if r["method"] == method]
        stats = summarize(runs, keys=TABLE_KEYS)
        rows.append([method, f"{runs[0]['gold_fraction']:g}", *(_fmt(stats[k]) for k in TABLE_KEYS)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for method in methods:
        _print_groups(method, [r for r in results if r["method"] == method])


def _print_groups(method: str, runs: list[dict[str, Any]]) -> None:
    """First-error data: the official F1 per ``task`` / subset (``first_error_f1_by_<name>``), mean ± std over
    seeds, one line per grouping."""
    from fractal_core.evaluation.metrics import summarize

    prefix = "first_error_f1_by_"
    for key in sorted({k for r in runs for k in r if k.startswith(prefix)}):
        groups = sorted({g for r in runs for g in r.get(key) or {}})
        values = [{g: (r.get(key) or {}).get(g) for g in groups} for r in runs]
        stats = summarize(values, keys=groups)
        cells = ", ".join(f"{g} {_fmt(stats[g])}" for g in groups)
        typer.echo(f"{method}: first_error_f1 by {key.removeprefix(prefix)}: {cells}")


def evaluate_cmd(
    data: Annotated[
        Path, typer.Option(help="Directory with train.jsonl, valid.jsonl (optional), test.jsonl")
    ],
    methods: Annotated[str, typer.Option(help="Comma-separated methods")] = DEFAULT_EVAL_METHODS,
    gold_fraction: Annotated[
        float, typer.Option(help="Share of training responses with gold sentence labels for hybrid/fractal")
    ] = 0.1,
    seeds: Annotated[int, typer.Option(help="Number of seeds (0..n-1)")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result records here")] = None,
    label_view: Annotated[
        str,
        typer.Option(
            help="native | binary (ordinal labels >= 1 become 1) | mean (label = share of sentences >= 1, "
            "from full sentence labels)"
        ),
    ] = "native",
    limit: Annotated[int | None, typer.Option(help="Use only the first N responses of each split")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Override the default epoch bound")] = None,
    scorer: ScorerOpt = "default",
    encoder: EncoderOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    criterion: CriterionOpt = None,
) -> None:
    """Compare methods on a dataset in the shared schema: sentence AUC-ROC/PR, MAE, bag AUC, first-error acc
    (on data with several criteria, of the one named by --criterion)."""
    from tqdm.auto import tqdm

    from fractal_core.embedding.encoder import get_encoder
    from fractal_core.evaluation.comparison import prepare_splits, run_evaluation

    names = method_names(methods)
    if not 0.0 <= gold_fraction <= 1.0:
        raise fail(f"--gold-fraction: {gold_fraction} is outside [0, 1]")
    if seeds < 1:
        raise fail("--seeds: need at least 1")
    if label_view not in ("native", "binary", "mean"):
        raise fail(f"--label-view: expected native, binary or mean, got {label_view!r}")
    if not data.is_dir():
        raise fail(f"{data}: not a directory with train/valid/test.jsonl")
    if json_out is not None:
        try:
            check_output_file(json_out)
        except InputError as err:
            raise fail(str(err)) from None
    try:
        from fractal_core.data.io import read_split_dir

        splits = read_split_dir(data)
    except InputError as err:
        raise fail(str(err)) from None
    splits = criterion_splits(splits, criterion, joint=False)
    if limit is not None:
        splits = {k: v[:limit] for k, v in splits.items()}
    config = train_config(device, max_epochs, scorer)
    enc = get_encoder(checked_encoder(encoder, device, precision))
    started = time.perf_counter()
    try:
        prepared = prepare_splits(splits, enc, label_view=label_view, device=device)  # type: ignore[arg-type]
    except ValueError as err:
        raise fail(f"{data}: {err}") from None
    typer.echo(
        f"embedded {data} with {enc.encoder_id} in {time.perf_counter() - started:.1f}s "
        f"(aggregation {prepared.aggregation}, {prepared.n_classes} levels)",
        err=True,
    )
    bar = tqdm(total=seeds * len(names), desc="runs", unit="run")

    def on_result(record: dict[str, Any]) -> None:
        bar.set_postfix_str(f"{record['method']} seed {record['seed']}: AUC {record['instance_auc_roc']:.3f}")
        bar.update(1)

    try:
        results = run_evaluation(
            prepared,
            names,
            seeds=range(seeds),
            gold_fraction=gold_fraction,
            config=config,
            on_result=on_result,
        )
    except ValueError as err:
        raise fail(str(err)) from None
    finally:
        bar.close()
    for record in results:
        record.update(dataset=str(data), label_view=label_view, encoder_id=prepared.encoder_id)
        if criterion is not None:
            record["criterion"] = criterion
    print_table(results)
    typer.echo(f"total {time.perf_counter() - started:.1f}s", err=True)
    if json_out is not None:
        try:
            atomic_write_text(json_out, json.dumps(results, indent=1, default=float, allow_nan=True) + "\n")
        except InputError as err:
            raise fail(str(err)) from None
