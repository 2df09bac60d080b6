"""LinVT forward + backward time and peak memory against the number of frames, measured side by side in one run.

1. Scaling (default): ``lvu.models.linvt.LinVT`` at the paper's defaults (4 layers, 8 heads, top-k 2048, queries
   64/32/16, variant ``multi_c``, text conditioning on) and width 896 (``dim`` 896, the Qwen2-0.5B host), batch 1,
   for 16 to 512 frames of 256 visual tokens each and a 32-token instruction; loss: mean square of the output tokens.

   * Memory: each frame count runs one forward + backward in a fresh process. Peak memory is
     ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak resident memory (VmHWM, ``benchmarks/_memory.py``)
     minus an import-only process's. "above model" subtracts what the process held once the module and its inputs
     existed: activations, parameter gradients and workspace remain. A frame count that fails (out of memory) ends
     the list there. A second forward + backward, after the peak is read, runs under
     ``torch.utils.flop_counter.FlopCounterMode`` (which raises the peak and defeats activation checkpointing) for the
     table's GFLOP and GFLOP/s columns (matmuls, and the SDPA kernels it has formulas for: CUDA's fused ones and the
     MATH fallback's matmuls; not CPU's flash kernel, a few percent here).
   * Time: one process, one module, interleaved rounds (each round runs every frame count once, smallest first),
     median over ``--repeats`` rounds after ``--warmup`` rounds. Interleaving matters on shared machines whose speed
     drifts by tens of percent within minutes; each round also prints a dense-matmul GFLOP/s measured just before
     it and the 1-minute load average, so drift and other jobs on the machine show.

   The SVR part runs over every input token (linear in frames, plus a small T^2 term in its temporal attention);
   top-k bounds what the TTA part sees (2048 tokens at most), so time and memory should grow about linearly with
   frames. The table prints each row's time next to the first row's, from the same rounds.

   LinVT's forward is batched over samples and frames (its module docstring says so; not re-checked here). What is
   checked, during the memory processes' forward: every ``torch.nn.functional.scaled_dot_product_attention`` call
   is counted by a wrapper, with the kernel PyTorch picks for those inputs (``torch._fused_sdp_choice``): fused
   (flash / memory-efficient / cuDNN) or MATH, the fallback that materialises the attention weights. The run fails
   if no attention goes through SDPA. The TTA's final linear aggregation (``softmax(Wq Q (Wk T)^T) T``) is an
   explicit softmax by design (it returns its weights' product with the raw tokens), bounded by top-k.

2. ``--gpu-host`` (CUDA only; skipped with a message otherwise): one stage-2 training step of a 7B-shaped host at
   64 frames in bf16. The LLM is a randomly initialised Qwen2 (hidden 3584, 28 layers, 28 heads, 4 KV heads, MLP
   18944, vocabulary 152064, SDPA attention) built directly on the GPU in bf16 and frozen, with LoRA r 16 (alpha 32,
   dropout 0.05) on q, k, v, o, gate, up, down via ``peft.inject_adapter_in_model``; LinVT (dim 3584, width 896) is
   in front. The vision encoder and projector are skipped: the step starts from random visual tokens (64 frames x
   196 per frame, ``--host-visual-tokens 729`` for SigLIP's full grid) already in the LLM's embedding space. The
   sequence is LinVT's 112 video tokens then 256 text tokens (a 32-token prompt, which also conditions LinVT, and a
   224-token answer carrying the loss). AdamW (fp32 states) updates LinVT and the LoRA weights (kept in fp32);
   forward and backward run under bf16 autocast. The host stays in eval mode, as ``lvu.tasks.linvt`` keeps it.

   Model FLOPs per step, with T the LLM's sequence length, N the weights of the LLM's linear layers (lm_head
   included, the embedding lookup not), N_lora the LoRA weights, L layers, d the hidden size:

       forward                      2 (N + N_lora) T  + attention  2 L T^2 d   (QK^T and AV, causal: half the square)
       backward, activation grads   2 (N + N_lora) T  + attention  4 L T^2 d   (through every layer: LoRA sits in all)
       backward, weight grads       2 N_lora T                                 (the frozen base needs none)
       LinVT (forward + backward)   counted by torch.utils.flop_counter.FlopCounterMode on its own fwd + bwd

   MFU = model FLOPs per step / step time / peak dense bf16 FLOP/s (H100 SXM and H200: 989 TFLOP/s; H100 PCIe:
   756; A100: 312; ``--peak-tflops`` otherwise). A FlopCounterMode count of one whole step is printed beside it.

3. ``--vs-official``: against the official module's shape (``benchmarks/_linvt_official_shape.py``: no MLPs, no
   residuals in SVR, one TTA stack, ``nn.MultiheadAttention`` with its attention weights returned; 67.6M parameters
   at dim 896), in fp32 and under bf16 autocast, beside ours at its defaults, ours at equal parameters (one TTA stack
   with per-scale queries, MLPs a quarter wide: 69.4M), + ``checkpoint_svr``, + bf16 autocast. Memory per input token
   is the slope of "above model" between the two ``--frames`` (default 8 and 16), each a fresh process; step times
   are interleaved rounds at the larger frame count. Ratios are against the official shape in fp32.
   ``--host-pooling``: the same two measurements for ours at its defaults on 729 tokens per frame (SigLIP's grid, as
   LinVT receives it by default) against 196 (``model.host_pooling=true``); default frames 4 and 8.

    python benchmarks/bench_linvt.py                                    # 16 ... 512 frames (CUDA if available)
    python benchmarks/bench_linvt.py --device cpu --frames 16 32 64 128 --repeats 3
    python benchmarks/bench_linvt.py --quick                            # tiny shapes, a smoke run
    python benchmarks/bench_linvt.py --gpu-host                         # stage-2 step of a 7B-shaped host
    python benchmarks/bench_linvt.py --vs-official --device cpu         # against the official module's shape
    python benchmarks/bench_linvt.py --host-pooling --device cpu        # 729 vs 196 tokens per frame
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from _linvt_official_shape import OfficialShapeLinVT
from _memory import peak_rss_mb, rss_mb
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lvu.models.linvt import LinVT, LinVTConfig, TTAWeights, Variant

PAPER = {"frames": [16, 32, 64, 128, 256, 512], "tokens": 256, "dim": 896, "top_k": 2048, "repeats": 3}
QUICK = {"frames": [4, 8], "tokens": 64, "dim": 128, "top_k": 256, "repeats": 1}
QWEN2_7B = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "intermediate_size": 18944, "vocab_size": 152064}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0)]
MIB = 2**20
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# -- helpers ---------------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def count_sdpa(calls: Counter):
    """Count ``F.scaled_dot_product_attention`` calls by input rank and the kernel PyTorch picks for them."""
    original = F.scaled_dot_product_attention
    from torch.nn.attention import SDPBackend

    names = {int(v): k for k, v in SDPBackend.__members__.items()}

    def wrapper(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        try:
            choice = torch._fused_sdp_choice(query, key, value, attn_mask, dropout_p, is_causal, scale=scale)
            backend = names.get(int(choice), "?")
        except Exception:  # private API: a count without the kernel is still a count
            backend = "?"
        calls[f"{query.dim()}-D {backend}"] += 1
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, **kwargs)

    F.scaled_dot_product_attention = wrapper
    try:
        yield calls
    finally:
        F.scaled_dot_product_attention = original


# -- 1. scaling ------------------------------------------------------------------------------------------------------


def linvt_config(args: argparse.Namespace, dim: int | None = None, width: int | None = None) -> LinVTConfig:
    overrides = json.loads(args.overrides)
    if "tta_weights" in overrides:
        overrides["tta_weights"] = TTAWeights(overrides["tta_weights"])
    return LinVTConfig(dim=dim or args.dim, layers=args.layers, heads=args.heads, top_k=args.top_k,
                       queries=list(args.queries), variant=Variant(args.variant), text_conditioning=True,
                       width=width, **overrides)


def make_inputs(args: argparse.Namespace, frames: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(visual [B, T, N, D], frame_mask, text [B, L, D], text_mask); bf16 runs get bf16 tokens, as from a bf16 host."""
    dtype = DTYPES[args.dtype]
    return (torch.randn(args.batch, frames, args.tokens, args.dim, device=device, dtype=dtype),
            torch.ones(args.batch, frames, dtype=torch.bool, device=device),
            torch.randn(args.batch, args.text_tokens, args.dim, device=device, dtype=dtype),
            torch.ones(args.batch, args.text_tokens, dtype=torch.bool, device=device))


