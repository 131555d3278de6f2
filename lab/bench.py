"""`python -m lab bench`: cost of every explainer as a ratio to one forward+backward pass on the same batch.

Text: the MiniLM classifier (the fine-tuned SST-2 checkpoint when cached, else the pretrained encoder with a fresh
head: timing does not depend on the weights) on a fixed batch of 16 x 128 tokens. Vision: a small ViT (16 images)
and ViT-B/16's shape (224 px, 14x14 patches, 12 blocks, random weights; 2 images): the paper-scale cost per image.
Decoder: a randomly initialised GPT-2-shaped causal LM of MiniLM's width, explained at its next-token prediction
(only the explainers that apply to it, `explainers.base.applies`).
Peak memory is the peak resident-set growth over one extra call (sampled every 5 ms, glibc set to return freed
memory at once; see `rss_tracks_live_memory`), so it is approximate.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import threading
import time

import psutil
import torch

from lab import config
from lab.explainers.base import EXPLAINERS, applies, explain
from lab.models.adapters import get_adapter, special_token_ids

SKIP_BY_DEFAULT = ("input_marginalization",)  # needs an MLM; benchmarked in its own notebook


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@contextlib.contextmanager
def rss_tracks_live_memory():
    """Make RSS track live tensors while measuring peak memory: glibc otherwise keeps freed large blocks (its mmap
    threshold grows after each free), so the RSS growth of a repeated call reads ~0. Small fixed mmap and trim
    thresholds turn that off; they slow allocation (fresh pages each time), so timing runs outside this block
    with thresholds near glibc's settled defaults. Linux/glibc only; elsewhere peak memory is a lower bound."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - not glibc
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    libc.malloc_trim(0)  # hand back what earlier runs left free, so this run starts from live memory
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's dynamic threshold ceiling on 64-bit
        libc.mallopt(M_TRIM_THRESHOLD, 64 * 2**20)


class PeakMemory:
    """Samples this process's RSS in a thread; `.peak_mb` is the growth over the starting RSS."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.process = interval, psutil.Process()

    def __enter__(self):
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = (self.peak - self.start) / 2**20


def _timed(fn, repeat: int, warmup: bool = True) -> tuple[float, float]:
    """(min seconds over `repeat` calls after a warm-up, peak RSS growth in MiB of one more call)."""
    return _timed_interleaved([fn], repeat, warmup)[0]


def _timed_interleaved(fns, repeat: int, warmup: bool = True) -> list[tuple[float, float]]:
    """`_timed` for several functions, their calls interleaved (a, b, a, b, ...) so that load drifting on a shared
    machine affects each the same; the min of the repeats is the run least disturbed (timeit's advice)."""
    if warmup:
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    peaks = []
    for fn in fns:
        with rss_tracks_live_memory(), PeakMemory() as mem:
            fn()
        peaks.append(mem.peak_mb)
    return [(min(spent), peak) for spent, peak in zip(times, peaks)]


def forward_backward(model, inputs, target) -> None:
    """The reference cost: one forward and one backward pass to the input embeddings."""
    adapter = get_adapter(model)
    prepared = adapter.prepare(inputs)
    embeds = adapter.embed(prepared).detach().requires_grad_(True)
    logits = adapter.forward(prepared, embeds=embeds).logits
    torch.autograd.grad(logits.gather(1, target[:, None]).sum(), embeds)


def forward_only(model, inputs) -> None:
    with torch.no_grad():
        get_adapter(model).forward(get_adapter(model).prepare(inputs), attentions=True)


def text_setup(batch: int = 16, length: int = 128, seed: int = 0):
    from lab.models.loading import load_classifier

    model = load_classifier("minilm", num_labels=2)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 29000, (batch, length), generator=gen)
    special = special_token_ids(model.config)  # [CLS]/[SEP] from the checkpoint's tokenizer
    if {"cls", "sep"} <= special.keys():
        ids[:, 0], ids[:, -1] = special["cls"], special["sep"]
    return "minilm-sst2-shaped", model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def decoder_setup(batch: int = 16, length: int = 128, seed: int = 0, layers: int = 6, width: int = 384,
                  vocab: int = 8192):
    """A GPT-2-shaped causal LM (MiniLM's depth and width, a smaller vocabulary) with random weights: timing does
    not depend on them."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_embd=width, n_layer=layers, n_head=max(1, width // 64),
                        n_positions=max(length, 8), bos_token_id=vocab - 1, eos_token_id=vocab - 1,
                        attn_implementation="eager")
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    return "gpt2-next-token", model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def vision_setup(batch: int = 16, seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=64, patch_size=8, hidden_size=192, num_hidden_layers=6, num_attention_heads=4,
                       intermediate_size=384, num_labels=8, attn_implementation="eager")
    model = ViTForImageClassification(config).eval()
    return "vit-64px-p8", model, {"pixel_values": torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))}


def vit_b16_setup(batch: int = 2, seed: int = 0):
    """ViT-B/16's shape (224 px, 14x14 grid, 12 blocks of width 768), random weights: the paper-scale cost."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    model = ViTForImageClassification(ViTConfig(num_labels=1000, attn_implementation="eager")).eval()
    pixels = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    return "vit-b16-224px", model, {"pixel_values": pixels}


