"""Models: loading checkpoints by alias/path/hub name, and fine-tuning with a cache.

    from lab.models import fine_tune_preset, load_classifier, predict_proba
    ft = fine_tune_preset("sst2", "default")        # cached in cache_dir()/models/<key>
"""
from .loading import (DEFAULT_ENCODER, ModelUnavailableError, classifier_from_config, load_classifier,
                      load_tokenizer, resolve_model_name)
from .training import (DEFAULTS, PRESETS, FineTuned, checkpoint_path, evaluate, fine_tune, fine_tune_preset,
                       load_fine_tuned, predict_proba, seed_everything, torch_threads)

__all__ = [
    "DEFAULTS",
    "DEFAULT_ENCODER",
    "PRESETS",
    "FineTuned",
    "ModelUnavailableError",
    "checkpoint_path",
    "classifier_from_config",
    "evaluate",
    "fine_tune",
    "fine_tune_preset",
    "load_classifier",
    "load_fine_tuned",
    "load_tokenizer",
    "predict_proba",
    "resolve_model_name",
    "seed_everything",
    "torch_threads",
]
