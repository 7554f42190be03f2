from hora.tuners.hora.config import HoraConfig
from hora.tuners.hora.layer import HoraLayer, HoraLinear
from hora.tuners.hora.model import HoraModel


__all__ = ["HoraConfig", "HoraLayer", "HoraLinear", "HoraModel"]
