"""Model randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): a copy of a classifier whose top
blocks and head are re-initialised, to see whether an explainer's maps depend on the learned weights."""
from __future__ import annotations

import copy

import torch

from lab.models.adapters import get_adapter


def randomised_copy(model: torch.nn.Module, n_layers: int = 2, seed: int = 0) -> torch.nn.Module:
    """A deep copy of `model` with its top `n_layers` blocks and its classification head (pooler / final
    LayerNorm included) re-initialised: Linear weights ~ N(0, initializer_range), biases 0, LayerNorm 1/0
    (Adebayo et al. 2018's cascading randomisation, from the top). The original model is not touched."""
    clone = copy.deepcopy(model).eval()
    adapter = get_adapter(clone)
    n_layers = max(1, min(int(n_layers), len(adapter.layers)))
    std = float(getattr(clone.config, "initializer_range", 0.02))
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for block in [*adapter.layers[-n_layers:], *adapter.head_modules()]:
            for module in block.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen, dtype=module.weight.dtype) * std)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, torch.nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
    return clone
