"""The fine-tuned scorer: a Hugging Face encoder, mean pooling over the scored sentence's tokens and a linear
head, with its training objective and its batched scoring of prepared sequences."""

from __future__ import annotations

import torch
from torch import nn

from fractal_core.experimental.finetune_config import FinetuneConfig
from fractal_core.experimental.token_bags import TokenBags
from fractal_core.mil.losses import bag_loss, instance_loss


class TokenScorer(nn.Module):
    """A Hugging Face encoder + mean pooling over the scored sentence's tokens + a linear head."""

    def __init__(self, encoder: nn.Module, n_classes: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.n_classes = n_classes
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009 (a Hugging Face model)
        self.head = nn.Linear(hidden, 1 if n_classes == 2 else n_classes)
        nn.init.normal_(self.head.weight, std=0.02, generator=generator)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        pool_start: torch.Tensor,
        pool_end: torch.Tensor,
        autocast: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Log-probabilities (n, C) of ``n`` sequences: ids (n, W), the rest (n,) on the model's device."""
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        mask = (pos[None, :] < lengths[:, None]).long()  # (n, W)
        pool = ((pos[None, :] >= pool_start[:, None]) & (pos[None, :] < pool_end[:, None])).float()
        with torch.autocast(
            input_ids.device.type, dtype=autocast or torch.float32, enabled=autocast is not None
        ):
            hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (n, W, h)
        pooled = (hidden.float() * pool.unsqueeze(-1)).sum(1) / pool.sum(1, keepdim=True)  # (n, h)
        z = self.head(pooled)
        if self.n_classes == 2:
            z = z.squeeze(1)
            return torch.stack([nn.functional.logsigmoid(-z), nn.functional.logsigmoid(z)], dim=1)
        return torch.log_softmax(z, dim=1)


def _batch(data: TokenBags, rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The rows' tensors on ``device``, the ids trimmed to the longest row (one gather, no loop)."""
    lengths = data.lengths[rows]
    width = int(lengths.max())
    return (
        data.input_ids[rows, :width].to(device, non_blocking=True),
        lengths.to(device),
        data.pool_start[rows].to(device),
        data.pool_end[rows].to(device),
    )


def batch_loss(
    model: TokenScorer,
    data: TokenBags,
    bags: torch.Tensor,
    *,
    aggregation: str,
    config: FinetuneConfig,
    device: torch.device,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """The fine-tuning objective on ``bags`` (K,): one forward pass over all their sentences, then BagLoss over
    their bag index (+ ``gold_weight`` x the instance NLL on gold sentences)."""
    rows, bag_index = data.rows_of(bags)
    logp = model(*_batch(data, rows, device), autocast=autocast)  # (n, C) float32
    bag_index = bag_index.to(device)
    loss = bag_loss(
        logp,
        bag_index,
        data.labels[bags].to(device),
        aggregation=aggregation,
        variant=config.bag.bag_variant,
        temperature=config.bag.lse_temperature,
        proportion=config.bag.proportion_loss,
    )
    if config.gold_weight > 0:
        loss = loss + config.gold_weight * instance_loss(logp, data.gold[rows].to(device))
    return loss


@torch.inference_mode()
def score_token_bags(
    model: TokenScorer,
    data: TokenBags,
    *,
    device: torch.device,
    batch: int = 64,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Log-probabilities (N, C) of every sentence, in length-sorted chunks of ``batch`` sequences."""
    model.eval()
    order = torch.argsort(data.lengths, descending=True)
    out = torch.empty(data.n_sentences, model.n_classes)
    for start in range(
        0, data.n_sentences, batch
    ):  # chunks of sequences bound the memory, any number of bags
        rows = order[start : start + batch]
        out[rows] = model(*_batch(data, rows, device), autocast=autocast).float().cpu()
    return out


__all__ = ["TokenScorer", "batch_loss", "score_token_bags"]
