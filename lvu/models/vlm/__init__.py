"""Image-LLM hosts that video methods plug into (see base.Host)."""

from lvu.models.vlm.base import PARTS, Host
from lvu.models.vlm.families import (
    FAMILIES,
    ComposedHost,
    InternVLHost,
    LlavaOnevisionHost,
    QwenVLHost,
    host_class_of,
    load_host,
)

__all__ = ["FAMILIES", "PARTS", "ComposedHost", "Host", "InternVLHost", "LlavaOnevisionHost", "QwenVLHost",
           "host_class_of", "load_host"]
