"""One readable training loop for every scorer, frozen-embedding or fine-tuned: seeded shuffles of bags,
minibatches, early stopping on a validation score, the best epoch's parameters restored.

:func:`run_epochs` is the loop; :func:`train_stage` sets it up for a ``SentenceScorer`` on prepared bags
(AdamW from the ``TrainConfig``), ``fractal_core.experimental.finetune`` for an encoder and a head (its own
optimiser groups and, on a GPU without bf16, a gradient scaler). Randomness comes from the generator passed in.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, Self, TypeVar

import torch
from torch import nn

from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.model import SentenceScorer

Objective = Callable[[SentenceScorer, BagSet], torch.Tensor]
Validator = Callable[[SentenceScorer], float]  # higher is better
ProgressFn = Callable[[str, float, str], None]  # (stage, fraction of the stage done, message)
BatchLoss = Callable[[torch.Tensor], torch.Tensor]  # bag ids (K,) -> scalar loss


class Batches(Protocol):
    """What :func:`train_stage` walks: ``n_bags`` units (bags of a ``BagSet``, or the pairs and labelled
    responses of ``fitting.preference.PairsAndLabels``) on ``device``, ``select`` making a minibatch of them."""

    @property
    def n_bags(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def select(self, bags: torch.Tensor) -> Self: ...


Data = TypeVar("Data", bound=Batches)


@contextlib.contextmanager
def cpu_threads(n: int, device: torch.device) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (restored afterwards); no-op for 0 or a GPU device.

    The scorer's matrices are small, so intra-op threads mostly wait on each other; on a machine whose cores
    are busy with other work (the app, the worker, other jobs) two threads ran 6-30x slower than one.
    """
    if n <= 0 or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded_dropout(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's default generators forked and seeded from ``seed``, restored afterwards.

    Dropout inside a Hugging Face encoder draws from torch's default generator (no API takes a generator), so a
    fine-tuning run is reproducible only with that generator seeded; forking it keeps the caller's random
    state exactly as it was before the block.
    """
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.default_generators[cuda[0]].manual_seed(seed)
        yield


class TrainingCancelled(RuntimeError):
    """Raised by a progress callback to stop training; nothing is saved."""


@dataclass
class StageResult:
    """What one training stage did: per-epoch losses and validation scores, and the epoch kept."""

    stage: str
    train_loss: list[float] = field(default_factory=list)
    valid_score: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = float("-inf")
    seconds: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """How :func:`run_epochs` walks the bags: ``batch_bags`` bags a step (the last partial batch is kept), at
    most ``max_epochs`` epochs, stopping after ``patience`` epochs without improvement. ``group_size`` g > 1:
    bags g*k .. g*k+g-1 are shuffled as one unit and never split across batches (preference pairs).
    ``report_steps``: progress after every step (slow steps, e.g. fine-tuning) instead of every epoch."""

    batch_bags: int
    max_epochs: int
    patience: int
    group_size: int = 1
    report_steps: bool = False


def run_epochs(
    model: nn.Module,
    n_bags: int,
    batch_loss: BatchLoss,
    *,
    optimiser: torch.optim.Optimizer,
    schedule: Schedule,
    generator: torch.Generator,
    validate: Callable[[], float] | None = None,
    stage: str = "train",
    progress: ProgressFn | None = None,
    scaler: torch.amp.GradScaler | None = None,
    device: torch.device | None = None,
) -> StageResult:
    """Minimise ``batch_loss`` over seeded minibatches of bag ids; keep the parameters of the best epoch.

    ``validate()`` scores ``model`` after each epoch (higher is better; without it the epoch's mean training
    loss, negated). ``scaler``: a gradient scaler for fp16 autocast. ``device``: where the bag ids go.
    """
    started = time.perf_counter()
    result = StageResult(stage=stage)
    g = schedule.group_size
    if n_bags % g:
        raise ValueError(f"{n_bags} bags do not form groups of {g}")
    step_bags = schedule.batch_bags
    n_batches = max(1, math.ceil(n_bags / step_bags))
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    for epoch in range(schedule.max_epochs):
        model.train()
        groups = torch.randperm(n_bags // g, generator=generator)
        order = (groups.view(-1, 1) * g + torch.arange(g)).flatten()
        if device is not None:
            order = order.to(device)
        total = 0.0
        for step, start in enumerate(range(0, n_bags, step_bags)):  # the last partial batch is kept
            loss = batch_loss(order[start : start + step_bags])
            optimiser.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
            else:
                loss.backward()
                optimiser.step()
            value = float(loss.detach())
            total += value
            if progress is not None and schedule.report_steps:
                done = (epoch + (step + 1) / n_batches) / schedule.max_epochs
                progress(stage, done, f"loss {value:.4f}")
        mean_loss = total / n_batches
        result.train_loss.append(mean_loss)
        model.eval()
        score = validate() if validate is not None else -mean_loss
        result.valid_score.append(score)
        if score > result.best_score or result.best_epoch < 0:
            result.best_score, result.best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if progress is not None and not schedule.report_steps:
            progress(
                stage,
                (epoch + 1) / schedule.max_epochs,
                f"epoch {epoch + 1}: loss {mean_loss:.4f}, valid {score:.4f}",
            )
        if stale >= schedule.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


def train_stage(
    model: SentenceScorer,
    data: Data,
    objective: Callable[[SentenceScorer, Data], torch.Tensor],
    *,
    config: TrainConfig,
    generator: torch.Generator,
    validate: Validator | None = None,
    stage: str = "train",
    progress: ProgressFn | None = None,
    group_size: int = 1,
) -> StageResult:
    """One stage of a frozen-embedding fit: AdamW on ``objective`` over minibatches of ``data``'s bags
    (:func:`run_epochs`); small sets get smaller batches (``min_batches_per_epoch``), not fewer steps. ``data``
    is a ``BagSet`` or any other :class:`Batches` (``objective`` then reads its minibatches)."""
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    batch_bags = min(config.batch_bags, max(1, math.ceil(data.n_bags / config.min_batches_per_epoch)))
    batch_bags = max(group_size, batch_bags - batch_bags % group_size)
    schedule = Schedule(batch_bags, config.max_epochs, config.patience, group_size=group_size)
    return run_epochs(
        model,
        data.n_bags,
        lambda bags: objective(model, data.select(bags)),
        optimiser=optimiser,
        schedule=schedule,
        generator=generator,
        validate=None if validate is None else lambda: validate(model),
        stage=stage,
        progress=progress,
        device=data.device,
    )


__all__ = [
    "Batches",
    "Objective",
    "ProgressFn",
    "Schedule",
    "StageResult",
    "TrainingCancelled",
    "Validator",
    "cpu_threads",
    "run_epochs",
    "seeded_dropout",
    "train_stage",
]
