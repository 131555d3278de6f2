"""Special-token ids of a model: from the tokenizer that made the inputs, the config, and the tokenizer saved with
the checkpoint (never from a hard-coded vocabulary)."""
from __future__ import annotations

import functools

SPECIAL_TOKENS = ("cls", "sep", "pad", "bos", "eos", "unk", "mask")


@functools.lru_cache(maxsize=16)
def _tokenizer_special_ids(path: str) -> tuple[tuple[str, int], ...]:
    """Special-token ids of the tokenizer saved with a local checkpoint (never downloads; () if none)."""
    if not path:
        return ()
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception:  # no tokenizer files next to the weights: the config alone decides
        return ()
    return tuple((k, int(getattr(tokenizer, f"{k}_token_id"))) for k in SPECIAL_TOKENS
                 if getattr(tokenizer, f"{k}_token_id", None) is not None)


def special_token_ids(config, tokenizer=None) -> dict[str, int]:
    """{"cls": id, "sep": id, "pad": ..., "bos", "eos", "unk", "mask"}: the ids of `tokenizer` if given, else those
    the config names, completed from the tokenizer saved with the checkpoint (BERT configs name only [PAD]; its
    tokenizer knows [CLS]/[SEP]/...)."""
    ids = dict(_tokenizer_special_ids(str(getattr(config, "_name_or_path", "") or "")))
    for kind in SPECIAL_TOKENS:
        tid = getattr(config, f"{kind}_token_id", None)
        if isinstance(tid, int):
            ids[kind] = tid
    for kind in SPECIAL_TOKENS if tokenizer is not None else ():
        tid = getattr(tokenizer, f"{kind}_token_id", None)
        if tid is not None:
            ids[kind] = int(tid)
    return ids
