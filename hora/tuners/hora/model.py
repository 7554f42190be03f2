"""HoraModel: the PEFT tuner that injects HoRA layers and owns the block generators."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import UPCAST_DTYPES
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers.pytorch_utils import Conv1D

from hora.generator import GeneratorBank
from hora.geometry import DEFAULT_TARGET_MODULES, projection_key, resolve_layout
from hora.tuners.hora.factor_pass import FactorPass
from hora.tuners.hora.layer import GeneratedFactorsLayer, HoraLayer, HoraLinear, in_out_features


class GeneratedFactorsModel(BaseTuner):
    """Shared tuner logic of HoRA and DoRAN: one ``GeneratorBank`` per adapter, kept on the tuner.

    The banks live in ``self.<generator_attr>`` (a ``ModuleDict`` keyed by adapter name), so PEFT's
    structural state-dict selection saves them once per adapter, under ``base_model.<generator_attr>``.
    """

    prefix = "hora_"
    tuner_layer_cls = GeneratedFactorsLayer
    target_module_mapping = DEFAULT_TARGET_MODULES
    generator_attr = "hora_generator"
    layer_cls: type[GeneratedFactorsLayer] = HoraLinear
    # the generators are adapter state outside the adapted modules, as VeRA's shared projections are: PEFT's
    # `inject_adapter_in_model` (which returns the bare model and drops the tuner) must refuse, not lose them
    uses_shared_state = True

    @property
    def factor_pass(self) -> FactorPass:
        """The generation pass of this tuner's layers: their factors in batched operations, once per forward."""
        if "_factor_pass" not in self.__dict__:
            self.__dict__["_factor_pass"] = FactorPass()
        return self.__dict__["_factor_pass"]

    @property
    def generator_banks(self) -> nn.ModuleDict:
        """Adapter name -> ``GeneratorBank``."""
        if self.generator_attr not in self._modules:
            self.add_module(self.generator_attr, nn.ModuleDict())
        return self._modules[self.generator_attr]

    def _create_and_replace(
        self,
        config: Any,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        if current_key is None:
            raise ValueError("Current Key shouldn't be `None`")
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        in_features, out_features = in_out_features(base)
        layout = resolve_layout(getattr(self.model, "config", None), current_key, out_features, config.head_layout)
        projection = projection_key(current_key)
        generator = None
        if config._uses_generator():
            # created here, not in a pre-injection hook: PEFT's add_adapter does not call that hook
            if adapter_name not in self.generator_banks:
                self.generator_banks[adapter_name] = GeneratorBank(
                    config.hyper_hidden, config.share_qv, config.output_scale()
                )
            generator = self.generator_banks[adapter_name].block(config.block_key(current_key))
            weight = base.weight
            generator.add_projection(
                projection,
                in_features,
                layout.head_dim,
                generate_a=config.generate_a,
                zero_b=config.init_weights in (True, "zero_b"),
                device=weight.device,
                # the base layer's dtype, as PEFT gives LoRA's weights (_move_adapter_to_device_of_base_layer)
                dtype=weight.dtype if weight.dtype.is_floating_point else None,
            )
        if isinstance(base, Conv1D):
            config.fan_in_fan_out = True  # GPT-2's Conv1D stores (in, out); recorded as PEFT records it
        if isinstance(target, self.tuner_layer_cls):
            target.update_layer(adapter_name, config, generator, projection, layout)
        else:
            new_module = self.layer_cls(target, adapter_name, config, generator, projection, layout)
            if adapter_name not in self.active_adapters:
                new_module.requires_grad_(False)
            self._replace_module(parent, target_name, new_module, target)
            target = new_module
        target._factor_pass = self.factor_pass

    # generators live outside the layers (and outside the wrapped model), so the adapter bookkeeping PEFT does on the
    # layers and on the model must reach them too

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        """PEFT's injection, keeping the other adapters' generators as trainable (or frozen) as they were.

        PEFT snapshots ``requires_grad`` of the wrapped model's existing parameters around an injection and restores
        it afterwards, so that adding or loading adapter B leaves a frozen adapter A frozen. The generator banks live
        on the tuner, outside that snapshot, and ``set_adapter`` (called during the injection with B's
        ``inference_mode``) would otherwise switch the active adapter's generator on.
        """
        before = {
            param: param.requires_grad
            for name, bank in self.generator_banks.items()
            if name != adapter_name
            for param in bank.parameters()
        }
        try:
            super().inject_adapter(model, adapter_name, *args, **kwargs)
        finally:
            for param, requires_grad in before.items():
                param.requires_grad_(requires_grad)
        self.factor_pass.attach(model)  # the layers changed: the pass finds them again

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """Cast an adapter's weights as PEFT casts LoRA's: half precision (and float8) up to float32.

        PEFT's ``cast_adapter_dtype`` only visits the tuner layers; the generator bank lives on the tuner, so it gets
        the same rule here. With ``autocast_adapter_dtype=False`` it keeps the base layer's dtype, like the seeds.
        """
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        if not autocast_adapter_dtype or adapter_name not in self.generator_banks:
            return
        upcast = {torch.float16, torch.bfloat16}
        upcast.update(dtype for name in UPCAST_DTYPES if isinstance(dtype := getattr(torch, name, None), torch.dtype))
        for param in self.generator_banks[adapter_name].parameters():
            if param.dtype in upcast:
                param.data = param.data.to(torch.float32)  # in place: the layers hold the generator, not copies

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        super().set_adapter(adapter_name, inference_mode=inference_mode)
        names = {adapter_name} if isinstance(adapter_name, str) else set(adapter_name)
        for name, bank in self.generator_banks.items():
            bank.requires_grad_(name in names and not inference_mode)

    def set_requires_grad(self, adapter_names: str | Sequence[str], requires_grad: bool = True) -> None:
        super().set_requires_grad(adapter_names, requires_grad=requires_grad)
        names = {adapter_names} if isinstance(adapter_names, str) else set(adapter_names)
        for name in names & set(self.generator_banks.keys()):
            self.generator_banks[name].requires_grad_(requires_grad)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        if adapter_name in self.generator_banks:
            del self.generator_banks[adapter_name]
        self.factor_pass.refresh()

    def _unload_and_optionally_merge(self, *args: Any, **kwargs: Any) -> nn.Module:
        self.factor_pass.detach()  # the unloaded model goes back without the pass's hooks
        return super()._unload_and_optionally_merge(*args, **kwargs)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        """PEFT's mixed adapter batches, as LoRA has them: ``model(x, adapter_names=[...])`` (and ``generate``) gives
        row i the adapter ``adapter_names[i]``, or none for ``"__base__"``. The names reach every layer (and every
        ``modules_to_save`` wrapper) as a forward keyword, through pre-forward hooks that last one call."""
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            raise ValueError("Cannot pass `adapter_names` when the model is in training mode.")
        known = set().union(*(m.A_seed.keys() for m in self.modules() if isinstance(m, self.tuner_layer_cls)))
        unknown = {name for name in adapter_names if name != "__base__"} - known
        if unknown:
            raise ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(sorted(unknown))}")
        names = list(adapter_names)
        num_beams = kwargs.get("num_beams")
        if isinstance(num_beams, int) and num_beams > 1:  # beam search repeats every row num_beams times
            names = [name for name in adapter_names for _ in range(num_beams)]
        handles = _add_names_hooks(self.model, names)
        encoder = _get_encoder(self.model)
        if encoder is not None and names != list(adapter_names):
            handles += _add_names_hooks(encoder, list(adapter_names))  # the encoder sees each row once
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        # generator keys carry the adapter name in the middle: `<attr>.<adapter>.blocks.block0.a_in.n128.weight`
        marker = f"{cls.generator_attr}.{adapter_name}."
        if marker in key:
            return key.replace(marker, f"{cls.generator_attr}.", 1)
        return super()._remove_adapter_name_from_key(key, adapter_name)


