"""End-to-end fine-tuning of the encoder with the bag loss: a token-level contextual scorer (issue 9, item 6).

Every sentence becomes one token sequence ``[CLS] context [SEP] earlier sentences [SEP] sentence [SEP]``: the
context (the question) keeps its first ``context_tokens`` tokens, each sentence its first ``sentence_tokens``,
and the earlier sentences of the same response fill what is left of ``max_length`` from the *left*, so the steps
just before the scored one survive truncation (prefix-causal: a step never sees a later one). The encoder runs
over the whole sequence; the hidden states of the scored sentence's own tokens are mean-pooled and a linear
head gives its logit (binary) or level logits (ordinal), as log-probabilities (N, C) like every scorer here.

Training minimises the suite's own losses (``fractal_core.mil.losses``): BagLoss on the response labels, plus,
with ``gold_weight`` > 0, the instance NLL on the gold sentence labels a user has (hybrid-style use of a small
gold budget). A minibatch is a set of bags: their sentences' rows are gathered and padded to the batch's longest
sequence in one step, one forward pass scores them all, and the bag losses reduce over ``bag_index`` (segment
reductions): no Python loop over bags or sentences. CUDA when present, with bf16 autocast (fp16 with a gradient
scaler where bf16 is missing); bf16 autocast on a CPU with native bf16, float32 otherwise.

Early stopping and Platt calibration use the validation responses through the same rules as the frozen scorers
(``methods.logp_validator``, ``auto.fit_calibration``); metrics come from ``estimator.evaluation_metrics``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import autocast_dtype, resolve_device, resolve_model_path
from fractal_core.embedding.features import gold_array, sentence_bag_index
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.mil.losses import bag_loss, instance_loss
from fractal_core.mil.reductions import gather_ranges, segment_count

Precision = Literal["auto", "float32", "bfloat16", "float16"]
ProgressFn = Callable[[str, float, str], None]


@dataclass(frozen=True)
class FinetuneConfig:
    """How the encoder is fine-tuned. Defaults sized for a CPU slice; a GPU takes longer sequences and epochs."""

    encoder: str | None = None  # encoder name or local Hugging Face directory (None: the bundled MiniLM)
    max_length: int = 192  # tokens per sequence, specials included
    context_tokens: int = 64  # first tokens of the context (question) kept
    sentence_tokens: int = 64  # first tokens of each sentence kept (as the scored one and in later prefixes)
    epochs: int = 3  # upper bound; the best validated epoch is kept
    patience: int = 1  # epochs without validation improvement before stopping
    batch_bags: int = 8  # bags per optimiser step
    score_batch: int = 64  # sequences per forward pass when scoring (no gradients)
    learning_rate: float = 3e-5  # AdamW step of the encoder
    head_learning_rate: float = 1e-3  # AdamW step of the linear head
    weight_decay: float = 0.01
    gold_weight: float = 1.0  # weight of the instance NLL on gold sentence labels (0: response labels only)
    calibrate: bool = True  # binary max/min: Platt-scale the logit to the validation responses' labels
    device: str = "auto"  # "auto" -> CUDA when present, else CPU
    precision: Precision = "auto"  # autocast: bf16 where native (fp16 + scaler on a GPU without bf16)
    bag: TrainConfig = field(default_factory=TrainConfig)  # BagLoss variant, temperature, validation rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        data = dict(data)
        return cls(bag=TrainConfig.from_dict(data.pop("bag", {})), **data)


def training_precision(device: torch.device, precision: str) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed) for fine-tuning on ``device``.

    bf16 where the hardware has it natively (``encoder.autocast_dtype``, the encoder's own rule); on a CUDA
    GPU without bf16, ``"auto"`` and ``"float16"`` take fp16 autocast with a gradient scaler (fp16 gradients
    underflow without one); ``"float16"`` on a CPU is refused.
    """
    if precision == "float16":
        if device.type != "cuda":
            raise ValueError(f"float16 fine-tuning needs a CUDA GPU, not {device}")
        return torch.float16, True
    dtype = autocast_dtype(device, precision)
    if dtype is None and precision == "auto" and device.type == "cuda":
        return torch.float16, True
    return dtype, False


