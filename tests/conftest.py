"""Fixtures for the whole test tree."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _restore_main_module() -> Iterator[None]:
    """Streamlit's AppTest installs the page script as ``sys.modules["__main__"]`` and leaves it there; a process
    started later with the ``spawn`` method would then re-run that script (``app/main.py``) before its target.
    Each test gets back the ``__main__`` it started with."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with the bundled MiniLM's tokenizer, saved as a local encoder directory:
    a second encoder that loads in a second (the bundled one is the first)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from fractal_core.embedding.encoder import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(None), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
