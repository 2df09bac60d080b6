"""The host a recipe's ``host`` section names: a checkpoint folder of a supported family (or a composed host saved
by an export), or a vision encoder and an LLM composed with a new projector."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig

from lvu.errors import ConfigError
from lvu.models.vlm import ComposedHost, Host, host_class_of, load_host
from lvu.models.vlm.families import COMPOSED_RECORD
from lvu.tasks.host_lm.config import HostSection


def _check(section: HostSection) -> None:
    composed = section.vision is not None or section.llm is not None
    if section.path and composed:
        raise ConfigError("host: give host.path, or host.vision and host.llm to compose one, not both")
    if not section.path and not (section.vision and section.llm):
        raise ConfigError("host: set host.path (a checkpoint folder), or host.vision and host.llm (composed with a "
                          "new projector)")


def build_host(section: HostSection) -> Host:
    """Load (or compose) the host, weights included."""
    _check(section)
    kernels = {"attn_implementation": section.attn_implementation} if section.attn_implementation else {}
    if section.path:
        host = load_host(section.path, **kernels)
    else:
        host = ComposedHost(section.vision, section.llm, vision_layer=section.vision_layer,  # type: ignore[arg-type]
                            drop_cls=section.drop_cls, video_pool=section.video_pool,
                            video_newline=section.video_newline, from_pretrained=kernels)
    if section.gradient_checkpointing:
        host.enable_gradient_checkpointing()
    return host


def host_class(section: HostSection) -> type[Host]:
    """The class of the host, read from its files without loading weights."""
    _check(section)
    return host_class_of(Path(section.path)) if section.path else ComposedHost


def host_record(section: HostSection) -> dict[str, str | int | bool | None]:
    """Where the host came from, for an export's record."""
    if section.path:
        return {"path": section.path}
    return {"vision": section.vision, "llm": section.llm, "vision_layer": section.vision_layer,
            "drop_cls": section.drop_cls, "video_pool": section.video_pool, "video_newline": section.video_newline}


def host_hidden_size(section: HostSection) -> int:
    """The LLM's hidden size, read from config files (no weights loaded)."""
    _check(section)
    if section.path and (Path(section.path) / COMPOSED_RECORD).is_file():
        llm = Path(section.path) / "llm"
    else:
        llm = Path(section.path or section.llm)  # type: ignore[arg-type]
    return AutoConfig.from_pretrained(str(llm)).get_text_config().hidden_size