@dataclass
class TokenBags:
    """Token sequences of every sentence of B bags (N sentences), built once.

    input_ids (N, W) long, padded; lengths (N,) real tokens; pool_start, pool_end (N,) the scored sentence's
    token range; bag_index (N,) sorted; labels (B,) float; gold (N,) long, -1 where unknown.
    """

    input_ids: torch.Tensor
    lengths: torch.Tensor
    pool_start: torch.Tensor
    pool_end: torch.Tensor
    bag_index: torch.Tensor
    labels: torch.Tensor
    gold: torch.Tensor

    @property
    def n_bags(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_sentences(self) -> int:
        return int(self.bag_index.shape[0])

    def _layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sentence counts, first rows) per bag, computed once per ``bag_index`` (not once per minibatch)."""
        cached = self.__dict__.get("_layout_cache")
        if cached is not None and cached[0] is self.bag_index:
            return cached[1], cached[2]
        counts = segment_count(self.bag_index, self.n_bags, torch.long)
        starts = torch.cumsum(counts, 0) - counts
        self.__dict__["_layout_cache"] = (self.bag_index, counts, starts)
        return counts, starts

    def rows_of(self, bags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat sentence rows of ``bags`` (K,) in that order, and their new bag index 0..K-1."""
        counts, starts = self._layout()
        rows = gather_ranges(starts[bags], counts[bags])
        return rows, torch.repeat_interleave(torch.arange(bags.shape[0]), counts[bags])

    def bagset(self) -> BagSet:
        """A :class:`BagSet` view (no embeddings) for the suite's bag-level rules and metrics."""
        empty = torch.zeros(self.n_sentences, 0)
        return BagSet(
            sent_emb=empty,
            bag_index=self.bag_index,
            ctx_emb=torch.zeros(self.n_bags, 0),
            win_bag=torch.arange(self.n_bags),
            labels=self.labels,
            gold=self.gold,
        )


