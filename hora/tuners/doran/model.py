"""DoranModel: the PEFT tuner for DoRAN, sharing HoRA's generator machinery."""

from __future__ import annotations

from hora.tuners.doran.layer import DoranLayer, DoranLinear
from hora.tuners.hora.model import GeneratedFactorsModel


class DoranModel(GeneratedFactorsModel):
    """Creates a DoRAN model from a transformers model.

    Method: DoRAN (arXiv 2510.04331) as read by this project (see README). Use through
    ``peft.get_peft_model(model, hora.DoranConfig(...))``; export to plain DoRA with ``hora.export_dora``.
    """

    prefix = "doran_"
    tuner_layer_cls = DoranLayer
    generator_attr = "doran_generator"
    layer_cls = DoranLinear
