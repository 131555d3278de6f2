"""Shared by the reference-equivalence tests: tiny models and inputs stored in the fixtures that the generators
under tools/ write by running the authors' code (LXT, Chefer et al., Mask-LRP, BERT-LRP)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(*parts: str) -> dict:
    return json.loads(FIXTURES.joinpath(*parts).read_text())


def bert_from_fixture(fixture: dict):
    """The fixture's BertForSequenceClassification in fp64 with its stored weights (position/token-type id buffers
    are the only keys allowed missing)."""
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(**fixture["config"], attn_implementation="eager"))
    model = model.to(torch.float64).eval()
    shapes = model.state_dict()
    state = {k: torch.tensor(v, dtype=torch.float64).reshape(shapes[k].shape) for k, v in fixture["weights"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    return model


def padded_batch(examples) -> dict:
    """Right-padded input_ids / attention_mask / token_type_ids of the examples' input_ids."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(examples):
        ids[i, :len(e["input_ids"])] = torch.tensor(e["input_ids"])
        mask[i, :len(e["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
