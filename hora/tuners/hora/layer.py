"""HoRA adapter layer: a linear (or GPT-2 Conv1D) module plus generated low-rank factors."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn
from transformers.pytorch_utils import Conv1D

from hora.generator import BlockGenerator
from hora.geometry import HeadLayout


def in_out_features(base_layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a supported base layer."""
    if isinstance(base_layer, nn.Linear):
        return base_layer.in_features, base_layer.out_features
    if isinstance(base_layer, Conv1D):
        return base_layer.weight.shape  # stored (in, out)
    raise TypeError(f"hora adapts torch.nn.Linear and transformers' Conv1D modules, not {type(base_layer).__name__}.")


def cast_input(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` in the adapter's dtype, as PEFT's LoRA casts it; under autocast it is left as it is, since autocast
    casts both operands of the next matmul anyway (casting first would be a round trip, e.g. bf16 -> fp32 -> bf16)."""
    if x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
        return x
    return x.to(weight.dtype)


class GeneratedFactorsLayer(BaseTunerLayer):
    """Shared mechanics of HoRA and DoRAN layers: seeds, the generator reference and the factor cache.

    Subclasses set ``prefix``; the seed containers are ``{prefix}A_seed`` (r, in) and ``{prefix}B_seed``
    (out, r). The block generator lives on the tuner (so it is saved once, not once per layer); the layer
    only keeps an unregistered reference to it.
    """

    prefix = "hora_"

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.layouts: dict[str, HeadLayout] = {}
        self._generators: dict[str, tuple[BlockGenerator | None, str]] = {}  # adapter -> (generator, projection)
        self._factor_cache: dict[str, tuple[tuple, tuple[torch.Tensor, torch.Tensor]]] = {}
        self._factor_pass: Any = None  # the tuner's FactorPass (hora.tuners.hora.factor_pass), set on injection
        self._pass_factors: dict[str, dict[str, torch.Tensor]] = {}  # adapter -> {"A", "B"} from the open pass
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self.kwargs = kwargs
        self.in_features, self.out_features = in_out_features(self.get_base_layer())
        self.fan_in_fan_out = isinstance(self.get_base_layer(), Conv1D)

    @property
    def A_seed(self) -> nn.ParameterDict:
        return getattr(self, self.prefix + "A_seed")

    @property
    def B_seed(self) -> nn.ParameterDict:
        return getattr(self, self.prefix + "B_seed")

    @property
    def dropout(self) -> nn.ModuleDict:
        return getattr(self, self.prefix + "dropout")

    def _init_factors(
        self, adapter_name: str, config: Any, generator: BlockGenerator | None, projection: str, layout: HeadLayout
    ) -> None:
        """Create one adapter's seeds. With ``generator=None`` the seeds are the factors (plain LoRA-style)."""
        r = config.r
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = config.lora_alpha
        self.scaling[adapter_name] = config.lora_alpha / r
        self.layouts[adapter_name] = layout
        self._generators[adapter_name] = (generator, projection)
        self.dropout[adapter_name] = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        device = self.get_base_layer().weight.device
        a_seed = torch.empty(r, self.in_features, device=device)
        if generator is not None and generator.has_a(projection):
            nn.init.normal_(a_seed, std=config.seed_std)
        else:  # A is used as it is: LoRA's initialisation
            nn.init.kaiming_uniform_(a_seed, a=math.sqrt(5))
        b_seed = torch.empty(self.out_features, r, device=device)
        if generator is not None:
            nn.init.normal_(b_seed, std=config.seed_std)
        elif config.init_weights in (True, "zero_b"):
            nn.init.zeros_(b_seed)  # LoRA's B = 0: identity at step 0
        else:
            nn.init.kaiming_uniform_(b_seed, a=math.sqrt(5))
        self.A_seed[adapter_name] = nn.Parameter(a_seed)
        self.B_seed[adapter_name] = nn.Parameter(b_seed)

    def factors(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated (A, B) of one adapter: A (r, in), B (out, r), B's rows stacked head after head.

        Computed once per call for the whole module. While the module is not training and nothing needs a
        gradient, the result is cached and reused until a parameter changes (checked by tensor versions),
        so unmerged inference costs what LoRA costs.
        """
        generator, projection = self._generators[adapter]
        a_seed, b_seed = self.A_seed[adapter], self.B_seed[adapter]
        if generator is None:  # static factors
            return a_seed, b_seed
        params = (a_seed, b_seed, *generator.parameters())
        cacheable = not self.training and not self._needs_grad(adapter)
        if cacheable:
            # factors made under inference_mode are inference tensors, unusable by autograd afterwards: a cache
            # entry only serves the mode it was made in (as PEFT's LoRA, which caches nothing, works in both)
            inference = torch.is_inference_mode_enabled()
            stamp = (inference, *((p.data_ptr(), p._version, p.dtype) for p in params))
            hit = self._factor_cache.get(adapter)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        A, B = generator.factors(projection, a_seed, b_seed, self.layouts[adapter].head_dim)
        if cacheable:
            self._factor_cache[adapter] = (stamp, (A, B))
        else:
            self._factor_cache.pop(adapter, None)
        return A, B

    def _forward_factors(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) for this layer's forward: from the tuner's generation pass while the adapted model's forward runs
        and the factors need a gradient (``hora.tuners.hora.factor_pass``), else the layer's own ``factors``."""
        if self._generators[adapter][0] is None or not (self.training or self._needs_grad(adapter)):
            return self.factors(adapter)  # static, or the inference cache
        slot = self._pass_factors.get(adapter)
        if slot is None and self._factor_pass is not None and self._factor_pass.generate(adapter):
            slot = self._pass_factors.get(adapter)
        if slot is None:  # called outside the model's forward, or under gradient checkpointing
            return self.factors(adapter)
        return slot.get("A", self.A_seed[adapter]), slot["B"]

    def _needs_grad(self, adapter: str) -> bool:
        """Whether the adapter's factors need a gradient now (its seeds or its block generator)."""
        if not torch.is_grad_enabled():
            return False
        generator = self._generators[adapter][0]
        generated = generator.parameters() if generator is not None else ()
        return any(p.requires_grad for p in (self.A_seed[adapter], self.B_seed[adapter], *generated))

    def _generated_weight(self, adapter: str) -> torch.Tensor:
        """ΔW in (out, in) orientation."""
        A, B = self.factors(adapter)
        return (B @ A) * self.scaling[adapter]

    def delta_weight_out_in(self, adapter: str) -> torch.Tensor:
        """W' − W0 of one adapter in (out, in) orientation."""
        return self._generated_weight(adapter)

    def _to_base_orientation(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.T if self.fan_in_fan_out else weight

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        for store in (self.layouts, self._generators, self._factor_cache):
            store.pop(adapter_name, None)

    def _merge_with(self, adapter_names: list[str] | None, safe_merge: bool) -> None:
        adapter_names = check_adapters_to_merge(self, adapter_names)
        base_layer = self.get_base_layer()
        for adapter in adapter_names:
            if adapter not in self.A_seed:
                continue
            with torch.no_grad():
                new_weight = self._merged_weight(adapter, base_layer.weight)
            if safe_merge and not torch.isfinite(new_weight).all():
                raise ValueError(f"NaNs detected in the merged weights. The adapter {adapter} seems to be broken")
            base_layer.weight.data = new_weight.to(base_layer.weight.dtype)
            self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        """Undo every merge, last first."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        base_layer = self.get_base_layer()
        while self.merged_adapters:
            adapter = self.merged_adapters.pop()
            with torch.no_grad():
                base_layer.weight.data = self._unmerged_weight(adapter, base_layer.weight).to(base_layer.weight.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Merge the active (or the named) adapters into the base weight."""
        self._merge_with(adapter_names, safe_merge)

    def _forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Base output, then each active adapter's contribution (``_apply_adapter``), or the merged weight; with
        ``adapter_names`` (PEFT's mixed batches) each row gets the adapter it names."""
        self._check_forward_args(x, *args, **kwargs)
        adapter_names = kwargs.pop("adapter_names", None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        result_dtype = result.dtype
        for adapter in self.active_adapters:
            if adapter in self.A_seed:
                result = self._apply_adapter(adapter, x, result)
        return result.to(result_dtype)

    def _check_forward_args(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """PEFT's checks of ``adapter_names`` (as LoRA's): one name per row, and no merged adapter."""
        adapter_names = kwargs.get("adapter_names")
        if adapter_names is None:
            return
        if len(x) != len(adapter_names):
            raise ValueError(
                "Length of `adapter_names` should be the same as the number of inputs, but got "
                f"{len(adapter_names)} and {len(x)} respectively."
            )
        if self.merged:
            raise ValueError(
                "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` first."
            )

    def _mixed_batch_forward(
        self, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any
    ) -> torch.Tensor:
        """Row i gets adapter ``adapter_names[i]`` (``"__base__"``, or an adapter this layer lacks: none)."""
        result = self.base_layer(x, *args, **kwargs)
        for adapter in dict.fromkeys(adapter_names):  # each adapter once, in order of appearance
            if adapter == "__base__" or adapter not in self.A_seed:
                continue
            rows = [i for i, name in enumerate(adapter_names) if name == adapter]
            result[rows] = self._apply_adapter(adapter, x[rows], result[rows]).to(result.dtype)
        return result

    def _apply_adapter(self, adapter: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    # subclasses define how a merge changes the weight (in the base layer's orientation) and how to undo it
    def _merged_weight(self, adapter: str, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def _unmerged_weight(self, adapter: str, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract


class HoraLayer(GeneratedFactorsLayer):
    """HoRA: W' = W0 + (α/r)·B·A with A and per-head B generated by the block's joint hypernetwork."""

    prefix = "hora_"
    adapter_layer_names = ("hora_A_seed", "hora_B_seed")
    other_param_names = ("r", "lora_alpha", "scaling", "hora_dropout", "layouts")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.hora_A_seed = nn.ParameterDict({})
        self.hora_B_seed = nn.ParameterDict({})
        self.hora_dropout = nn.ModuleDict({})
        GeneratedFactorsLayer.__init__(self, base_layer, **kwargs)

    def update_layer(
        self, adapter_name: str, config: Any, generator: BlockGenerator, projection: str, layout: HeadLayout
    ) -> None:
        self._init_factors(adapter_name, config, generator, projection, layout)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """ΔW of one adapter in the base layer's own orientation ((in, out) for Conv1D)."""
        return self._to_base_orientation(self._generated_weight(adapter))

    def _merged_weight(self, adapter: str, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.get_delta_weight(adapter).to(weight.dtype)

    def _unmerged_weight(self, adapter: str, weight: torch.Tensor) -> torch.Tensor:
        return weight - self.get_delta_weight(adapter).to(weight.dtype)

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        return True


class HoraLinear(nn.Module, HoraLayer):
    """HoRA on an ``nn.Linear`` or a GPT-2 ``Conv1D``."""

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: Any,
        generator: BlockGenerator,
        projection: str,
        layout: HeadLayout,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        HoraLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config, generator, projection, layout)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._forward(x, *args, **kwargs)

    def _apply_adapter(self, adapter: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        A, B = self._forward_factors(adapter)  # (r, in), (out, r)
        h = self.hora_dropout[adapter](cast_input(x, A))
        return torch.add(result, F.linear(F.linear(h, A), B), alpha=self.scaling[adapter])

    def __repr__(self) -> str:
        return "hora." + super().__repr__()
