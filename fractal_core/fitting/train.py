"""One readable training loop: AdamW, seeded shuffles, early stopping, best checkpoint restored."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.model import SentenceScorer

Objective = Callable[[SentenceScorer, BagSet], torch.Tensor]
Validator = Callable[[SentenceScorer], float]  # higher is better
ProgressFn = Callable[[str, float, str], None]  # (stage, fraction of the stage done, message)


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


def train_stage(
    model: SentenceScorer,
    data: BagSet,
    objective: Objective,
    *,
    config: TrainConfig,
    generator: torch.Generator,
    validate: Validator | None = None,
    stage: str = "train",
    progress: ProgressFn | None = None,
    group_size: int = 1,
) -> StageResult:
    """Minimise ``objective`` over minibatches of bags; keep the parameters of the best validated epoch.

    Without ``validate`` the training loss of the epoch (negated) is the selection score. With ``group_size``
    g > 1, bags g*k .. g*k+g-1 are shuffled as one unit and never split across batches (preference pairs).
    """
    import time

    started = time.perf_counter()
    result = StageResult(stage=stage)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    batch_bags = min(config.batch_bags, max(1, math.ceil(data.n_bags / config.min_batches_per_epoch)))
    batch_bags = max(group_size, batch_bags - batch_bags % group_size)
    if data.n_bags % group_size:
        raise ValueError(f"{data.n_bags} bags do not form groups of {group_size}")
    n_batches = max(1, math.ceil(data.n_bags / batch_bags))
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    for epoch in range(config.max_epochs):
        model.train()
        groups = torch.randperm(data.n_bags // group_size, generator=generator)
        order = (groups.view(-1, 1) * group_size + torch.arange(group_size)).flatten().to(data.device)
        total = 0.0
        for start in range(0, data.n_bags, batch_bags):  # the last partial batch is kept
            batch = data.select(order[start : start + batch_bags])
            loss = objective(model, batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
        mean_loss = total / n_batches
        result.train_loss.append(mean_loss)
        model.eval()
        score = validate(model) if validate is not None else -mean_loss
        result.valid_score.append(score)
        if score > result.best_score or result.best_epoch < 0:
            result.best_score, result.best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if progress is not None:
            progress(
                stage,
                (epoch + 1) / config.max_epochs,
                f"epoch {epoch + 1}: loss {mean_loss:.4f}, valid {score:.4f}",
            )
        if stale >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
