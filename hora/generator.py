"""The joint hypernetwork that generates low-rank factors for all heads of a block.

One ``BlockGenerator`` serves every adapted projection of a transformer block (or of the whole model,
for DoRAN's ``share_across_layers``). For projection P with seeds Ā_P (r, in) and B̄_P (out, r):

    A_P     = G_A^P(Ā_P)      applied to each of the r rows       (r, in)
    B_{P,h} = G_B^P(B̄_{P,h})  applied to each of the r columns    (head_dim, r) for every head h
    G^P(x)  = c · (W2^P · tanh(W1 · x + b1) + b2^P)

c is the output scale (``unit_step_scale``): with it, one optimiser step moves a generated factor about as far as
it moves a plain LoRA factor at the same learning rate (see ``unit_step_scale``).

W1 (the "input" layer) is shared by the block's projections of equal width; W2 (the "output" layer) is
specific to each projection. G_B sees one head's column at a time and is the same function for every
head, so all heads' B columns come from one shared, learned map: that is the cross-head coupling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _key(name: str) -> str:
    # ModuleDict keys may not contain dots
    return name.replace(".", "__")


TANH_SQUARE_MEAN = 0.3943  # E[tanh(z)²] for z ~ N(0, 1): the mean square of a hidden feature at initialisation


def unit_step_scale(hidden: int) -> float:
    """The output scale c = 1 / sqrt(1 + p·E[tanh²]) that gives a generated factor LoRA's step size under Adam.

    Adam moves every entry of the output layer (W2, b2) by about the learning rate, whatever its gradient's size. A
    generated entry sums p such moves, each weighted by a hidden feature tanh(·) of root mean square about 0.63 at
    initialisation, plus the bias' move: its step has root mean square about lr·sqrt(1 + p·E[tanh²]), where a LoRA
    factor's entry moves by lr. Dividing the output by that factor puts both on the same step (measured: a 2-layer
    GQA Llama, q and v, r = 8, p = 16, 5 AdamW steps at 1e-3: ΔW 3.0× LoRA's unscaled, about 1.1× scaled).
    """
    return 1.0 / math.sqrt(1.0 + hidden * TANH_SQUARE_MEAN)


class BlockGenerator(nn.Module):
    """Generators G_A and G_B of one block: shared first layers, per-projection second layers.

    ``output_scale`` is c in G(x) = c·(W2·tanh(W1·x + b1) + b2): a constant, not a parameter (the adapter's config
    records it).
    """

    def __init__(self, hidden: int, share_first_layer: bool, output_scale: float = 1.0) -> None:
        super().__init__()
        self.hidden = hidden
        self.share_first_layer = share_first_layer
        self.output_scale = output_scale
        self.a_in = nn.ModuleDict()  # first layer of G_A, keyed by width (shared) or projection
        self.b_in = nn.ModuleDict()  # first layer of G_B
        self.a_out = nn.ModuleDict()  # second layer of G_A, one per projection
        self.b_out = nn.ModuleDict()  # second layer of G_B, one per projection

    def _in_key(self, projection: str, width: int) -> str:
        return f"n{width}" if self.share_first_layer else _key(projection)

    def add_projection(
        self,
        projection: str,
        in_features: int,
        head_dim: int,
        generate_a: bool,
        zero_b: bool,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Create the layers projection ``projection`` needs (idempotent, so loading finds the same keys).

        New layers are initialised in float32 and then cast to ``dtype`` (the base layer's), as PEFT does with
        LoRA's weights; ``PeftModel`` then upcasts half-precision adapters to float32 unless asked not to.
        """
        p, key = self.hidden, _key(projection)
        new: list[nn.Module] = []
        if generate_a:
            a_key = self._in_key(projection, in_features)
            if a_key not in self.a_in:
                self.a_in[a_key] = _first_layer(in_features, p, device)
                new.append(self.a_in[a_key])
            if key not in self.a_out:
                self.a_out[key] = _second_layer(p, in_features, zero=False, device=device, scale=self.output_scale)
                new.append(self.a_out[key])
        b_key = self._in_key(projection, head_dim)
        if b_key not in self.b_in:
            self.b_in[b_key] = _first_layer(head_dim, p, device)
            new.append(self.b_in[b_key])
        if key not in self.b_out:
            self.b_out[key] = _second_layer(p, head_dim, zero=zero_b, device=device, scale=self.output_scale)
            new.append(self.b_out[key])
        if dtype is not None:
            for layer in new:
                layer.to(dtype=dtype)

    def a_layers(self, projection: str, in_features: int) -> tuple[nn.Linear, nn.Linear]:
        """(first, second) layer of the projection's G_A."""
        return self.a_in[self._in_key(projection, in_features)], self.a_out[_key(projection)]

    def b_layers(self, projection: str, head_dim: int) -> tuple[nn.Linear, nn.Linear]:
        """(first, second) layer of the projection's G_B."""
        return self.b_in[self._in_key(projection, head_dim)], self.b_out[_key(projection)]

    def generate_a(self, projection: str, seed: torch.Tensor) -> torch.Tensor:
        """A = G_A(Ā), row-wise. seed: (r, in) -> (r, in)."""
        first, second = self.a_layers(projection, seed.shape[-1])
        return second(torch.tanh(first(seed))) * self.output_scale

    def generate_b(self, projection: str, seed: torch.Tensor, head_dim: int) -> torch.Tensor:
        """B_h = G_B(B̄_h) column-wise for every head. seed: (out, r) -> (out, r)."""
        out, r = seed.shape
        first, second = self.b_layers(projection, head_dim)
        columns = seed.view(out // head_dim, head_dim, r).transpose(1, 2)  # (H, r, hd): one row per column
        generated = second(torch.tanh(first(columns))) * self.output_scale  # (H, r, hd)
        return generated.transpose(1, 2).reshape(out, r)

    def factors(
        self, projection: str, a_seed: torch.Tensor, b_seed: torch.Tensor, head_dim: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of one projection from its seeds: A = G_A(Ā) when A is generated (else Ā itself), B = G_B(B̄)
        head by head. The one place factors are generated: the layers and ``hora.export`` both call it."""
        A = self.generate_a(projection, a_seed) if self.has_a(projection) else a_seed
        return A, self.generate_b(projection, b_seed, head_dim)

    def has_a(self, projection: str) -> bool:
        return _key(projection) in self.a_out

    def head_dim(self, projection: str) -> int:
        """Head size the projection's G_B works on (the output width of its second layer)."""
        return self.b_out[_key(projection)].out_features

    @classmethod
    def from_state_dict(
        cls, state: dict[str, torch.Tensor], hidden: int, share_first_layer: bool, output_scale: float = 1.0
    ) -> BlockGenerator:
        """Rebuild a generator from its saved tensors (keys like ``a_in.n128.weight``), with no model."""
        generator = cls(hidden, share_first_layer, output_scale)
        for key in {k.rsplit(".", 1)[0] for k in state}:  # e.g. "a_in.n128"
            part, name = key.split(".", 1)
            weight = state[f"{key}.weight"]
            layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
            layer.load_state_dict({"weight": weight, "bias": state[f"{key}.bias"]})
            getattr(generator, part)[name] = layer
        return generator


def generate_stacked(
    seeds: torch.Tensor, first: Sequence[nn.Linear], second: Sequence[nn.Linear], scale: float
) -> torch.Tensor:
    """G applied row-wise to J stacks of rows at once, stack j with its own layers ``first[j]`` and ``second[j]``.

    The batched twin of ``generate_a`` / ``generate_b`` (the same function, to float rounding): one batched matmul,
    one tanh and one batched matmul for J factors, where generating them one by one costs J chains of small
    operators. The layers' weights are stacked afresh on every call (the parameters stay where they are); a layer
    may appear several times (a first layer shared by a block's projections). seeds: (J, N, n) -> (J, N, n).
    """
    count, width = len(first), seeds.shape[-1]
    w1 = torch.cat([layer.weight for layer in first]).view(count, -1, width)  # (J, p, n)
    b1 = torch.cat([layer.bias for layer in first]).view(count, 1, -1)  # (J, 1, p)
    w2 = torch.cat([layer.weight for layer in second]).view(count, width, -1)  # (J, n, p)
    b2 = torch.cat([layer.bias for layer in second]).view(count, 1, width)  # (J, 1, n)
    hidden = torch.tanh(torch.baddbmm(b1, seeds, w1.transpose(1, 2)))  # (J, N, p)
    return torch.baddbmm(b2, hidden, w2.transpose(1, 2)) * scale  # (J, N, n)


def _first_layer(n: int, p: int, device: torch.device) -> nn.Linear:
    # W1 ~ N(0, 1/n) with seeds ~ N(0, 1) puts tanh's input at unit scale, neither saturated nor linear.
    layer = nn.Linear(n, p, device=device)
    nn.init.normal_(layer.weight, std=1.0 / math.sqrt(n))
    nn.init.zeros_(layer.bias)
    return layer


def _second_layer(p: int, n: int, zero: bool, device: torch.device, scale: float = 1.0) -> nn.Linear:
    # Scaled so generated rows have LoRA's kaiming scale (~1/sqrt(n) per entry) once the output scale c multiplies
    # them. The bias starts at zero: a random bias is shared by every generated row and would make the factors
    # nearly rank one.
    layer = nn.Linear(p, n, device=device)
    nn.init.zeros_(layer.bias)
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.normal_(layer.weight, std=1.0 / (scale * math.sqrt(p * n)))
    return layer


class GeneratorBank(nn.Module):
    """All block generators of one adapter, keyed ``block0``, ``block1``, … (or ``all`` when shared)."""

    def __init__(self, hidden: int, share_first_layer: bool, output_scale: float = 1.0) -> None:
        super().__init__()
        self.hidden = hidden
        self.share_first_layer = share_first_layer
        self.output_scale = output_scale
        self.blocks = nn.ModuleDict()

    def block(self, block_key: str) -> BlockGenerator:
        if block_key not in self.blocks:
            self.blocks[block_key] = BlockGenerator(self.hidden, self.share_first_layer, self.output_scale)
        return self.blocks[block_key]
