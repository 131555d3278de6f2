"""A small ViTForImageClassification trained from scratch on the procedural shapes (lab.data.images), cached.

No pretrained ViT and no ImageNet exist offline, so the Chefer notebook trains its own ViT. The model is an
unmodified Hugging Face `ViTForImageClassification` built from a `ViTConfig` defined here, with eager attention
(the only implementation that returns attention probabilities); everything downstream reads the patch grid
from the config, so the same code runs on `google/vit-base-patch16-224`.

    vit = train_vit("default")        # trains once (progress bar), then loads from cache_dir()/models/<key>
    vit.model, vit.metrics["test_accuracy"], vit.path

Profiles: smoke (seconds: 32-px images, 4x4 grid, 2 tiny blocks); default (48-px images, 8x8 grid of 6-px patches,
4 blocks of width 96, 576 steps of 64 fresh "multi" scenes: 99.4 % test accuracy after 152 s of CPU, 8 min wall on
one loaded core); paper (64-px images, 8x8 grid of 8-px patches, 6 blocks of width 192, longer training; not run
here).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lab import cache
from lab.config import torch_threads
from lab.data import images
from lab.models.adapters import ViTAdapter

VIT_VERSION = 1  # bump when the training procedure changes, so old cached checkpoints are not reused

log = logging.getLogger("lab.models")  # lab.models.training gives it a "[lab] ..." stderr handler

# Architecture + training per profile. `train_size` images per epoch, each epoch freshly generated.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                  epochs=1, train_size=512, batch_size=64, lr=2e-3, weight_decay=0.05, warmup=0.1, test_size=128,
                  scene=images.DEFAULT_SCENE),
    "default": dict(image_size=48, patch_size=6, hidden_size=96, num_layers=4, num_heads=4, intermediate_size=192,
                    epochs=1, train_size=36864, batch_size=64, lr=1e-3, weight_decay=0.05, warmup=0.05,
                    test_size=1000, scene=images.DEFAULT_SCENE),
    "paper": dict(image_size=64, patch_size=8, hidden_size=192, num_layers=6, num_heads=4, intermediate_size=384,
                  epochs=6, train_size=40960, batch_size=64, lr=1e-3, weight_decay=0.05, warmup=0.05,
                  test_size=2000, scene=images.DEFAULT_SCENE),
}
ARCH_KEYS = ("image_size", "patch_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")


class VitProfileError(ValueError):
    pass


@dataclass
class TrainedViT:
    model: nn.Module
    settings: dict
    metrics: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def config(self):
        return self.model.config


def vit_settings(profile: str = "default", **overrides) -> dict:
    """The profile's settings with `overrides` applied (unknown names are an error)."""
    if profile not in PROFILES:
        raise VitProfileError(f"unknown ViT profile {profile!r}; choose one of {', '.join(PROFILES)}")
    settings = dict(PROFILES[profile])
    unknown = set(overrides) - set(settings)
    if unknown:
        raise VitProfileError(f"unknown ViT setting(s) {sorted(unknown)}; known: {', '.join(settings)}")
    settings.update(overrides)
    if settings["scene"] not in images.SCENES:
        raise VitProfileError(f"unknown scene {settings['scene']!r}; choose one of {', '.join(images.SCENES)}")
    if settings["image_size"] % settings["patch_size"]:
        raise VitProfileError(f"image_size {settings['image_size']} is not a multiple of patch_size "
                              f"{settings['patch_size']}")
    return settings


def vit_config(image_size: int, patch_size: int, hidden_size: int, num_layers: int, num_heads: int,
               intermediate_size: int, num_labels: int = len(images.CLASS_NAMES)):
    """The repository's ViTConfig (no dropout; eager attention so attention probabilities are returned)."""
    from transformers import ViTConfig

    return ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=3, hidden_size=hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, intermediate_size=intermediate_size,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, qkv_bias=True,
        num_labels=num_labels, id2label=dict(enumerate(images.CLASS_NAMES[:num_labels])),
        label2id={n: i for i, n in enumerate(images.CLASS_NAMES[:num_labels])}, attn_implementation="eager",
    )


def build_vit(settings: dict, seed: int = 0) -> nn.Module:
    from transformers import ViTForImageClassification

    torch.manual_seed(seed)
    return ViTForImageClassification(vit_config(**{k: settings[k] for k in ARCH_KEYS}))


def cache_path(settings: dict, seed: int) -> Path:
    """The checkpoint folder: every setting is in the key; the scene only when it is not "single", so checkpoints
    trained before scenes existed (all on "single" images) keep their key."""
    keyed = {k: v for k, v in settings.items() if (k, v) != ("scene", "single")}
    key = cache.cache_key(f"vit-shapes-{settings['image_size']}px", version=VIT_VERSION, data=images.DATA_VERSION,
                          seed=seed, **keyed)
    return cache.cached_dir("models", key)


