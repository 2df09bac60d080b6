"""lvu: long-video understanding methods (LinVT, FiLA-Video, LV-MAE, SEAL) on one Lightning training stack."""

__version__ = "0.1.0"
