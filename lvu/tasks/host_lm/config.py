"""Recipe sections every video-LLM task on the host-LM layer shares (a method adds its ``model`` and ``loss``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from lvu.data.datamodule import ShardDataConfig
from lvu.data.sampling import SamplerConfig
from lvu.data.shots import ShotConfig
from lvu.schema import EvalConfig, RecipeConfig


class PartMode(str, Enum):
    """How one part of the model trains."""

    frozen = "frozen"  # no gradient; eval mode; restored from its source at every start, never saved
    full = "full"  # every weight trains and is saved
    lora = "lora"  # low-rank adapters (peft) train and are saved; the weights under them stay frozen


class PartName(str, Enum):
    """The parts a host-LM task trains separately: the host's three, and the method's own module(s)."""

    vision = "vision"
    projector = "projector"
    llm = "llm"
    method = "method"


@dataclass
class PartConfig:
    """How one part trains."""

    mode: PartMode = PartMode.frozen
    """frozen, full or lora."""
    lr: float | None = None
    """Its learning rate; null = optim.lr."""
    weight_decay: float | None = None
    """Its weight decay (never on biases, norms and other 1-D parameters); null = optim.weight_decay."""


@dataclass
class PartsConfig:
    """Which parts train and how (FiLA-Video's Table 4 trains vision, projector and LLM at their own rates)."""

    vision: PartConfig = field(default_factory=PartConfig)
    """The host's vision encoder."""
    projector: PartConfig = field(default_factory=PartConfig)
    """The host's projector into the LLM's embedding space (with LLaVA-OneVision's image-newline token)."""
    llm: PartConfig = field(default_factory=PartConfig)
    """The host's LLM (decoder layers, embeddings and output head)."""
    method: PartConfig = field(default_factory=lambda: PartConfig(mode=PartMode.full))
    """The method's own module (LinVT, FiLA-Video's merge) and its loss parameters."""


@dataclass
class LoraSection:
    """LoRA adapters (peft) for every part whose mode is lora (the official LinVT code's settings)."""

    r: int = 16
    """Rank of the adapters."""
    alpha: int = 32
    """Scale numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapters' input (active in training only)."""
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"])
    """Names of the linear layers that get adapters; each lora part must contain at least one."""


@dataclass
class HostSection:
    """The image-LLM the method sits on: a checkpoint folder, or a vision encoder and an LLM composed with a new
    projector (the LLaVA-1.5 / FiLA-Video stage-1 recipe)."""

    path: str | None = None
    """A save_pretrained folder of a supported family (LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, InternVL), or a
    composed host saved by `lvu ckpt export`."""
    vision: str | None = None
    """Compose: a vision encoder's save_pretrained folder (SigLIP, CLIP, ...); give llm too and no path."""
    llm: str | None = None
    """Compose: a causal LLM's save_pretrained folder with its tokenizer."""
    vision_layer: int = -2
    """Compose: the vision encoder's hidden layer the projector reads (LLaVA: the second to last)."""
    drop_cls: bool = False
    """Compose: drop the first token of each frame (encoders with a [CLS] token; SigLIP has none)."""
    video_pool: int = 1
    """Compose: the video path pools each frame's patch grid by this factor (2: LLaVA-OneVision's 2x2)."""
    video_newline: bool = False
    """Compose: a learned token closes each video (LLaVA-OneVision's image newline; trains with the projector)."""
    attn_implementation: str | None = None
    """The attention kernels transformers loads the host with: sdpa, eager, flash_attention_2, ... (null: its
    default)."""
    gradient_checkpointing: bool = False
    """Recompute the host's layer activations in backward instead of storing them (transformers' gradient
    checkpointing, non-reentrant): less memory for long videos, about one more forward per step. It acts on parts
    that train in full (transformers checkpoints only modules in training mode; frozen and LoRA parts stay in eval
    mode)."""


class Target(str, Enum):
    """What a sample's training text is."""

    conversations = "conversations"  # every assistant turn of its LLaVA conversation
    caption = "caption"  # its caption, as the answer to prompt.caption_prompt (alignment stages)


class SampleKind(str, Enum):
    video = "video"
    image = "image"
    text = "text"


@dataclass
class HostLMDataConfig(ShardDataConfig):
    """Video (and image, text-only) shards with LLaVA conversations or captions in their json."""

    frame_size: int = 384
    """Frames and images are resized to this square size (the host vision encoder's input size)."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Which frames of a training video are taken."""
    eval_frames: int = 32
    """Frames taken uniformly from each video in validation, test and prediction."""
    kinds: list[SampleKind] = field(default_factory=lambda: [SampleKind.video, SampleKind.image, SampleKind.text])
    """Sample kinds this stage trains on; others are skipped and counted (e.g. an alignment stage of videos)."""
    target: Target = Target.conversations
    """conversations (every assistant turn trains) or caption (the caption answers prompt.caption_prompt)."""
    shots: ShotConfig = field(default_factory=ShotConfig)
    """Shot boundaries of each video (off by default): each sampled frame's shot number reaches the method (LinVT:
    SVR's temporal attention stays inside a shot, as the supplement segments videos into clips before LinVT)."""


class TimeInstruction(str, Enum):
    """Whether (and in which words) a video's prompt says when its frames were taken."""

    none = "none"  # not "off": YAML and OmegaConf overrides read a bare off as the boolean false
    fila = "fila"  # "This video samples N frames of a T-second video at t1, t2, ... seconds." (FiLA-Video Sec. 3.3)
    llava_ov = "llava_ov"  # LLaVA-OneVision / LLaVA-Video's training-time wording


@dataclass
class PromptSection:
    """How samples become prompts in the host's chat template."""

    caption_prompt: str = "Describe the video."
    """The question a caption answers (data.target=caption; also asked of caption-only samples in prediction)."""
    caption_prompts: list[str] = field(default_factory=list)
    """Training only: several caption questions, one picked per sample by its key (empty: caption_prompt always).
    A method whose module reads the question (LinVT's text cross-attention) learns nothing from it when the
    question never varies."""
    time_instruction: TimeInstruction = TimeInstruction.none
    """Tell the LLM when its frames were taken, with their real times, before a video's first question (LLaVA-Video's
    practice): none, fila ("This video samples N frames of a T-second video at t1, t2, ... seconds.") or llava_ov."""
    max_answer_tokens: int = 256
    """Each assistant answer is cut to this many tokens (the end-of-turn token included)."""


@dataclass
class InitSection:
    """Where the trained parts start (every build: also when resuming, before the checkpoint is restored)."""

    from_: str | None = None
    """An earlier stage: a Lightning checkpoint file, a DeepSpeed checkpoint folder, or an `lvu ckpt export`
    folder."""
    parts: list[PartName] | None = None
    """Parts taken from init.from (vision, projector, llm, method); null = every part it holds."""
    required: bool = False
    """A fit must start from init.from (a later stage of a method); false also allows fresh weights."""


@dataclass
class GenerationSection:
    """Decoding for ``lvu predict`` (greedy)."""

    max_new_tokens: int = 64
    """The longest answer, in tokens."""


@dataclass
class HostLMRecipe(RecipeConfig):
    """A video-LLM stage: a host, which of its parts train, the data and prompts. Methods add their sections."""

    data: HostLMDataConfig = field(default_factory=HostLMDataConfig)
    """Shards, frames and sample kinds."""
    host: HostSection = field(default_factory=HostSection)
    """The image-LLM the method plugs into."""
    parts: PartsConfig = field(default_factory=PartsConfig)
    """Which parts train, how, at which learning rates."""
    lora: LoraSection = field(default_factory=LoraSection)
    """Adapter settings for parts in lora mode."""
    prompt: PromptSection = field(default_factory=PromptSection)
    """Chat-template prompts and answer lengths."""
    init: InitSection = field(default_factory=InitSection)
    """Where the trained parts start."""
    generation: GenerationSection = field(default_factory=GenerationSection)
    """Decoding for lvu predict."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """lvu eval: the benchmark, answer mode and published numbers (presets: eval=videomme, eval=lvbench, ...)."""
