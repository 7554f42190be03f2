"""Few-shot splits of a labelled dataset and fixed-length windows over a token stream."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hora.data.common import DataError


@dataclass
class FewShotSplit:
    """Indices of the training shots and of the held-out examples, sorted, with what produced them."""

    train: list[int]
    eval: list[int]
    shots: int
    seed: int

    def to_dict(self) -> dict:
        """A JSON-serialisable record of the split, so a run can store and reproduce its exact indices."""
        return {  # int(): numpy integers are not JSON
            "train": [int(i) for i in self.train],
            "eval": [int(i) for i in self.eval],
            "shots": int(self.shots),
            "seed": int(self.seed),
        }

    @classmethod
    def from_dict(cls, record: dict) -> FewShotSplit:
        """The split recorded by ``to_dict``."""
        return cls(list(record["train"]), list(record["eval"]), int(record["shots"]), int(record["seed"]))


def few_shot_split(
    labels: Sequence[int], shots: int, seed: int, eval_per_class: int | None = None, max_eval: int | None = None
) -> FewShotSplit:
    """A stratified split: per class, ``shots`` examples to train on and the rest (at most ``eval_per_class``) to
    evaluate on; ``max_eval`` caps the held-out examples in all, taken class by class in turn (the first held-out
    example of every class, then the second ...), so that 10,000 classes cannot exceed it.

    Each class is shuffled by its own generator, ``numpy.random.default_rng([seed, label])``, so the split is the
    same on every run and platform, one class's split does not depend on the others, and the eval examples for
    more shots are a subset of those for fewer.
    """
    if shots < 1:
        raise DataError(f"shots must be at least 1, not {shots}.")
    if seed < 0:
        raise DataError(f"seed must be a non-negative integer, not {seed}.")
    if eval_per_class is not None and eval_per_class < 0:
        raise DataError(f"eval_per_class must be at least 0, not {eval_per_class}.")
    if len(labels) == 0:
        raise DataError("There are no examples to split.")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        label = operator.index(label)
        if label < 0:
            raise DataError(f"Label {label} at index {i} is negative; labels index into the classes.")
        by_class.setdefault(label, []).append(i)
    small = {c: len(ix) for c, ix in sorted(by_class.items()) if len(ix) < shots + 1}
    if small:
        detail = ", ".join(f"class {c} has {n}" for c, n in small.items())
        raise DataError(
            f"{shots}-shot training needs at least {shots + 1} examples per class (shots plus one to evaluate on); "
            f"{detail}. Add examples or lower the shots."
        )
    if max_eval is not None and max_eval < 1:
        raise DataError(f"max_eval must be at least 1, not {max_eval}.")
    train, per_class = [], []
    for label, indices in sorted(by_class.items()):
        order = np.random.default_rng([seed, label]).permutation(len(indices))
        shuffled = [indices[j] for j in order]
        train += shuffled[:shots]
        per_class.append(shuffled[shots:][:eval_per_class])
    held_out = [i for rank in itertools.zip_longest(*per_class) for i in rank if i is not None]
    return FewShotSplit(sorted(train), sorted(held_out[:max_eval]), shots, seed)


def lm_chunks(token_ids: Sequence[int], context: int, stride: int | None = None) -> torch.Tensor:
    """``(N, context)`` int64 windows over one token stream, starting every ``stride`` tokens (default: ``context``,
    i.e. no overlap). A tail shorter than a window is dropped."""
    stride = context if stride is None else stride
    if context < 1 or stride < 1:
        raise DataError(f"context and stride must be at least 1 (got context={context}, stride={stride}).")
    ids = torch.as_tensor(token_ids, dtype=torch.int64).flatten()
    if ids.numel() < context:
        raise DataError(
            f"The text is only {ids.numel()} tokens long; a context of {context} needs at least that many. "
            "Add text or lower the context."
        )
    return ids.unfold(0, context, stride).clone()