def fwd_bwd(model: nn.Module, inputs: tuple[torch.Tensor, ...], dtype: torch.dtype,
            calls: Counter | None = None) -> tuple[int, float, float]:
    """One forward + backward: (output tokens, forward ms, forward + backward ms)."""
    device = inputs[0].device
    model.zero_grad(set_to_none=True)
    sync(device)
    start = time.perf_counter()
    with autocast(device, dtype), count_sdpa(calls) if calls is not None else contextlib.nullcontext():
        out = model(*inputs)
    sync(device)
    forward = time.perf_counter() - start
    out.tokens.float().square().mean().backward()
    sync(device)
    return out.tokens.shape[1], forward * 1e3, (time.perf_counter() - start) * 1e3


def build(args: argparse.Namespace, device: torch.device) -> nn.Module:
    """Ours (``LinVT`` with ``--overrides``) or, with ``--impl official``, the official module's shape."""
    torch.manual_seed(0)
    if args.impl == "official":
        model = OfficialShapeLinVT(args.dim, args.layers, args.heads, args.top_k, list(args.queries))
    else:
        model = LinVT(linvt_config(args))
    return model.to(device).train()


def memory_child(args: argparse.Namespace, frames: int) -> dict:
    """In a fresh process: peak memory (MiB) of one forward + backward and the SDPA calls of its forward."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    model = build(args, device)
    inputs = make_inputs(args, frames, device)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        model_mib = torch.cuda.memory_allocated(device) / MIB
    else:
        model_mib = rss_mb()
    calls: Counter = Counter()
    tokens_out, _, ms = fwd_bwd(model, inputs, dtype, calls)
    peak = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else peak_rss_mb()
    # FLOPs in a second pass, after the peak is read: FlopCounterMode holds tensors of its own (30% more peak memory
    # here) and defeats activation checkpointing, whose recomputation it sees as more saved activations.
    with FlopCounterMode(display=False) as flops:
        fwd_bwd(model, inputs, dtype)
    return {"frames": frames, "tokens_out": tokens_out, "peak_mib": peak, "model_mib": model_mib, "ms": ms,
            "flops": flops.get_total_flops(), "sdpa": dict(calls),
            "params": sum(p.numel() for p in model.parameters())}


CHILD_OPTIONS = ("tokens", "dim", "batch", "device", "dtype", "layers", "heads", "top_k", "variant", "text_tokens",
                 "impl", "overrides")


def run_child(args: argparse.Namespace, frames: int) -> dict:
    """``memory_child`` in a fresh process (frames 0: imports only, the CPU memory baseline)."""
    argv = [sys.executable, __file__, "--child", str(frames), "--queries", *map(str, args.queries)]
    for name in CHILD_OPTIONS:
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode:
        why = "killed by SIGKILL (out of memory?)" if out.returncode == -9 else f"exit status {out.returncode}"
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        return {"frames": frames, "error": f"{why}\n{tail}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """Dense fp32 matmul GFLOP/s right now: how fast this (possibly shared) machine runs at the moment."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    torch.mm(a, b)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def timing(args: argparse.Namespace, sizes: list[int]) -> dict[int, list[tuple[int, float, float]]]:
    """Interleaved rounds over the frame counts with one module (same weights), so that a machine whose speed
    drifts slows every frame count alike; warm-up rounds first."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    model = build(args, device)
    inputs = {f: make_inputs(args, f, device) for f in sizes}
    fwd_bwd(model, inputs[sizes[0]], dtype)  # first call: thread pools, kernels, allocator
    times: dict[int, list] = {f: [] for f in sizes}
    for r in range(args.warmup + args.repeats):
        reference = matmul_gflops(device)
        runs = {f: fwd_bwd(model, inputs[f], dtype) for f in sizes}
        label = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}"
        print(f"# {label} (dense matmul {reference:.0f} GFLOP/s just before, load average {os.getloadavg()[0]:.1f}): "
              + ", ".join(f"{f} frames {run[2]:.0f} ms" for f, run in runs.items()), flush=True)
        if r >= args.warmup:
            for f, run in runs.items():
                times[f].append(run)
    return times


def scaling(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, {args.dtype}")
    print(f"# LinVT dim {args.dim}, {args.layers} layers, {args.heads} heads, top-k {args.top_k}, queries "
          f"{'/'.join(map(str, args.queries))}, {args.variant}, text conditioning on ({args.text_tokens} text "
          f"tokens); batch {args.batch}, {args.tokens} tokens per frame; times: median of {args.repeats} "
          f"interleaved rounds after {args.warmup} warm-up round(s)")
    base = run_child(args, 0)["peak_mib"] if device.type == "cpu" else 0.0
    memory = {}
    for frames in args.frames:
        row = run_child(args, frames)
        if "error" in row:
            print(f"# {frames} frames: failed, {row['error']}\n# (larger frame counts skipped)")
            break
        memory[frames] = row
        print(f"# memory, {frames} frames (fresh process): peak {row['peak_mib'] - base:.0f} MiB, its one "
              f"forward + backward {row['ms']:.0f} ms", flush=True)
    if not memory:
        raise SystemExit("no frame count ran")

    first = next(iter(memory.values()))
    total = sum(first["sdpa"].values())
    if total == 0:
        raise SystemExit("LinVT made no scaled_dot_product_attention call: attention does not go through SDPA")
    kinds = ", ".join(f"{n} x {k}" for k, n in sorted(first["sdpa"].items()))
    print(f"# SDPA calls per forward: {total} ({kinds}); {first['params'] / 1e6:.1f}M parameters")
    math = sum(n for k, n in first["sdpa"].items() if k.endswith("MATH"))
    if math:
        print(f"# note: {math} of {total} calls use the MATH kernel, which materialises the attention weights")

    times = timing(args, list(memory))
    rows = []
    for frames, mem in memory.items():
        tokens_in = args.batch * frames * args.tokens
        rows.append({**mem, "tokens_in": tokens_in, "fwd_ms": statistics.median(t[1] for t in times[frames]),
                     "step_ms": statistics.median(t[2] for t in times[frames])})
    first = rows[0]
    label = "peak MiB" if device.type == "cuda" else "peak MiB (above imports)"
    print(f"\n| frames | tokens in | tokens out | fwd ms | fwd+bwd ms | ms / 1k tokens in | time vs {first['frames']} "
          f"frames | tokens vs {first['frames']} frames | fwd+bwd GFLOP | GFLOP/s | {label} | above model MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['frames']} | {r['tokens_in']} | {r['tokens_out']} | {r['fwd_ms']:.0f} | {r['step_ms']:.0f} | "
              f"{r['step_ms'] / r['tokens_in'] * 1e3:.1f} | {r['step_ms'] / first['step_ms']:.2f}x | "
              f"{r['tokens_in'] / first['tokens_in']:.0f}x | {r['flops'] / 1e9:.0f} | "
              f"{r['flops'] / r['step_ms'] / 1e6:.0f} | {r['peak_mib'] - base:.0f} | "
              f"{r['peak_mib'] - r['model_mib']:.0f} |")


# -- 3. against the official module's shape ------------------------------------------------------------------------

# Ours at the official module's parameter count (within a few percent): one TTA stack with per-scale queries (as the
# official has one stack) and MLPs a quarter of the width (it has none).
EQUAL_PARAMETERS = {"tta_weights": "shared", "mlp_ratio": 0.25}


@dataclass
class Entry:
    """One module configuration of a side-by-side comparison."""

    label: str
    impl: str = "ours"  # or "official" (its shape, _linvt_official_shape.py)
    dtype: str = "fp32"
    overrides: dict = field(default_factory=dict)  # LinVTConfig fields
    tokens: int | None = None  # visual tokens per frame (None: --tokens)


VS_OFFICIAL = [
    Entry("official shape", "official"),
    Entry("official shape, bf16 autocast", "official", "bf16"),
    Entry("ours, defaults"),
    Entry("ours, equal parameters", overrides=EQUAL_PARAMETERS),
    Entry("ours, equal parameters + checkpoint_svr", overrides={**EQUAL_PARAMETERS, "checkpoint_svr": True}),
    Entry("ours, equal parameters + checkpoint_svr, bf16 autocast", dtype="bf16",
          overrides={**EQUAL_PARAMETERS, "checkpoint_svr": True}),
]
HOST_POOLING = [  # LLaVA-OneVision's SigLIP grid (27 x 27) and its 2x2-pooled video path (14 x 14)
    Entry("729 tokens per frame (model.host_pooling=false, the default)", tokens=729),
    Entry("196 tokens per frame (model.host_pooling=true)", tokens=196),
]


def entry_args(args: argparse.Namespace, entry: Entry) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "impl": entry.impl, "dtype": entry.dtype,
                                 "overrides": json.dumps(entry.overrides), "tokens": entry.tokens or args.tokens})


def compare(args: argparse.Namespace, entries: list[Entry]) -> None:
    """Activation memory per input token (slope between two frame counts, fresh processes) and step time
    (interleaved rounds, one process) of each entry; ratios against the first entry."""
    device = torch.device(args.device)
    low, high = sorted(args.frames)[0], sorted(args.frames)[-1]
    if low == high:
        raise SystemExit("a comparison needs two frame counts (--frames LOW HIGH): memory per token is the slope")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; dim {args.dim}, "
          f"{args.layers} layers, {args.heads} heads, top-k {args.top_k}, {args.text_tokens} text tokens; memory "
          f"slope between {low} and {high} frames; time at {high} frames, median of {args.repeats} interleaved "
          f"rounds after {args.warmup} warm-up round(s)")
    configs = [entry_args(args, entry) for entry in entries]
    memory = []
    for entry, config in zip(entries, configs, strict=True):
        rows = [run_child(config, frames) for frames in (low, high)]
        failed = [r["error"] for r in rows if "error" in r]
        if failed:
            raise SystemExit(f"{entry.label}: {failed[0]}")
        above = [r["peak_mib"] - r["model_mib"] for r in rows]
        per_token = (above[1] - above[0]) / ((high - low) * config.tokens * args.batch)
        memory.append({"params": rows[1]["params"], "above": above[1], "per_token": per_token,
                       "tokens_in": high * config.tokens * args.batch})
        print(f"# {entry.label}: {rows[1]['params'] / 1e6:.1f}M parameters, above model {above[0]:.0f} MiB at {low} "
              f"frames, {above[1]:.0f} MiB at {high}", flush=True)

    models = [build(config, device) for config in configs]
    inputs = [make_inputs(config, high, device) for config in configs]
    for model, x, config in zip(models, inputs, configs, strict=True):  # first call: thread pools, allocator
        fwd_bwd(model, x, DTYPES[config.dtype])
    times: list[list[float]] = [[] for _ in models]
    for r in range(args.warmup + args.repeats):
        reference = matmul_gflops(device)
        runs = [fwd_bwd(model, x, DTYPES[config.dtype])[2]
                for model, x, config in zip(models, inputs, configs, strict=True)]
        label = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}"
        print(f"# {label} (dense matmul {reference:.0f} GFLOP/s just before, load average {os.getloadavg()[0]:.1f}): "
              + ", ".join(f"{ms:.0f}" for ms in runs) + " ms", flush=True)
        if r >= args.warmup:
            for kept, ms in zip(times, runs, strict=True):
                kept.append(ms)
    step = [statistics.median(t) for t in times]
    print(f"\n| module | parameters | tokens in at {high} frames | above model MiB | MiB per input token | vs row 1 "
          f"| fwd+bwd ms | vs row 1 |")
    print("|---|---|---|---|---|---|---|---|")
    for entry, mem, ms in zip(entries, memory, step, strict=True):
        print(f"| {entry.label} | {mem['params'] / 1e6:.1f}M | {mem['tokens_in']} | {mem['above']:.0f} | "
              f"{mem['per_token']:.3f} | {mem['per_token'] / memory[0]['per_token']:.2f}x | {ms:.0f} | "
              f"{ms / step[0]:.2f}x |")


# -- 2. stage-2 step of a 7B-shaped host -----------------------------------------------------------------------------


def peak_flops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override * 1e12, f"{override:g} TFLOP/s (--peak-tflops)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    for key, tflops in PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12, f"{tflops:g} TFLOP/s dense bf16 ({name})"
    return None, f"unknown for {name!r}: pass --peak-tflops"


def host_step(device: torch.device, llm_shape: dict, linvt_cfg: LinVTConfig, frames: int, visual_tokens: int,
              text_tokens: int, prompt_tokens: int, steps: int, warmup: int, lora_r: int = 16,
              dtype: torch.dtype = torch.bfloat16) -> dict:
    """Time stage-2 training steps (see the module docstring) and count their FLOPs."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**llm_shape, tie_word_embeddings=False, rope_theta=1e6, max_position_embeddings=32768)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # weights born in bf16: 7.6B fp32 parameters would need 30 GB first
    try:
        with torch.device(device):
            llm = Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    llm.requires_grad_(False).eval()
    n_linear = sum(m.weight.numel() for m in llm.modules() if isinstance(m, nn.Linear))
    n_llm = sum(p.numel() for p in llm.parameters())
    inject_adapter_in_model(LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05,
                                       target_modules=LORA_TARGETS), llm)
    lora = [p for p in llm.parameters() if p.requires_grad]
    for p in lora:
        p.data = p.data.float()  # fp32 master weights, as for LinVT; autocast runs them in bf16
    n_lora = sum(p.numel() for p in lora)
    linvt = LinVT(linvt_cfg).to(device).train()
    optimizer = torch.optim.AdamW([*linvt.parameters(), *lora], lr=1e-5, fused=device.type == "cuda")

    d = cfg.hidden_size
    visual = torch.randn(1, frames, visual_tokens, d, device=device, dtype=dtype) * 0.02
    frame_mask = torch.ones(1, frames, dtype=torch.bool, device=device)
    ids = torch.randint(cfg.vocab_size, (1, text_tokens), device=device)
    m = linvt_cfg.num_output_tokens
    labels = torch.cat([torch.full((1, m + prompt_tokens), -100, device=device), ids[:, prompt_tokens:]], 1)

    def video_tokens() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            text = llm.get_input_embeddings()(ids)
        return text, linvt(visual, frame_mask, text[:, :prompt_tokens], None).tokens

    def step() -> None:
        with autocast(device, dtype):
            text, video = video_tokens()
            embeds = torch.cat([video.to(text.dtype), text], 1)
            loss = llm(inputs_embeds=embeds, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    with FlopCounterMode(display=False) as counter:  # LinVT alone, forward + backward
        with autocast(device, dtype):
            _, video = video_tokens()
        video.float().square().mean().backward()
    linvt_flops = counter.get_total_flops()
    optimizer.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        step()
    t = m + text_tokens
    layers = cfg.num_hidden_layers
    llm_flops = 4 * (n_linear + n_lora) * t + 2 * n_lora * t + 6 * layers * t * t * d
    return {"step_s": statistics.median(times), "seq": t, "visual_in": frames * visual_tokens,
            "n_llm": n_llm, "n_linear": n_linear, "n_lora": n_lora,
            "n_linvt": sum(p.numel() for p in linvt.parameters()), "llm_flops": llm_flops,
            "linvt_flops": linvt_flops, "model_flops": llm_flops + linvt_flops,
            "counted_flops": counter.get_total_flops(), "peak_gib": peak}


def gpu_host(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        print("--gpu-host: skipped, it needs CUDA (torch.cuda.is_available() is False); the 7B-shaped host alone "
              "holds 15 GB of bf16 weights")
        return
    device = torch.device("cuda")
    peak, peak_note = peak_flops(device, args.peak_tflops)
    linvt_cfg = linvt_config(args, dim=QWEN2_7B["hidden_size"], width=args.host_width)
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name(device)}; random Qwen2-7B-shaped LLM (bf16, "
          f"frozen, LoRA r {args.lora_r}) + LinVT (dim {linvt_cfg.dim}, width {linvt_cfg.inner}); {args.host_frames} "
          f"frames x {args.host_visual_tokens} visual tokens (vision encoder skipped), {args.host_text_tokens} text "
          f"tokens; median of {args.host_steps} steps after {args.warmup + 1} warm-up")
    r = host_step(device, QWEN2_7B, linvt_cfg, args.host_frames, args.host_visual_tokens, args.host_text_tokens,
                  args.host_prompt_tokens, args.host_steps, args.warmup + 1, args.lora_r)
    print(f"parameters: LLM {r['n_llm'] / 1e9:.2f}B (linear layers {r['n_linear'] / 1e9:.2f}B), LoRA "
          f"{r['n_lora'] / 1e6:.1f}M, LinVT {r['n_linvt'] / 1e6:.1f}M")
    print(f"step: {r['step_s'] * 1e3:.0f} ms = {1 / r['step_s']:.2f} steps/s, {r['seq'] / r['step_s']:.0f} LLM "
          f"tokens/s ({r['seq']} per step), {r['visual_in'] / r['step_s']:.0f} visual tokens in/s; peak memory "
          f"{r['peak_gib']:.1f} GiB")
    achieved = r["model_flops"] / r["step_s"]
    mfu = f"{achieved / peak:.1%}" if peak else "n/a"
    print(f"model FLOPs per step: {r['model_flops'] / 1e12:.2f} TFLOP (LLM {r['llm_flops'] / 1e12:.2f} by formula, "
          f"LinVT {r['linvt_flops'] / 1e12:.2f} counted); FlopCounterMode over a whole step: "
          f"{r['counted_flops'] / 1e12:.2f} TFLOP")
    print(f"achieved {achieved / 1e12:.1f} TFLOP/s; peak {peak_note}; MFU {mfu}")


# -- CLI -------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", help=f"frame counts (default {PAPER['frames']})")
    parser.add_argument("--tokens", type=int, help=f"visual tokens per frame (default {PAPER['tokens']})")
    parser.add_argument("--dim", type=int, help=f"LinVT width = the host's hidden size (default {PAPER['dim']})")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int,
                        help=f"timed rounds, one forward + backward per frame count (default {PAPER['repeats']})")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default: 1 on CUDA, 0 on CPU; either way "
                        "the smallest frame count runs once before)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: bf16 inputs under autocast, fp32 parameters")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--top-k", type=int, help=f"default {PAPER['top_k']}")
    parser.add_argument("--queries", type=int, nargs="+", default=[64, 32, 16])
    parser.add_argument("--variant", default=Variant.multi_c.value, choices=[v.value for v in Variant])
    parser.add_argument("--text-tokens", type=int, default=32, help="instruction tokens conditioning the TTA")
    host = parser.add_argument_group("--gpu-host: stage-2 step of a 7B-shaped host (CUDA)")
    host.add_argument("--gpu-host", action="store_true")
    host.add_argument("--host-frames", type=int, default=64)
    host.add_argument("--host-visual-tokens", type=int, default=196, help="per frame (729: SigLIP's full grid)")
    host.add_argument("--host-text-tokens", type=int, default=256, help="prompt + answer")
    host.add_argument("--host-prompt-tokens", type=int, default=32, help="the prompt (no loss; conditions LinVT)")
    host.add_argument("--host-width", type=int, default=896, help="LinVTConfig.width at dim 3584")
    host.add_argument("--host-steps", type=int, default=10)
    host.add_argument("--lora-r", type=int, default=16)
    host.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of the GPU (MFU's denominator)")
    parser.add_argument("--vs-official", action="store_true",
                        help="ours (defaults, at equal parameters, + checkpoint_svr, + bf16) against the official "
                        "module's shape: memory per input token and step time (--frames LOW HIGH, default 8 16)")
    parser.add_argument("--host-pooling", action="store_true",
                        help="729 against 196 tokens per frame (model.host_pooling), ours at its defaults "
                        "(--frames LOW HIGH, default 4 8)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["ours", "official"], default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)  # JSON LinVTConfig fields
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 1 if args.device == "cuda" else 0
    if args.vs_official and args.frames is None:
        args.frames = [2, 4] if args.quick else [8, 16]
    if args.host_pooling and args.frames is None:
        args.frames = [2, 4] if args.quick else [4, 8]
    for key, value in (QUICK if args.quick else PAPER).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    if args.child is not None:
        print(json.dumps(memory_child(args, args.child) if args.child else {"peak_mib": peak_rss_mb()}))
    elif args.gpu_host:
        gpu_host(args)
    elif args.vs_official:
        compare(args, VS_OFFICIAL)
    elif args.host_pooling:
        compare(args, HOST_POOLING)
    else:
        scaling(args)


if __name__ == "__main__":
    main()
