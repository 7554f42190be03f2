"""The generation pass: all generated factors of an adapter in a few batched operations per forward.

Generated layer by layer, every adapted projection costs its own chain of small operators (a view, a linear, a
tanh, a linear, a scale, a transpose, ...) and their backward; on a GPU the host then spends more time launching
them than the device spends computing. A pass instead takes, once per forward of the adapted model, the seeds and
generator weights of every projection whose factor has the same shape, across all blocks, generates them with one
batched matmul, one tanh and one batched matmul (``hora.generator.generate_stacked``), and hands each layer its
slice. The parameters and the saved state dict stay as they are: only the forward stacks them.

The tuner opens a pass when the wrapped model's forward starts and closes it when it ends (forward hooks on that
model). Inside an open pass, the first layer whose factors need a gradient (training) has the whole adapter
generated; the other layers find theirs ready. Layers generate their own factors, as they always did, outside a pass
(a layer called on its own), under gradient checkpointing (its recomputation must repeat the forward's operators
exactly) and at inference, where each layer caches its factors (``GeneratedFactorsLayer.factors``). Every forward
takes the same path through the pass, so ``torch.compile`` traces it once, with no graph break.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hora.generator import generate_stacked
from hora.tuners.hora.layer import GeneratedFactorsLayer


@dataclass(frozen=True)
class _Job:
    """One generated factor of one layer: its A (rows of width in) or its B (columns of one head, width hd)."""

    layer: GeneratedFactorsLayer
    factor: str  # "A" or "B"
    first: nn.Linear
    second: nn.Linear
    scale: float

    def seed(self, adapter: str) -> torch.Tensor:
        # looked up on every call: PEFT may put new Parameter objects in the layer's ParameterDict (device moves)
        return (self.layer.A_seed if self.factor == "A" else self.layer.B_seed)[adapter]

    def shape_key(self, adapter: str) -> tuple:
        """Jobs with equal keys are generated in one batched call."""
        layer, seed = self.layer, self.seed(adapter)
        width = layer.in_features if self.factor == "A" else layer.layouts[adapter].head_dim
        return (self.factor, tuple(seed.shape), width, self.scale, seed.dtype, seed.device)


class FactorPass:
    """Per-forward batched generation of the factors of every adapted layer under ``root`` (see the module)."""

    def __init__(self, root: nn.Module | None = None) -> None:
        self.root = root
        self._jobs: dict[str, list[_Job]] = {}  # adapter -> its generated factors
        self._checkpointing: list[nn.Module] = []  # modules with a `gradient_checkpointing` switch
        self._reset()
        self.refresh()

    def _reset(self) -> None:
        """The state of one forward: none open."""
        self.depth = 0  # nesting of the root's forward calls
        self.active = False
        self._done: set[str] = set()  # adapters generated in the open pass
        self._filled: list[GeneratedFactorsLayer] = []

    def refresh(self) -> None:
        """Find the adapted layers under the root again (after an adapter was added, loaded or deleted).

        Done here, not on a forward, so that every forward takes the same path: ``torch.compile`` then compiles the
        training forward once.
        """
        modules = list(self.root.modules()) if self.root is not None else []
        layers = [m for m in modules if isinstance(m, GeneratedFactorsLayer)]
        adapters = dict.fromkeys(adapter for layer in layers for adapter in layer._generators)
        self._jobs = {adapter: list(_jobs_of(layers, adapter)) for adapter in adapters}
        self._checkpointing = [m for m in modules if hasattr(m, "gradient_checkpointing")]

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def attach(self, root: nn.Module) -> None:
        """Open a pass on every forward of ``root`` (idempotent)."""
        if self.root is not None and self.root is not root:
            self.detach()
        self.root = root
        if not any(getattr(hook, "__self__", None) is self for hook in root._forward_pre_hooks.values()):
            root.register_forward_pre_hook(self._open)
            root.register_forward_hook(self._close, always_call=True)
        self.refresh()

    def detach(self) -> None:
        """Remove the hooks from the root (``unload`` / ``merge_and_unload`` return it without them)."""
        root = self.root
        if root is None:
            return
        for hooks in (root._forward_pre_hooks, root._forward_hooks):
            for key in [k for k, hook in hooks.items() if getattr(hook, "__self__", None) is self]:
                del hooks[key]
                getattr(root, "_forward_hooks_always_called", {}).pop(key, None)
        self.root = None
        self.refresh()

    def _open(self, module: nn.Module, args: Any) -> None:
        self.depth += 1
        if self.depth == 1:
            self.active = not self._checkpointing_on()

    def _close(self, module: nn.Module, args: Any, output: Any) -> None:
        self.depth = max(0, self.depth - 1)
        if self.depth == 0:
            self.active = False
            for layer in self._filled:
                layer._pass_factors.clear()  # the next forward generates afresh, from the updated weights
            self._filled.clear()
            self._done.clear()

    def _checkpointing_on(self) -> bool:
        return any(m.gradient_checkpointing for m in self._checkpointing)

    # --- generation ----------------------------------------------------------------------------------------------

    def generate(self, adapter: str) -> bool:
        """Generate every factor of ``adapter`` in batched calls and give each layer its own; False outside a pass
        (or when it was already done in this pass), and then the layer generates its own."""
        if not self.active or adapter in self._done:
            return False
        self._done.add(adapter)
        groups: dict[tuple, list[_Job]] = {}
        for job in self._jobs.get(adapter, ()):
            groups.setdefault(job.shape_key(adapter), []).append(job)
        for jobs in groups.values():
            for job, factor in zip(jobs, _generate_group(jobs, adapter), strict=True):
                job.layer._pass_factors.setdefault(adapter, {})[job.factor] = factor
                self._filled.append(job.layer)
        return True

    # --- copies ----------------------------------------------------------------------------------------------------

    def __deepcopy__(self, memo: dict) -> FactorPass:
        # A copy of the whole adapted model (its root in `memo`: copied first, or being copied) gets a pass on the
        # copied root, over the copied layers (`memo` makes them the very copies the model gets); a layer copied on
        # its own gets a pass of its own, attached to nothing (it never opens).
        copied = FactorPass.__new__(FactorPass)
        memo[id(self)] = copied
        copied.root = memo.get(id(self.root))
        attached = copied.root is not None
        copied._jobs = copy.deepcopy(self._jobs, memo) if attached else {}
        copied._checkpointing = copy.deepcopy(self._checkpointing, memo) if attached else []
        copied._reset()
        return copied

    def __getstate__(self) -> dict:
        return {"root": self.root, "jobs": self._jobs, "checkpointing": self._checkpointing}

    def __setstate__(self, state: dict) -> None:
        self.root, self._jobs, self._checkpointing = state["root"], state["jobs"], state["checkpointing"]
        self._reset()


def _jobs_of(layers: list[GeneratedFactorsLayer], adapter: str) -> Iterator[_Job]:
    """The generated factors of ``adapter``: every layer's B, and its A where A is generated."""
    for layer in layers:
        generator, projection = layer._generators.get(adapter, (None, None))
        if generator is None:
            continue
        scale = generator.output_scale
        first, second = generator.b_layers(projection, layer.layouts[adapter].head_dim)
        yield _Job(layer, "B", first, second, scale)
        if generator.has_a(projection):
            first, second = generator.a_layers(projection, layer.in_features)
            yield _Job(layer, "A", first, second, scale)


def _generate_group(jobs: list[_Job], adapter: str) -> tuple[torch.Tensor, ...]:
    """The factors of J same-shaped jobs, generated at once: A (r, in) or B (out, r) each."""
    count, layer = len(jobs), jobs[0].layer
    seeds = torch.cat([job.seed(adapter) for job in jobs])  # (J·r, in) or (J·out, r)
    first, second = [job.first for job in jobs], [job.second for job in jobs]
    if jobs[0].factor == "A":
        rows, width = seeds.shape
        generated = generate_stacked(seeds.view(count, rows // count, width), first, second, jobs[0].scale)
        return generated.unbind()  # (r, in) each
    out, r = seeds.shape[0] // count, seeds.shape[1]
    head_dim = layer.layouts[adapter].head_dim
    # row (k, h) of a stack is head h's k-th column of B̄: G_B sees one column of one head at a time
    columns = seeds.view(count, out, r).transpose(1, 2).reshape(count, r * out // head_dim, head_dim)
    generated = generate_stacked(columns, first, second, jobs[0].scale)  # (J, r·H, hd)
    return generated.view(count, r, out).transpose(1, 2).unbind()  # (out, r) each
