"""DoRAN adapter layer: W' = m ⊙ (W0 + s·BA) / (‖W0 + s·BA‖_c + τ), with generated A and B."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hora.generator import BlockGenerator
from hora.geometry import HeadLayout
from hora.tuners.hora.layer import GeneratedFactorsLayer, cast_input


def tau_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """τ = softplus(ρ): positive whatever the optimiser does to ρ."""
    return F.softplus(raw)


def raw_from_tau(tau: float) -> float:
    """Inverse of softplus, so τ starts exactly at ``tau``."""
    return tau + math.log(-math.expm1(-tau))


class DoranLayer(GeneratedFactorsLayer):
    """DoRAN on an ``nn.Linear`` or GPT-2 ``Conv1D``: per-row magnitude m, learnable τ, generated A and B."""

    prefix = "doran_"
    adapter_layer_names = ("doran_A_seed", "doran_B_seed", "doran_magnitude", "doran_tau_raw")
    other_param_names = ("r", "lora_alpha", "scaling", "doran_dropout", "layouts", "detach_norm")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.doran_A_seed = nn.ParameterDict({})
        self.doran_B_seed = nn.ParameterDict({})
        self.doran_magnitude = nn.ParameterDict({})  # (out,)
        self.doran_tau_raw = nn.ParameterDict({})  # (1,) or (out,): τ = softplus(raw)
        self.doran_dropout = nn.ModuleDict({})
        self.detach_norm: dict[str, bool] = {}
        self._merge_scales: dict[str, torch.Tensor] = {}
        GeneratedFactorsLayer.__init__(self, base_layer, **kwargs)

    def update_layer(
        self, adapter_name: str, config: Any, generator: BlockGenerator | None, projection: str, layout: HeadLayout
    ) -> None:
        self._init_factors(adapter_name, config, generator, projection, layout)
        self.detach_norm[adapter_name] = config.detach_norm
        shape = (1,) if config.tau_granularity == "matrix" else (self.out_features,)
        device = self.get_base_layer().weight.device
        self.doran_tau_raw[adapter_name] = nn.Parameter(
            torch.full(shape, raw_from_tau(config.tau_init), device=device)
        )
        with torch.no_grad():
            # m0 = ‖W0‖_c + τ0 makes W' = W0 exactly at step 0 (m0 = ‖W0‖_c would shrink every row)
            w0 = self._unmerged_base_weight()  # W0 even if other adapters are merged
            magnitude = w0.norm(dim=1) + config.tau_init
        self.doran_magnitude[adapter_name] = nn.Parameter(magnitude)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _base_weight(self) -> torch.Tensor:
        """W0 in (out, in) orientation."""
        return self._to_base_orientation(self.get_base_layer().weight)

    def tau(self, adapter: str) -> torch.Tensor:
        """τ of one adapter, (1,) or (out,)."""
        return tau_from_raw(self.doran_tau_raw[adapter])

    def _adapted_weight(self, adapter: str, w0: torch.Tensor, factors: tuple | None = None) -> torch.Tensor:
        """V = W0 + s·BA, (out, in), at least in the magnitude's precision. ``w0``: the unmerged base weight."""
        A, B = self.factors(adapter) if factors is None else factors
        magnitude = self.doran_magnitude[adapter]
        w0 = w0 if w0.dtype == magnitude.dtype else w0.to(magnitude.dtype)
        return torch.add(w0, B @ A, alpha=self.scaling[adapter])

    def _row_scale(self, adapter: str, w0: torch.Tensor, factors: tuple | None = None) -> torch.Tensor:
        """m / (‖W0 + s·BA‖_c + τ), (out,). ``w0`` is the unmerged base weight, (out, in); ``factors`` the (A, B)
        to use (default: the layer's own, ``factors``)."""
        norm = self._adapted_weight(adapter, w0, factors).norm(dim=1)
        if self.detach_norm[adapter]:
            norm = norm.detach()
        return self.doran_magnitude[adapter] / (norm + self.tau(adapter))

    def effective_magnitude(self, adapter: str) -> torch.Tensor:
        """m' = m·‖V‖/(‖V‖ + τ): the magnitude of the plain DoRA adapter that equals this DoRAN adapter."""
        w0 = self._unmerged_base_weight()
        return self._row_scale(adapter, w0) * self._adapted_weight(adapter, w0).norm(dim=1)

    def delta_weight_out_in(self, adapter: str) -> torch.Tensor:
        w0 = self._unmerged_base_weight()
        v = w0 + self._generated_weight(adapter).float()
        return self._row_scale(adapter, w0).float().unsqueeze(1) * v - w0

    # Merging. With several adapters active, the forward pass chains them: each `_apply_adapter` gets the output
    # so far and computes  y <- S_i ⊙ (y - b + s·B_i A_i x) + b,  where the row scale S_i = m_i / (‖W0 + s·B_i A_i‖ + τ_i)
    # always comes from the *unmerged* base weight W0. So the function of adapters 1..k applied in that order is
    # W_k = S_k ⊙ (W_{k-1} + s·B_k A_k), W_0 = W0, and a merge in the same order must build exactly that: each merge
    # multiplies the weight it finds (holding the earlier merges) but takes S_i from W0, which it recovers by undoing
    # the earlier merges, last first, as PEFT does for DoRA (`LoraLayer._unmerged_base_weight`). Unmerging divides
    # by the recorded S_i and subtracts s·B_i A_i again, last merge first, back to W0.

    def _unmerged_base_weight(self) -> torch.Tensor:
        """W0 in (out, in) orientation, float32: the base weight with every merged adapter taken out again."""
        weight = self._base_weight().float()
        for adapter in reversed(self.merged_adapters):
            if adapter in self._merge_scales:
                weight = weight / self._merge_scales[adapter].unsqueeze(1) - self._generated_weight(adapter).float()
        return weight

    def _merged_weight(self, adapter: str, weight: torch.Tensor) -> torch.Tensor:
        scale = self._row_scale(adapter, self._unmerged_base_weight()).float()
        self._merge_scales[adapter] = scale  # unmerging needs the scale of this merge
        merged = scale.unsqueeze(1) * (
            self._to_base_orientation(weight).float() + self._generated_weight(adapter).float()
        )
        return self._to_base_orientation(merged)

    def _unmerged_weight(self, adapter: str, weight: torch.Tensor) -> torch.Tensor:
        scale = self._merge_scales.pop(adapter)
        w0 = self._to_base_orientation(weight).float() / scale.unsqueeze(1) - self._generated_weight(adapter).float()
        return self._to_base_orientation(w0)

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        return False  # multiplicative: it converts to DoRA (hora.export_dora), not to LoRA


class DoranLinear(nn.Module, DoranLayer):
    """DoRAN on an ``nn.Linear`` or a GPT-2 ``Conv1D``."""

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: Any,
        generator: BlockGenerator | None,
        projection: str,
        layout: HeadLayout,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        DoranLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config, generator, projection, layout)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._forward(x, *args, **kwargs)

    def _apply_adapter(self, adapter: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        bias = self.get_base_layer().bias
        factors = A, B = self._forward_factors(adapter)  # (r, in), (out, r)
        scale = self._row_scale(adapter, self._base_weight(), factors)  # (out,)
        h = self.doran_dropout[adapter](cast_input(x, A))
        low_rank = F.linear(F.linear(h, A), B)  # (..., out)
        # W'x + b = scale ⊙ (W0 x + s·BAx) + b, with W0 x = result − b
        plain = result if bias is None else result - bias
        adapted = scale * torch.add(plain, low_rank, alpha=self.scaling[adapter])
        return adapted if bias is None else adapted + bias

    def __repr__(self) -> str:
        return "doran." + super().__repr__()
