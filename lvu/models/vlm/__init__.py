"""Image-LLM hosts that video methods plug into (see base.Host)."""

from lvu.models.vlm.base import Host
from lvu.models.vlm.families import (
    FAMILIES,
    ComposedHost,
    InternVLHost,
    LlavaOnevisionHost,
    QwenVLHost,
    load_host,
)

__all__ = ["FAMILIES", "ComposedHost", "Host", "InternVLHost", "LlavaOnevisionHost", "QwenVLHost", "load_host"]
