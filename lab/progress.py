"""The one progress bar of `lab`: tqdm (notebook widget or terminal), silent when not enabled."""
from __future__ import annotations

from typing import Iterable


def progress(iterable: Iterable, desc: str | None = None, enabled: bool = True, *, total: int | None = None,
             leave: bool = False, **kw):
    """``iterable`` wrapped in a tqdm bar labelled ``desc`` (removed when done unless ``leave``); when not
    ``enabled`` the bar is disabled but still iterates and accepts ``set_postfix``."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=leave, dynamic_ncols=True, **kw)
