"""An lmms-eval model backed by an lvu checkpoint: ``lmms-eval --model lvu --model_args recipe=...,ckpt=...``.

Installed with ``pip install 'lvu[lmms]'``; lmms-eval finds it through the ``lmms_eval.models`` entry point, which
names :data:`MANIFEST` (lmms-eval 0.7 reads a ``ModelManifest`` there, not the class). Model arguments:

* ``recipe`` (required): the recipe the checkpoint was trained with (``linvt/instruct``, ``fila/stage4``, a path);
* ``ckpt``: a checkpoint file, DeepSpeed folder, run directory or ``lvu ckpt export`` folder (its trained parts are
  loaded as ``init.from`` loads them: every part it holds, every mismatch named); none: the recipe's own weights;
* ``overrides``: recipe overrides separated by spaces (``host.path=/models/ov data.eval_frames=64``: lmms-eval splits
  model arguments on commas, so a value cannot hold one);
* ``device``: ``cpu`` or ``cuda`` (lmms-eval's ``--device``).

Videos (paths from the task's ``doc_to_visual``) are decoded as ``lvu eval`` decodes them (``data.eval_frames``
uniform frames at ``data.frame_size``), images become one-frame samples, and the question goes through the same
chat template, method and generation (:meth:`HostLMTask.ask`). One process: lmms-eval's own multi-process launch is not
supported here (``lvu eval`` is the distributed path).

lmms-eval conventions followed: ``loglikelihood`` returns ``(negative log-likelihood of the continuation, whether it
is the greedy continuation)`` per request (its models return a loss; its multiple-choice scoring takes the smallest);
``generate_until`` stops at the request's ``until`` strings.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import move_data_to_device
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from PIL import Image

from lvu.config import load_recipe
from lvu.data.decoders import IMAGE_EXTS
from lvu.errors import LvuError
from lvu.tasks.host_lm.batch import collate, video_decoder
from lvu.tasks.host_lm.conversation import Conversation, Turn
from lvu.train.run import resolve_ckpt

MANIFEST = ModelManifest(model_id="lvu", simple_class_path="lvu.lmms.LvuModel")


class LvuModel(lmms):
    """A video-LLM task module of lvu answering lmms-eval's requests (see the module docstring)."""

    is_simple = True

    def __init__(self, recipe: str, ckpt: str | None = None, overrides: str = "", device: str = "cpu",
                 batch_size: int | str = 1, **unused: Any) -> None:
        super().__init__()
        if int(batch_size) != 1:
            raise LvuError("the lvu model answers one request at a time (each video alone, as lvu eval does): "
                           "give --batch_size 1")
        extra = overrides.split()
        path = resolve_ckpt(str(ckpt), "predict") if ckpt else None
        if path is not None:
            extra += [f"init.from={path}", "init.parts=null"]
        loaded = load_recipe(recipe, extra, stage="predict")
        self.cfg = loaded.to_object()
        if not hasattr(self.cfg, "eval"):
            raise LvuError(f"{loaded.name} (task {self.cfg.task}) is not a video-LLM recipe")
        self.model = loaded.task.build_module(self.cfg).to(device).eval()
        self.decode = video_decoder(self.cfg, "predict")
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    # -- inputs ------------------------------------------------------------------------------------------------------

    def _media(self, visuals: list[Any]) -> Any:
        """The first visual of a request as a one-sample batch (a video path or bytes, or a PIL image)."""
        if len(visuals) != 1:
            raise LvuError(f"an lmms-eval request with {len(visuals)} visuals: the lvu model answers about one video "
                           f"(or image) per question")
        visual = visuals[0]
        if isinstance(visual, Image.Image):
            buffer = io.BytesIO()
            visual.convert("RGB").save(buffer, format="PNG")
            raw: dict[str, Any] = {"png": buffer.getvalue()}
        elif isinstance(visual, bytes | bytearray):
            raw = {"mp4": bytes(visual)}
        else:  # a path: the decoder reads the frames it needs from the file, not the whole file into memory
            path = Path(str(visual))
            if not path.is_file():
                raise LvuError(f"lmms-eval gave the video {path}, which does not exist")
            ext = path.suffix.lstrip(".").lower() or "mp4"
            raw = {ext: path.read_bytes() if ext in IMAGE_EXTS else path}
        raw |= {"json": json.dumps({}).encode(), "__key__": "request", "__shard__": "lmms-eval"}
        sample = self.decode(raw, np.random.default_rng(0))
        sample["__key__"] = "request"
        return move_data_to_device(collate([sample], [Conversation([Turn("user", "")])]), self.device)

    def _asked(self, request: Instance, question: str) -> Any:
        doc_to_visual, doc_id, task, split = request.args[2:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        return self.model.ask(self._media(list(visuals or [])), 0, [question])

    # -- lmms-eval's interface ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers = []
        for request in requests:
            context, gen_kwargs = request.args[0], dict(request.args[1] or {})
            if gen_kwargs.get("do_sample"):
                raise LvuError("the lvu model decodes greedily (the benchmarks' protocol): do_sample is not supported")
            limit = int(gen_kwargs.get("max_new_tokens", self.cfg.eval.max_new_tokens))
            text = self.model.generate_answers(self._asked(request, context), limit)[0]
            until = gen_kwargs.get("until") or []
            for stop in [until] if isinstance(until, str) else until:
                if stop and stop in text:
                    text = text[:text.index(stop)]
            answers.append(text)
        return answers

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results = []
        for request in requests:
            context, continuation = request.args[0], request.args[1]
            if callable(continuation):  # a `loglikelihood` task hands over its doc_to_target, not the text
                doc_id, task, split = request.args[3:6]
                continuation = continuation(self.task_dict[task][split][doc_id])
            (scores,) = self.model.continuation_scores(self._asked(request, context), [[str(continuation)]])
            results.append((-float(scores.logprobs[0]), bool(scores.greedy[0])))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("multi-round generation is not supported by the lvu model")

