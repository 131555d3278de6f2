"""Tiny random Hugging Face classifiers and batches for tests (offline, built from configs, seconds).

A plain module (not a conftest) so any test can `from tests.models import tiny_bert, tiny_vit, text_batch`.
Token ids follow a BERT-like convention: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4; content ids are >= 5.
"""
from __future__ import annotations

import torch

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
VOCAB = 64
FIRST_CONTENT_ID = 5
# Larger than HF's 0.02 so that random tiny models have peaked attention and non-negligible gradients
# (with 0.02 every map is nearly uniform and most attributions are ~0, which makes tests weak).
INIT_RANGE = 0.3


def _finish(model, dtype, attn_implementation):
    model = model.to(dtype)
    if attn_implementation != "eager":
        model.set_attn_implementation(attn_implementation)
    return model.eval()


def tiny_bert(num_labels: int = 3, dtype=torch.float64, seed: int = 0, layers: int = 2, heads: int = 4,
              hidden: int = 16, attn_implementation: str = "eager", max_positions: int = 32,
              init_range: float = INIT_RANGE):
    """An eval-mode BertForSequenceClassification with random weights (vocab 64, eager attention by default)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=max_positions, num_labels=num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=init_range, pad_token_id=PAD_ID,
        cls_token_id=CLS_ID, sep_token_id=SEP_ID, unk_token_id=UNK_ID, mask_token_id=MASK_ID,
        attn_implementation="eager",
    )
    return _finish(BertForSequenceClassification(config), dtype, attn_implementation)


def tiny_roberta(num_labels: int = 3, dtype=torch.float64, seed: int = 0, layers: int = 2, heads: int = 4,
                 hidden: int = 16, attn_implementation: str = "eager", max_positions: int = 34,
                 init_range: float = INIT_RANGE):
    """An eval-mode RobertaForSequenceClassification (positions offset by pad_token_id + 1, like RoBERTa).

    Uses the same ids as `tiny_bert` ([CLS]/<s>=2, [SEP]/</s>=3, pad 0) so `text_batch` works for both.
    """
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=max_positions, num_labels=num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=init_range, pad_token_id=PAD_ID,
        bos_token_id=CLS_ID, eos_token_id=SEP_ID, cls_token_id=CLS_ID, sep_token_id=SEP_ID,
        unk_token_id=UNK_ID, mask_token_id=MASK_ID, type_vocab_size=1, attn_implementation="eager",
    )
    return _finish(RobertaForSequenceClassification(config), dtype, attn_implementation)


def tiny_vit(num_labels: int = 3, dtype=torch.float64, seed: int = 0, layers: int = 2, heads: int = 4,
             hidden: int = 16, image_size: int = 16, patch_size: int = 4, attn_implementation: str = "eager",
             init_range: float = INIT_RANGE):
    """An eval-mode ViTForImageClassification: 16x16x3 images, 4x4 patches (a 4x4 grid + [CLS] = 17 tokens)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=3, hidden_size=hidden,
        num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden, num_labels=num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=init_range,
        attn_implementation="eager",
    )
    return _finish(ViTForImageClassification(config), dtype, attn_implementation)


def text_batch(lengths=(7, 4, 5), vocab: int = VOCAB, seed: int = 0) -> dict:
    """A right-padded batch: [CLS] content... [SEP] per row (row i has lengths[i] tokens in all), pads 0.

    Returns dict(input_ids, attention_mask, token_type_ids) of LongTensors [len(lengths), max(lengths)].
    """
    if min(lengths) < 2:
        raise ValueError("every row needs at least [CLS] and [SEP] (length >= 2)")
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, 0] = CLS_ID
        ids[i, 1:n - 1] = torch.randint(FIRST_CONTENT_ID, vocab, (n - 2,), generator=gen)
        ids[i, n - 1] = SEP_ID
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def image_batch(n: int = 2, size: int = 16, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Random pixel values [n, 3, size, size] (roughly normalised)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen).to(dtype)


def unbatch(batch: dict, i: int) -> dict:
    """Row i of a padded text batch with its padding removed, as a batch of one."""
    n = int(batch["attention_mask"][i].sum())
    return {k: v[i:i + 1, :n] for k, v in batch.items()}


def with_output_hooks(model):
    """Install transformers' output-capturing hooks now (transformers 5 adds them, inactive, to the attention and
    layer modules on the first forward that returns attentions or hidden states, and never removes them), so that
    before/after hook comparisons see only what an explainer does."""
    from transformers.utils.output_capturing import maybe_install_capturing_hooks

    maybe_install_capturing_hooks(model)
    return model
