"""hora: cross-head, hypernetwork-generated low-rank adaptation (HoRA, DoRAN) as PEFT methods.

Importing hora registers ``HORA`` and ``DORAN`` with PEFT, after which ``peft.get_peft_model``,
``save_pretrained`` and ``PeftModel.from_pretrained`` work for them as for LoRA.
"""

from hora.data import DataError, DataLimits
from hora.geometry import HEAD_LAYOUTS, HeadLayout, resolve_layout
from hora.registration import register
from hora.tuners.doran import DoranConfig, DoranModel
from hora.tuners.hora import HoraConfig, HoraModel


register("HORA", HoraConfig, HoraModel)
register("DORAN", DoranConfig, DoranModel)

from hora.export import export_dora, export_lora  # noqa: E402
from hora.hub import HubError  # noqa: E402
from hora.inspect import (  # noqa: E402
    HeadFactors,
    ParamReport,
    effective_rank,
    head_deltas,
    head_factors,
    head_similarity,
    param_report,
)
from hora.loaders import LoadedBase, load_adapter, load_base  # noqa: E402
from hora.mixed import MixedModel  # noqa: E402


__version__ = "0.1.0"

__all__ = [
    "HEAD_LAYOUTS",
    "DataError",
    "DataLimits",
    "DoranConfig",
    "DoranModel",
    "HeadFactors",
    "HeadLayout",
    "HoraConfig",
    "HoraModel",
    "HubError",
    "LoadedBase",
    "MixedModel",
    "ParamReport",
    "effective_rank",
    "export_dora",
    "export_lora",
    "head_deltas",
    "head_factors",
    "head_similarity",
    "load_adapter",
    "load_base",
    "param_report",
    "resolve_layout",
]