@torch.no_grad()
def accuracy(model: nn.Module, dataset: images.ImageDataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` on `dataset` (fraction in [0, 1])."""
    was_training = model.training
    model.eval()
    correct = sum((model(pixel_values=x).logits.argmax(-1) == y).sum().item() for x, y in dataset.batches(batch_size))
    model.train(was_training)
    return correct / len(dataset)


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (multiplier of the base learning rate)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _train(model: nn.Module, s: dict, seed: int, progress: bool) -> dict:
    from tqdm.auto import tqdm

    steps_per_epoch = math.ceil(s["train_size"] / s["batch_size"])
    total = s["epochs"] * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: _schedule(t, total, max(1, int(s["warmup"] * total))))
    model.train()
    bar = tqdm(total=total, desc=f"training ViT ({s['image_size']}px)", disable=not progress, leave=False)
    ema = None
    for epoch in range(s["epochs"]):
        for x, y in images.training_batches(s["train_size"], s["batch_size"], seed, s["image_size"], epoch,
                                         scene=s["scene"]):
            loss = nn.functional.cross_entropy(model(pixel_values=x).logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{ema:.3f}")
    bar.close()
    model.eval()
    return {"final_loss": ema, "steps": total}


def train_vit(profile: str = "default", seed: int = 0, force: bool = False, progress: bool = True,
              threads: int | None = None, **overrides) -> TrainedViT:
    """Train (or load from the cache) the profile's ViT; metrics include test accuracy and training time."""
    s = vit_settings(profile, **overrides)
    path = cache_path(s, seed)
    if not force and cache.verify(path):
        return load_vit(path)
    with torch_threads(threads):  # the one thread policy (lab.config), restored afterwards
        log.info(f"training a {s['num_layers']}-block ViT on {s['epochs']}x{s['train_size']} procedural images "
                 f"({profile} profile); cached afterwards in {path}")
        model = build_vit(s, seed)
        wall, cpu = time.perf_counter(), time.process_time()
        info = _train(model, s, seed, progress)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        test = images.make_dataset("test", s["test_size"], seed, image_size=s["image_size"], scene=s["scene"])
        metrics = {"profile": profile, "seed": seed, "test_accuracy": accuracy(model, test), "test_size": len(test),
                   "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "threads": torch.get_num_threads(),
                   "parameters": sum(p.numel() for p in model.parameters()), **info}
        log.info(f"ViT test accuracy {metrics['test_accuracy']:.3f} after {wall:.0f}s wall ({cpu:.0f}s CPU)")
    with cache.atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        (tmp / "settings.json").write_text(json.dumps(s, indent=1))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    cache.record_checkpoint(path)
    return TrainedViT(model, s, metrics, path)


def load_vit(path: str | Path) -> TrainedViT:
    """A ViT saved by `train_vit` (eval mode, eager attention; refuses an incomplete or corrupt one)."""
    from transformers import ViTForImageClassification

    path = Path(path)
    if not cache.verify(path):
        raise FileNotFoundError(f"no complete, intact ViT checkpoint at {path}; train it with "
                                "lab.models.vit.train_vit()")
    model = ViTForImageClassification.from_pretrained(path, attn_implementation="eager").eval()
    cache.record_checkpoint(path)
    settings = {"scene": "single", **json.loads((path / "settings.json").read_text())}  # saved before scenes
    metrics = json.loads((path / "metrics.json").read_text())
    return TrainedViT(model, settings, metrics, path)


def load_checkpoint(name_or_path: str | Path) -> nn.Module:
    """Any Hugging Face ViT checkpoint (a hub name when online, or a local folder) as an eval-mode
    `ViTForImageClassification` with eager attention: google/vit-*, facebook/deit-* without distillation.
    Other architectures (e.g. distilled DeiT) are refused in one line."""
    from transformers import AutoConfig, ViTForImageClassification

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise VitProfileError(f"cannot load checkpoint {str(name_or_path)!r}: {str(exc).splitlines()[0]}") from None
    if config.model_type != "vit":
        raise VitProfileError(f"checkpoint {str(name_or_path)!r} is a {config.model_type!r} model; only ViT "
                              "classifiers are supported (google/vit-*, facebook/deit-* without distillation)")
    return ViTForImageClassification.from_pretrained(name_or_path, attn_implementation="eager").eval()


def load_model(profile: str = "default", seed: int = 0, checkpoint: str | Path | None = None,
               progress: bool = True, scene: str | None = None) -> tuple[nn.Module, dict]:
    """(eval-mode ViT classifier, info): `checkpoint` (`load_checkpoint`) when given, else the profile's ViT trained
    here or loaded from the cache (`train_vit`; on `scene` images instead of the profile's), with its training
    metrics, checkpoint path and training scene."""
    if checkpoint:
        return load_checkpoint(checkpoint), {"checkpoint": str(checkpoint)}
    trained = train_vit(profile, seed=seed, progress=progress, **({"scene": scene} if scene else {}))
    return trained.model.eval(), dict(trained.metrics, checkpoint=str(trained.path), scene=trained.settings["scene"])


def describe(model: nn.Module) -> dict:
    """Image size (pixels per side), patch size, patch grid, blocks, width and heads of a ViT classifier."""
    c = model.config
    size = int(c.image_size[0] if isinstance(c.image_size, (tuple, list)) else c.image_size)
    return dict(image_size=size, patch_size=c.patch_size, grid=ViTAdapter(model).grid, num_layers=c.num_hidden_layers,
                hidden_size=c.hidden_size, num_heads=c.num_attention_heads)


def label_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The name of every class `model` predicts: `names` (the dataset's), then the model's own labels beyond them."""
    id2label = getattr(model.config, "id2label", {})
    return [*names, *(str(id2label.get(i, i)) for i in range(len(names), model.config.num_labels))]