def method_params(name: str, model) -> dict:
    if name == "mask_lrp":
        cfg = model.config
        return {"head_mask": torch.ones(cfg.num_hidden_layers, cfg.num_attention_heads)}
    return {}


def captum_ig(model, inputs, target, steps: int, internal_batch_size: int | None):
    """captum's IntegratedGradients used the plain way (model weights left trainable), from the same [PAD]
    baseline; masks and token types go through additional_forward_args, which captum repeats per step."""
    from captum.attr import IntegratedGradients

    adapter = get_adapter(model)
    prepared = adapter.prepare(inputs)
    extra_keys = [k for k in prepared if k not in ("input_ids", "pixel_values")]

    def forward(embeds, *extra):
        return adapter.forward(dict(zip(extra_keys, extra)), embeds=embeds).logits

    embeds = adapter.embed(prepared).detach()
    IntegratedGradients(forward).attribute(
        embeds, baselines=adapter.baseline_embed(prepared), target=target, n_steps=steps,
        additional_forward_args=tuple(prepared[k] for k in extra_keys) or None, internal_batch_size=internal_batch_size)


def bench_model(label, model, inputs, methods, repeat: int, ig_steps: int = 20) -> list[dict]:
    batch = next(iter(inputs.values())).shape[0]
    with torch.no_grad():
        target = get_adapter(model).forward(get_adapter(model).prepare(inputs)).logits.argmax(-1)
    ref_fb, mem_fb = _timed(lambda: forward_backward(model, inputs, target), repeat)
    ref_f, _ = _timed(lambda: forward_only(model, inputs), repeat)
    rows = [dict(model=label, method="(forward+backward)", s_per_example=ref_fb / batch, ratio_fb=1.0,
                 ratio_forward=ref_fb / ref_f, peak_mb=mem_fb)]
    adapter = get_adapter(model)
    modality = adapter.modality
    for name in methods:
        if applies(EXPLAINERS[name], adapter) is not None:
            continue
        params = method_params(name, model)
        if name == "integrated_gradients":
            params.update(steps=ig_steps, internal_batch_size=batch * 10)
        slow = name in ("leave_one_out", "erasure", "integrated_gradients", "input_marginalization")
        reps = 2 if slow else repeat  # slow methods: seconds per call, so no warm-up is needed
        # the reference is re-timed right before each method: on a shared machine the load drifts over a
        # run, and a ratio is only meaningful between timings taken under the same load
        ref_fb, _ = _timed(lambda: forward_backward(model, inputs, target), repeat)
        ref_f, _ = _timed(lambda: forward_only(model, inputs), repeat)
        fns = [lambda: explain(model, inputs, name, target=target, **params)]
        labels = [name]
        if name == "integrated_gradients" and modality == "text":  # ours and captum's, interleaved
            fns.append(lambda: captum_ig(model, inputs, target, ig_steps, batch * 10))
            labels.append("captum IntegratedGradients")
            reps = max(reps, 3)
        for label_, (seconds, peak) in zip(labels, _timed_interleaved(fns, reps, warmup=not slow)):
            rows.append(dict(model=label, method=label_, s_per_example=seconds / batch, ratio_fb=seconds / ref_fb,
                             ratio_forward=seconds / ref_f, peak_mb=peak, reference_s_per_example=ref_fb / batch))
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'model':20s} {'method':28s} {'ms/example':>11s} {'x fwd+bwd':>10s} {'x fwd':>8s} {'peak MB':>8s}"]
    for r in rows:
        lines.append(f"{r['model']:20s} {r['method']:28s} {1000 * r['s_per_example']:11.2f} {r['ratio_fb']:10.2f} "
                     f"{r['ratio_forward']:8.2f} {r['peak_mb']:8.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab bench", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=None, help="explainers to time (default: all)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ig-steps", type=int, default=20, help="integrated-gradients steps (ours and captum's)")
    parser.add_argument("--no-vision", action="store_true")
    parser.add_argument("--no-text", action="store_true")
    parser.add_argument("--no-decoder", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: $LAB_NUM_THREADS, else all cores); 1 is steadier on a "
                             "shared machine")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    methods = args.methods or [m for m in EXPLAINERS if m not in SKIP_BY_DEFAULT]
    unknown = [m for m in methods if m not in EXPLAINERS]
    if unknown:
        parser.error(f"unknown explainers {unknown}; available: {', '.join(EXPLAINERS)}")
    threads = config.threads(args.threads) or torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, psutil.cpu_count(logical=True) or 1)))
    rows = []
    setups = ([] if args.no_text else [lambda: text_setup(args.batch, args.length)]) + \
             ([] if args.no_vision else [lambda: vision_setup(args.batch), lambda: vit_b16_setup()]) + \
             ([] if args.no_decoder else [lambda: decoder_setup(args.batch, args.length)])
    for setup in setups:
        label, model, inputs = setup()
        rows += bench_model(label, model, inputs, methods, args.repeat, ig_steps=args.ig_steps)
        print(format_rows([r for r in rows if r["model"] == label]), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0