def _flat_tokens(tokenizer: Any, texts: list[str], keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize ``texts`` without specials, each cut to its first ``keep`` tokens -> (flat ids, starts, lengths)."""
    encoded = (
        tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        if texts
        else []
    )
    lengths = np.fromiter((min(len(ids), keep) for ids in encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter((t for ids in encoded for t in ids[:keep]), dtype=np.int64, count=int(lengths.sum()))
    starts = np.cumsum(lengths) - lengths
    return flat, starts, lengths


def build_token_bags(records: Sequence[ResponseRecord], tokenizer: Any, config: FinetuneConfig) -> TokenBags:
    """The sequences of every sentence of ``records`` (see the module doc), assembled with array indexing."""
    if not records:
        raise ValueError("no responses")
    specials = 4
    if config.max_length < specials + 2:
        raise ValueError("max_length must leave room for the context, the sentence and 4 special tokens")
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id or 0
    budget = config.max_length - specials
    ctx_flat, ctx_start, ctx_len = _flat_tokens(
        tokenizer, [r.context for r in records], config.context_tokens
    )
    sent_flat, sent_start, sent_len = _flat_tokens(
        tokenizer, [s.text for r in records for s in r.spans], config.sentence_tokens
    )
    bag = sentence_bag_index(records)  # (N,)
    n = bag.shape[0]
    if n == 0:
        raise ValueError("no sentences")
    q_len = np.minimum(ctx_len[bag], budget // 2)  # the context never takes more than half the budget
    s_len = np.minimum(sent_len, budget - q_len)
    first_sentence = np.concatenate([[0], np.cumsum(np.bincount(bag, minlength=len(records)))[:-1]])
    prefix_begin = sent_start[first_sentence[bag]]  # flat token where the bag's first sentence starts
    p_len = np.minimum(
        sent_start - prefix_begin, budget - q_len - s_len
    )  # earlier tokens kept (from the left)
    p_start = sent_start - p_len
    one = np.ones(n, dtype=np.int64)
    seg_len = np.stack([one, q_len, one, p_len, one, s_len, one], axis=1)  # (N, 7)
    seg_end = np.cumsum(seg_len, axis=1)
    seg_begin = seg_end - seg_len
    total = seg_end[:, -1]
    width = int(total.max())
    pos = np.arange(width)
    segment = (pos[None, :, None] >= seg_end[:, None, :]).sum(2)  # (N, W) 0..6, 7 = padding
    local = pos[None, :] - np.take_along_axis(seg_begin, np.minimum(segment, 6), axis=1)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    ids[(segment == 0)] = cls_id
    ids[(segment == 2) | (segment == 4) | (segment == 6)] = sep_id
    q_rows, q_cols = np.nonzero(segment == 1)
    ids[q_rows, q_cols] = ctx_flat[ctx_start[bag[q_rows]] + local[q_rows, q_cols]]
    p_rows, p_cols = np.nonzero(segment == 3)
    ids[p_rows, p_cols] = sent_flat[p_start[p_rows] + local[p_rows, p_cols]]
    s_rows, s_cols = np.nonzero(segment == 5)
    ids[s_rows, s_cols] = sent_flat[sent_start[s_rows] + local[s_rows, s_cols]]
    # An empty sentence pools over its closing [SEP] (never over nothing).
    pool_start = seg_begin[:, 5]
    pool_end = np.maximum(seg_end[:, 5], pool_start + 1)
    labels = np.array([float(r.response_label) for r in records], dtype=np.float32)
    return TokenBags(
        input_ids=torch.from_numpy(ids),
        lengths=torch.from_numpy(total),
        pool_start=torch.from_numpy(pool_start),
        pool_end=torch.from_numpy(pool_end),
        bag_index=torch.from_numpy(bag),
        labels=torch.from_numpy(labels),
        gold=torch.from_numpy(gold_array(records)),
    )


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


@dataclass
class FinetuneResult:
    """A fine-tuned scorer, its calibration and what each epoch did."""

    model: TokenScorer
    tokenizer: Any
    config: FinetuneConfig
    aggregation: str
    n_classes: int
    calibration: dict[str, Any] | None
    train_loss: list[float]
    valid_score: list[float]
    best_epoch: int
    seconds: float
    device: torch.device

    FILES: ClassVar[tuple[str, ...]] = ("finetune.json", "head.pt")
    """What :meth:`save` writes beside the ``encoder`` directory."""

    def predict_logp_tokens(self, data: TokenBags) -> torch.Tensor:
        """Calibrated log-probabilities (N, C) of prepared sequences."""
        dtype, _ = training_precision(self.device, self.config.precision)
        logp = score_token_bags(
            self.model, data, device=self.device, batch=self.config.score_batch, autocast=dtype
        )
        if self.calibration is None:
            return logp
        from fractal_core.fitting.auto import Calibration

        with torch.inference_mode():
            return Calibration.from_dict(self.calibration)(logp)

    def predict(self, records: Sequence[ResponseRecord]) -> list[np.ndarray]:
        """Per response: (n_sentences,) P(level >= 1), like ``FractalModel.predict``."""
        from fractal_core.mil.aggregate import positive_score

        data = build_token_bags(records, self.tokenizer, self.config)
        score = positive_score(self.predict_logp_tokens(data)).numpy().astype(np.float64)
        sizes = np.array([len(r.spans) for r in records])
        return np.split(score, np.cumsum(sizes)[:-1])

    def save(self, directory: str | Path) -> Path:
        """``finetune.json`` (config, task, calibration, history), ``head.pt`` and the encoder + tokenizer."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.encoder.save_pretrained(directory / "encoder")  # type: ignore[operator]
        self.tokenizer.save_pretrained(directory / "encoder")
        torch.save(self.model.head.state_dict(), directory / "head.pt")
        meta = {
            "kind": "finetune",
            "config": self.config.to_dict(),
            "aggregation": self.aggregation,
            "n_classes": self.n_classes,
            "calibration": self.calibration,
            "train_loss": self.train_loss,
            "valid_score": self.valid_score,
            "best_epoch": self.best_epoch,
            "seconds": self.seconds,
        }
        (directory / "finetune.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> FinetuneResult:
        from transformers import AutoModel, AutoTokenizer

        directory = Path(directory)
        meta = json.loads((directory / "finetune.json").read_text(encoding="utf-8"))
        config = FinetuneConfig.from_dict(meta["config"])
        torch_device = resolve_device(device or config.device)
        tokenizer = AutoTokenizer.from_pretrained(directory / "encoder", local_files_only=True)
        encoder = AutoModel.from_pretrained(directory / "encoder", local_files_only=True)
        model = TokenScorer(encoder, int(meta["n_classes"]))
        model.head.load_state_dict(torch.load(directory / "head.pt", map_location="cpu", weights_only=True))
        return cls(
            model=model.to(torch_device).eval(),
            tokenizer=tokenizer,
            config=config,
            aggregation=meta["aggregation"],
            n_classes=int(meta["n_classes"]),
            calibration=meta.get("calibration"),
            train_loss=list(meta.get("train_loss", [])),
            valid_score=list(meta.get("valid_score", [])),
            best_epoch=int(meta.get("best_epoch", -1)),
            seconds=float(meta.get("seconds", 0.0)),
            device=torch_device,
        )


def load_encoder(config: FinetuneConfig) -> tuple[nn.Module, Any]:
    """The trainable encoder and its tokenizer from ``config.encoder`` (a name or a local directory)."""
    from transformers import AutoModel, AutoTokenizer

    from fractal_core.embedding.encoder import _load_model_quietly

    model_dir = resolve_model_path(config.encoder)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return _load_model_quietly(AutoModel, model_dir), tokenizer


def finetune(
    train: Sequence[ResponseRecord] | TokenBags,
    valid: Sequence[ResponseRecord] | TokenBags | None,
    *,
    aggregation: str,
    n_classes: int,
    config: FinetuneConfig | None = None,
    seed: int = 0,
    encoder: tuple[nn.Module, Any] | None = None,
    progress: ProgressFn | None = None,
) -> FinetuneResult:
    """Fine-tune the encoder and a linear head with the bag loss on ``train`` (records, or prepared sequences).

    Sentence labels in ``train`` are gold (used with ``gold_weight`` > 0); ``valid`` early-stops (sentence AUC
    on its gold labels when it has enough, else the likelihood of its response labels) and calibrates.
    ``encoder`` = (model, tokenizer) skips loading ``config.encoder`` (tests pass a tiny one).
    """
    config = config or FinetuneConfig()
    started = time.perf_counter()
    device = resolve_device(config.device)
    dtype, needs_scaler = training_precision(device, config.precision)
    torch.manual_seed(seed)  # dropout inside the encoder
    generator = torch.Generator().manual_seed(seed)
    module, tokenizer = encoder if encoder is not None else load_encoder(config)
    train_data = train if isinstance(train, TokenBags) else build_token_bags(train, tokenizer, config)
    valid_data = (
        valid if valid is None or isinstance(valid, TokenBags) else build_token_bags(valid, tokenizer, config)
    )
    model = TokenScorer(module, n_classes, generator=generator).to(device)
    optimiser = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": config.learning_rate},
            {"params": model.head.parameters(), "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
    from fractal_core.fitting.methods import logp_validator

    valid_bags = valid_data.bagset() if valid_data is not None else None
    rule, _ = logp_validator(valid_bags, aggregation=aggregation, config=config.bag)
    n_batches = max(1, math.ceil(train_data.n_bags / config.batch_bags))
    train_loss: list[float] = []
    valid_score: list[float] = []
    best_state = copy.deepcopy(model.state_dict())
    best, best_epoch, stale = float("-inf"), -1, 0
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(train_data.n_bags, generator=generator)
        total = 0.0
        for step, start in enumerate(range(0, train_data.n_bags, config.batch_bags)):
            loss = batch_loss(
                model,
                train_data,
                order[start : start + config.batch_bags],
                aggregation=aggregation,
                config=config,
                device=device,
                autocast=dtype,
            )
            optimiser.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
            else:
                loss.backward()
                optimiser.step()
            total += float(loss.detach())
            if progress is not None:
                progress(
                    "finetune",
                    (epoch + (step + 1) / n_batches) / config.epochs,
                    f"loss {float(loss.detach()):.4f}",
                )
        train_loss.append(total / n_batches)
        if rule is not None and valid_data is not None:
            logp = score_token_bags(
                model, valid_data, device=device, batch=config.score_batch, autocast=dtype
            )
            score = rule(logp)
        else:
            score = -train_loss[-1]
        valid_score.append(score)
        if score > best or best_epoch < 0:
            best, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    calibration = None
    if config.calibrate and n_classes == 2 and aggregation in ("max", "min"):
        from fractal_core.fitting.auto import fit_calibration

        target = valid_data if valid_data is not None and valid_data.n_bags else train_data
        logp = score_token_bags(model, target, device=device, batch=config.score_batch, autocast=dtype)
        calibration = fit_calibration(
            logp, target.bagset(), aggregation=aggregation, n_classes=2, kind="logit"
        ).to_dict()
    return FinetuneResult(
        model=model,
        tokenizer=tokenizer,
        config=config,
        aggregation=aggregation,
        n_classes=n_classes,
        calibration=calibration,
        train_loss=train_loss,
        valid_score=valid_score,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
        device=device,
    )
