"""The host-LM layer: what every video-LLM method on an image-LLM host shares (see module.py).

A new method adds ``lvu/models/<method>.py`` (its module, pure torch), ``lvu/tasks/<method>.py`` (a subclass of
:class:`HostLMTask` that builds the module and turns videos into tokens, its recipe sections, a ``register_task``
call), ``recipes/<method>/`` and one quickstart entry.
"""

from lvu.tasks.host_lm.batch import MediaBatch, host_lm_data
from lvu.tasks.host_lm.config import (
    GenerationSection,
    HostLMDataConfig,
    HostLMRecipe,
    HostSection,
    InitSection,
    LoraSection,
    PartConfig,
    PartMode,
    PartName,
    PartsConfig,
    PromptSection,
    SampleKind,
    Target,
    TimeInstruction,
)
from lvu.tasks.host_lm.export import export_host_lm
from lvu.tasks.host_lm.module import (
    HostLMTask,
    LossTerm,
    TextInput,
    VideoInput,
    VideoTokens,
    VisualTokens,
    host_lm_metrics,
)

__all__ = [
    "GenerationSection",
    "HostLMDataConfig",
    "HostLMRecipe",
    "HostLMTask",
    "HostSection",
    "InitSection",
    "LoraSection",
    "LossTerm",
    "MediaBatch",
    "PartConfig",
    "PartMode",
    "PartName",
    "PartsConfig",
    "PromptSection",
    "SampleKind",
    "Target",
    "TextInput",
    "TimeInstruction",
    "VideoInput",
    "VideoTokens",
    "VisualTokens",
    "export_host_lm",
    "host_lm_data",
    "host_lm_metrics",
]
