from hora.tuners.doran.config import DoranConfig
from hora.tuners.doran.layer import DoranLayer, DoranLinear
from hora.tuners.doran.model import DoranModel


__all__ = ["DoranConfig", "DoranLayer", "DoranLinear", "DoranModel"]