def _names_hook(module: nn.Module, args: tuple, kwargs: dict, adapter_names: list[str]) -> tuple[tuple, dict]:
    return args, {**kwargs, "adapter_names": adapter_names}


def _add_names_hooks(root: nn.Module, adapter_names: list[str]) -> list[RemovableHandle]:
    """Pre-forward hooks that pass ``adapter_names`` to every adapted layer and ``modules_to_save`` wrapper."""
    hook = partial(_names_hook, adapter_names=adapter_names)
    return [
        module.register_forward_pre_hook(hook, with_kwargs=True)
        for module in root.modules()
        if isinstance(module, (GeneratedFactorsLayer, AuxiliaryTrainingWrapper))
    ]


def _get_encoder(model: nn.Module) -> nn.Module | None:
    """The encoder of an encoder-decoder model, else None (transformers 5 models return themselves)."""
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
    return None if encoder is model else encoder


class HoraModel(GeneratedFactorsModel):
    """Creates a HoRA model from a transformers model.

    Method: HoRA, "Cross-Head Low-Rank Adaptation with Joint Hypernetworks" (arXiv 2510.04295), as read by
    this project (see README). Use through ``peft.get_peft_model(model, hora.HoraConfig(...))``.
    """

    prefix = "hora_"
    tuner_layer_cls = HoraLayer
    generator_attr = "hora_generator"
    layer_cls = HoraLinear
