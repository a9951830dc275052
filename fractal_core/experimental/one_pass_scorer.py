"""The one-pass scorer: a Hugging Face BERT-style encoder read once per response window (``one_pass_windows``),
its lower layers frozen, its top ``train_layers`` layers and a linear head trained.

The frozen part (embeddings + lower layers) runs once per window; its token states are rounded to float16 (the
stored form, used on every path so cached and fresh states are the same numbers) and kept on disk
(:class:`TokenStateCache`). An epoch then runs only the top layers, with the additive block mask, and pools
each step's vector as the mean of its own tokens' final states (an ``index_add`` over the windows' pool rows),
then the head gives log-probabilities (N, C) like every scorer here, so the suite's objectives apply unchanged
(``fitting.objectives.bag_terms`` / ``instance_terms``, fed by :func:`one_pass_loss`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fractal_core.experimental.one_pass_windows import PassWindows, attention_bias
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.objectives import LogpObjective

STATE_DTYPE = torch.float16  # lower states as stored; every path rounds to it


def _layers(encoder: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError("the one-pass route needs a BERT-style encoder (encoder.encoder.layer)")
    return layers


def _run_layer(layer: nn.Module, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    out = layer(hidden, bias)
    return out[0] if isinstance(out, tuple) else out  # older transformers return a tuple


class OnePassScorer(nn.Module):
    """Encoder (lower layers frozen) + mean pooling over each step's own tokens + a linear head."""

    def __init__(
        self,
        encoder: nn.Module,
        n_classes: int,
        *,
        train_layers: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.n_classes = n_classes
        n_layers = len(_layers(encoder))
        if not 1 <= train_layers <= n_layers:
            raise ValueError(f"train_layers must be between 1 and {n_layers}, got {train_layers}")
        self.n_lower = n_layers - train_layers
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009 (a Hugging Face model)
        self.head = nn.Linear(hidden, 1 if n_classes == 2 else n_classes)
        nn.init.normal_(self.head.weight, std=0.02, generator=generator)
        nn.init.zeros_(self.head.bias)
        for name, p in encoder.named_parameters():  # embeddings and the lower layers stay as loaded
            p.requires_grad_(self.trains(name))

    def trains(self, name: str) -> bool:
        """Whether the encoder's parameter (or buffer) ``name`` belongs to a trained top layer."""
        parts = name.split(".")
        return parts[:2] == ["encoder", "layer"] and int(parts[2]) >= self.n_lower

    def trainable(self) -> list[nn.Parameter]:
        """The top layers' parameters (the head's are ``self.head.parameters()``)."""
        return [p for p in self.encoder.parameters() if p.requires_grad]

    @torch.inference_mode()
    def lower(self, input_ids: torch.Tensor, block: torch.Tensor, *, causal: bool) -> torch.Tensor:
        """Frozen token states (w, L, h) in ``STATE_DTYPE`` of windows ids/blocks (w, L)."""
        bias = attention_bias(block, causal=causal)
        hidden = getattr(self.encoder, "embeddings")(input_ids=input_ids)  # noqa: B009
        for layer in _layers(self.encoder)[: self.n_lower]:
            hidden = _run_layer(layer, hidden, bias)
        return hidden.to(STATE_DTYPE)

    def vectors(
        self,
        states: torch.Tensor,
        block: torch.Tensor,
        pool_row: torch.Tensor,
        n_rows: int,
        *,
        causal: bool,
        autocast: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Step vectors (n_rows, h): the mean final state of each step's own tokens, from windows with lower
        ``states`` (w, L, h), ``block`` and ``pool_row`` (w, L; rows 0..n_rows-1, -1 elsewhere)."""
        bias = attention_bias(block, causal=causal)
        hidden = states.float()
        with torch.autocast(
            states.device.type, dtype=autocast or torch.float32, enabled=autocast is not None
        ):
            for layer in _layers(self.encoder)[self.n_lower :]:
                hidden = _run_layer(layer, hidden, bias)
        take = pool_row >= 0
        rows = pool_row[take]
        width = hidden.shape[-1]
        summed = torch.zeros(n_rows, width, device=hidden.device).index_add_(0, rows, hidden[take].float())
        count = torch.zeros(n_rows, device=hidden.device).index_add_(
            0, rows, torch.ones(len(rows), device=rows.device)
        )
        return summed / count.clamp_min(1.0)[:, None]

    def forward(
        self,
        states: torch.Tensor,
        block: torch.Tensor,
        pool_row: torch.Tensor,
        n_rows: int,
        *,
        causal: bool,
        autocast: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Log-probabilities (n_rows, C) of the steps (arguments as :meth:`vectors`)."""
        z = self.head(self.vectors(states, block, pool_row, n_rows, causal=causal, autocast=autocast))
        if self.n_classes == 2:
            z = z.squeeze(1)
            return torch.stack([nn.functional.logsigmoid(-z), nn.functional.logsigmoid(z)], dim=1)
        return torch.log_softmax(z, dim=1)


class TokenStateCache:
    """Lower token states on disk, one float16 ``.npy`` per response, keyed by the encoder id, the frozen layer
    count, the mask mode and the hash of the response's windows (token ids and blocks). Files are written to a
    temporary name and renamed, so a crash never leaves a half-written entry."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def key(self, encoder_id: str, n_lower: int, causal: bool, ids: np.ndarray, block: np.ndarray) -> Path:
        digest = hashlib.sha256(f"{encoder_id}|lower={n_lower}|causal={causal}|".encode())
        digest.update(ids.astype(np.int64).tobytes())
        digest.update(block.astype(np.int64).tobytes())
        return self.directory / f"{digest.hexdigest()}.npy"

    def get(self, path: Path) -> np.ndarray | None:
        return np.load(path) if path.is_file() else None

    def put(self, path: Path, states: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, states.astype(np.float16))
        os.replace(tmp, path)


class PackedStates:
    """Every window's lower states in one flat (tokens, h) tensor; :meth:`batch` pads a set of windows."""

    def __init__(self, flat: torch.Tensor, lengths: torch.Tensor) -> None:
        self.flat = flat
        self.lengths = lengths
        self.offset = torch.cumsum(lengths, 0) - lengths

    def batch(self, windows: torch.Tensor, width: int) -> torch.Tensor:
        """(w, width, h) states of ``windows``; padding rows repeat a real token (masked out as keys)."""
        pos = torch.arange(width)
        index = self.offset[windows][:, None] + torch.minimum(
            pos[None, :], self.lengths[windows][:, None] - 1
        )
        return self.flat[index]


def lower_states(
    model: OnePassScorer,
    data: PassWindows,
    *,
    device: torch.device,
    batch: int = 32,
    cache: TokenStateCache | None = None,
    encoder_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PackedStates:
    """The lower states of every window of ``data``, from ``cache`` when there, computed (and stored) otherwise.

    Responses are the cache's unit; windows run in length-sorted chunks of ``batch`` (a loop over chunks).
    ``progress(done, total)`` is called after each chunk of windows computed (it may raise to cancel).
    """
    lengths = data.lengths
    width = int(lengths.max())
    hidden = int(getattr(model.encoder, "config").hidden_size)  # noqa: B009
    out = torch.zeros(int(lengths.sum()), hidden, dtype=STATE_DTYPE)
    offset = torch.cumsum(lengths, 0) - lengths
    token_index = offset[:, None] + torch.arange(width)[None, :]  # (M, width); valid where pos < length
    valid = torch.arange(width)[None, :] < lengths[:, None]
    keys: list[Path] = []
    todo = torch.ones(data.n_windows, dtype=torch.bool)
    if cache is not None and encoder_id is not None:
        counts = torch.bincount(data.window_bag, minlength=data.n_bags)
        first = (torch.cumsum(counts, 0) - counts).tolist()
        ids, block = data.input_ids.numpy(), data.block.numpy()
        for b, (start, count) in enumerate(zip(first, counts.tolist(), strict=True)):  # I/O, once per set
            span = slice(start, start + count)
            own = int(lengths[span].max())  # the response's own width, not the set's: keys hold across sets
            keys.append(cache.key(encoder_id, model.n_lower, data.causal, ids[span, :own], block[span, :own]))
            found = cache.get(keys[b])
            if found is not None and found.shape == (int(lengths[span].sum()), hidden):
                out[int(offset[start]) : int(offset[start]) + found.shape[0]] = torch.from_numpy(found)
                todo[span] = False
    pending = torch.nonzero(todo).flatten()
    pending = pending[torch.argsort(lengths[pending], descending=True)]
    for start in range(0, len(pending), batch):  # chunks of windows bound the memory
        rows = pending[start : start + batch]
        w = int(lengths[rows].max())
        states = model.lower(
            data.input_ids[rows, :w].to(device), data.block[rows, :w].to(device), causal=data.causal
        ).cpu()
        keep = valid[rows, :w]
        out[token_index[rows, :w][keep]] = states[keep]
        if progress is not None:
            progress(start + len(rows), len(pending))
    if keys and cache is not None and bool(todo.any()):
        bag_tokens = torch.zeros(data.n_bags, dtype=torch.long).index_add_(0, data.window_bag, lengths)
        bag_start = (torch.cumsum(bag_tokens, 0) - bag_tokens).tolist()
        fresh = torch.unique(data.window_bag[todo]).tolist()
        for b in fresh:  # I/O, once per new response
            cache.put(keys[b], out[bag_start[b] : bag_start[b] + int(bag_tokens[b])].numpy())
    return PackedStates(out, lengths)


def one_pass_logp(
    model: OnePassScorer,
    data: PassWindows,
    states: PackedStates,
    windows: torch.Tensor,
    rows: torch.Tensor,
    *,
    device: torch.device,
    autocast: torch.dtype | None = None,
    vectors: bool = False,
) -> torch.Tensor:
    """Log-probabilities (n, C) of step ``rows`` (n,), all scored in ``windows`` (w,): one padded pass
    (``vectors``: their pooled vectors (n, h) instead)."""
    width = int(data.lengths[windows].max())
    local = torch.full((data.n_sentences,), -1, dtype=torch.long)
    local[rows] = torch.arange(len(rows))
    pool = data.pool_row[windows, :width]
    pool = torch.where(pool >= 0, local[pool.clamp_min(0)], -1)
    return (model.vectors if vectors else model)(
        states.batch(windows, width).to(device),
        data.block[windows, :width].to(device),
        pool.to(device),
        len(rows),
        causal=data.causal,
        autocast=autocast,
    )


def one_pass_loss(
    model: OnePassScorer,
    data: PassWindows,
    states: PackedStates,
    bags: torch.Tensor,
    objective: LogpObjective,
    targets: BagSet,
    *,
    device: torch.device,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """``objective`` (a suite objective over log-probabilities, ``fitting.objectives``) on bags ``bags`` (K,):
    their steps scored in one pass over their windows, their labels, gold and constant targets taken from
    ``targets`` (a :class:`BagSet` of the same responses and steps as ``data``, e.g. ``data.bagset()``)."""
    windows, rows, _ = data.select(bags)
    logp = one_pass_logp(model, data, states, windows, rows, device=device, autocast=autocast)
    return objective(logp, targets.select(bags).to(device))


@torch.inference_mode()
def score_windows(
    model: OnePassScorer,
    data: PassWindows,
    states: PackedStates,
    *,
    device: torch.device,
    batch_bags: int = 16,
    autocast: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Log-probabilities (N, C) of every step, ``batch_bags`` responses per pass (a loop over chunks);
    ``progress(done, total)`` responses after each chunk (it may raise to cancel)."""
    model.eval()
    out = torch.empty(data.n_sentences, model.n_classes)
    for start in range(0, data.n_bags, batch_bags):
        end = min(start + batch_bags, data.n_bags)
        windows, rows, _ = data.select(torch.arange(start, end))
        out[rows] = (
            one_pass_logp(model, data, states, windows, rows, device=device, autocast=autocast).float().cpu()
        )
        if progress is not None:
            progress(end, data.n_bags)
    return out


__all__ = [
    "STATE_DTYPE",
    "OnePassScorer",
    "PackedStates",
    "TokenStateCache",
    "lower_states",
    "one_pass_logp",
    "one_pass_loss",
    "score_windows",
]
