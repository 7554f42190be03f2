"""Configuration of HoRA: cross-head low-rank adaptation with a joint hypernetwork."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig

from hora.generator import unit_step_scale
from hora.geometry import block_index
from hora.registration import HORA, ExternalPeftType


@dataclass
class GeneratedFactorsConfig(PeftConfig):
    """Fields shared by [`HoraConfig`] and [`DoranConfig`]: rank, generator and targets."""

    r: int = field(default=8, metadata={"help": "Rank of the update: rows of A and columns of each head's B."})
    lora_alpha: float = field(default=16, metadata={"help": "Scale α; the update is multiplied by α / r."})
    hyper_hidden: int = field(
        default=16,
        metadata={
            "help": (
                "Width p of the generator's hidden layer, G = Linear(n→p) → tanh → Linear(p→n). Must be at least "
                "r, otherwise the generated factors have rank at most p."
            )
        },
    )
    generator_scale: float | Literal["unit_step"] = field(
        default="unit_step",
        metadata={
            "help": (
                "Output scale c of the generators, G(x) = c·(W2·tanh(W1·x + b1) + b2). 'unit_step' (the default): "
                "c = 1/sqrt(1 + p·E[tanh²]), so that one optimiser step moves a generated factor about as far as a "
                "LoRA factor at the same learning rate (this project's choice; the papers do not say). 1.0: the "
                "plain generator, as adapters saved before this field existed were trained (they load with it)."
            )
        },
    )
    share_qv: bool = field(
        default=True,
        metadata={
            "help": (
                "Share the generator's first layer between the adapted projections of a block (query and value by "
                "default); the second layer is always specific to each projection."
            )
        },
    )
    generate_a: bool = field(
        default=True,
        metadata={
            "help": (
                "Generate A through G_A as well as B through G_B. With False, A is a plain learned matrix (LoRA's) "
                "and only the per-head B factors are generated, which costs far fewer extra parameters."
            )
        },
    )
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": (
                "Module names (or a regex) to adapt. Defaults per architecture: q_proj and v_proj for ViT and "
                "Llama/Qwen/Mistral, c_attn (fused Q/K/V) for GPT-2."
            )
        },
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names (or a regex) never to adapt."}
    )
    head_layout: dict[str, int] | None = field(
        default=None,
        metadata={
            "help": (
                "Head size of modules hora's geometry table does not know, e.g. {'fc1': 64} splits fc1's output "
                "rows into blocks of 64 that are treated as heads. Wins over the table."
            )
        },
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter's input, as LoRA's lora_dropout."})
    fan_in_fan_out: bool = field(
        default=False,
        metadata={
            "help": "Set True for modules that store weight as (in, out), like GPT-2's Conv1D (set automatically)."
        },
    )
    init_weights: bool | Literal["zero_b", "random"] = field(
        default=True,
        metadata={
            "help": (
                "True / 'zero_b': the output layer of G_B starts at zero, so B = 0 and the adapted model equals the "
                "base model exactly at step 0. False / 'random': everything random (for tests and analysis)."
            )
        },
    )
    seed_std: float = field(
        default=1.0, metadata={"help": "Standard deviation of the Ā and B̄ seeds at initialisation."}
    )
    modules_to_save: list[str] | None = field(
        default=None,
        metadata={"help": "Other modules to train and save in full, e.g. ['classifier'] for a new label set."},
    )
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "Only adapt these block indices."}
    )
    layers_pattern: list[str] | str | None = field(
        default=None, metadata={"help": "Name of the layer list, used with layers_to_transform."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.target_modules = (
            set(self.target_modules) if isinstance(self.target_modules, list) else self.target_modules
        )
        self.exclude_modules = (
            set(self.exclude_modules) if isinstance(self.exclude_modules, list) else self.exclude_modules
        )
        self._check()

    def _check(self) -> None:
        """Explicit errors for invalid settings, raised when the config is built."""
        config = self
        if config.r <= 0:
            raise ValueError(f"`r` must be a positive integer, got {config.r}.")
        if self._uses_generator() and config.hyper_hidden < config.r:
            raise ValueError(
                f"`hyper_hidden` ({config.hyper_hidden}) must be at least `r` ({config.r}): every generated factor "
                "lies in the span of the generator's p output directions, so p < r would waste rank."
            )
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {config.dropout}.")
        if config.init_weights not in (True, False, "zero_b", "random"):
            raise ValueError(f"`init_weights` must be True, False, 'zero_b' or 'random', got {config.init_weights!r}.")
        scale = config.generator_scale
        if scale != "unit_step" and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
            raise ValueError(f"`generator_scale` must be 'unit_step' or a positive number, got {scale!r}.")
        if config.seed_std <= 0:
            raise ValueError(f"`seed_std` must be positive, got {config.seed_std}.")
        if config.layers_pattern and not config.layers_to_transform:
            raise ValueError("`layers_pattern` only makes sense together with `layers_to_transform`.")

    def _uses_generator(self) -> bool:
        return True  # DoRAN can run with static factors

    def output_scale(self) -> float:
        """The generators' output scale c as a number (``generator_scale`` resolved for ``hyper_hidden``)."""
        if self.generator_scale == "unit_step":
            return unit_step_scale(self.hyper_hidden)
        return float(self.generator_scale)

    @classmethod
    def check_kwargs(cls, **kwargs):
        """A saved config without ``generator_scale`` predates it: its generators were trained unscaled (c = 1).

        PEFT calls this on the fields read from ``adapter_config.json`` before building the config, so old adapters
        load with the generator they were trained with, while new configs get the default.
        """
        kwargs = super().check_kwargs(**kwargs)
        if "generator_scale" not in kwargs:
            kwargs["generator_scale"] = 1.0
        return kwargs

    def block_key(self, module_path: str) -> str:
        """Which generator of the bank serves ``module_path``: its block's (``block3``), or ``model`` outside blocks.
        The tuner and ``hora.export`` both ask here."""
        index = block_index(module_path)
        return "model" if index is None else f"block{index}"

    def to_dict(self) -> dict:
        """The config as a dict, with ``peft_type`` as the plain name written to ``adapter_config.json``.

        The attribute reads like a member of PEFT's ``PeftType`` (``str()`` gives ``"PeftType.HORA"``); the dict is
        for files and display (JSON, YAML front matter, ``str(d["peft_type"])``), where the plain name is wanted.
        """
        out = super().to_dict()
        if isinstance(out.get("peft_type"), ExternalPeftType):
            out["peft_type"] = out["peft_type"].value
        return out


@dataclass
class HoraConfig(GeneratedFactorsConfig):
    """Configuration of a [`HoraModel`].

    HoRA adapts projection P of every block by ΔW_P = (α/r)·[B_{P,1}; …; B_{P,H}]·A_P, where A_P and the
    per-head B_{P,h} are generated from learned seeds by a generator shared by all heads of the block.

    Example:

        >>> import hora, peft
        >>> model = peft.get_peft_model(base, hora.HoraConfig(r=8, lora_alpha=16, hyper_hidden=16))
        >>> model.print_trainable_parameters()
    """

    generate_a: bool = field(
        default=False,
        metadata={
            "help": (
                "Generate A through G_A as well as B through G_B. The default, False, keeps A a plain learned matrix "
                "(LoRA's) and generates only the per-head B factors: on the real bases it adapted as well or better "
                "at about 1.1-1.25x LoRA's parameters instead of 2.7-3.1x (README, 'Sample efficiency')."
            )
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = HORA  # an ExternalPeftType: the string "HORA" that reads like a PeftType member
