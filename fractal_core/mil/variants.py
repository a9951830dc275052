"""How a max (min) bag aggregates its sentence scores, and the one default every function that takes it shares.

``hard`` takes the max (min) sentence score (the paper's rule), ``prob`` the noisy-OR (product) under
independent sentences, ``lse`` a tempered log-sum-exp of the logits. ``TrainConfig.bag_variant`` defaults to
:data:`DEFAULT_BAG_VARIANT`, and so does every aggregation, loss and selection function that takes a variant,
so a caller who leaves it out gets the rule the model was trained with by default. Torch-free.
"""

from __future__ import annotations

from typing import Literal, get_args

BagVariant = Literal["hard", "prob", "lse"]
BAG_VARIANTS: tuple[str, ...] = get_args(BagVariant)
DEFAULT_BAG_VARIANT: BagVariant = "hard"


def check_variant(variant: str) -> None:
    """ValueError naming the choices when ``variant`` is not a bag variant."""
    if variant not in BAG_VARIANTS:
        raise ValueError(f"unknown bag variant {variant!r}; choose one of {', '.join(BAG_VARIANTS)}")


__all__ = ["BAG_VARIANTS", "DEFAULT_BAG_VARIANT", "BagVariant", "check_variant"]
