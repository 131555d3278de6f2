"""`lab.explainers.batch.explain_many`: the one batching loop (batched == one by one, padding-safe, memoised)."""
import pytest
import torch

from lab import cache
from lab.explainers import ExplainerError
from lab.explainers.batch import ExplanationSet, batch_order, explain_many, predict_logits, trim_rows
from tests.models import text_batch, tiny_bert, tiny_vit

LENGTHS = (7, 3, 6, 4, 5)


@pytest.fixture(scope="module")
def bert():
    return tiny_bert(num_labels=2, dtype=torch.float64)


@pytest.fixture(scope="module")
def batch():
    return text_batch(lengths=LENGTHS, seed=2)


@pytest.mark.parametrize("method", ["chefer", "saliency", "rollout"])
def test_batched_equals_one_by_one(bert, batch, method):
    targets = torch.tensor([0, 1, 1, 0, 1])
    many = explain_many(bert, batch, method, targets, batch_size=2)
    assert isinstance(many, ExplanationSet) and len(many) == 5
    assert many.scores.shape == batch["input_ids"].shape and many.targets.tolist() == targets.tolist()
    for i in range(5):
        one = explain_many(bert, trim_rows(batch, [i]), method, targets[i:i + 1], batch_size=1)
        w = LENGTHS[i]
        assert torch.allclose(many.scores[i, :w], one.scores[0, :w], atol=1e-5)
        assert torch.allclose(many.logits[i], one.logits[0], atol=1e-5)
    assert (many.scores[batch["attention_mask"] == 0] == 0).all()  # padding scores nothing
    assert many.valid.sum(1).tolist() == list(LENGTHS)
    assert many.special[batch["attention_mask"] == 0].all()
    assert torch.allclose(many.probabilities.sum(1), torch.ones(5))
    assert len(many.seconds) == 3 and many.total_seconds >= 0


def test_sorted_batches_keep_the_input_order(bert, batch):
    assert [b.tolist() for b in batch_order(batch, 2, sort=True)] == [[0, 2], [4, 3], [1]]
    assert [b.tolist() for b in batch_order(batch, 2, sort=False)] == [[0, 1], [2, 3], [4]]
    a = explain_many(bert, batch, "chefer", 1, batch_size=2, sort=True)
    b = explain_many(bert, batch, "chefer", 1, batch_size=2, sort=False)
    assert torch.allclose(a.scores, b.scores, atol=1e-5) and a.targets.tolist() == [1] * 5


def test_default_target_is_the_prediction_and_tokens(bert, batch):
    class Tok:
        def convert_ids_to_tokens(self, ids):
            return [f"t{i}" for i in ids]

    got = explain_many(bert, batch, "rollout", tokenizer=Tok(), batch_size=4)
    assert got.targets.tolist() == predict_logits(bert, batch).argmax(-1).tolist()
    assert [len(t) for t in got.tokens] == list(LENGTHS) and got.tokens[1][0] == f"t{int(batch['input_ids'][1, 0])}"


def test_vision_maps(bert):
    vit = tiny_vit(num_labels=3, dtype=torch.float64)
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    many = explain_many(vit, images, "rollout", [0, 1, 2], batch_size=2)
    single = explain_many(vit, images[2:], "rollout", [2], batch_size=1)
    assert many.valid is None and many.scores.dim() == 3
    assert torch.allclose(many.scores[2], single.scores[0], atol=1e-5)
    assert torch.allclose(predict_logits(vit, {"pixel_values": images}, batch_size=2), many.logits, atol=1e-5)


def test_memoised_hit_and_miss_on_key_change(bert, batch, lab_dirs, monkeypatch):
    from lab.explainers import batch as mod

    calls = []
    real = mod._compute
    monkeypatch.setattr(mod, "_compute", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    first = explain_many(bert, batch, "saliency", 0, batch_size=2, use_cache=True)
    again = explain_many(bert, batch, "saliency", 0, batch_size=2, use_cache=True)
    assert calls == ["saliency"] and torch.equal(first.scores, again.scores)
    explain_many(bert, batch, "saliency", 1, batch_size=2, use_cache=True)  # other targets
    explain_many(bert, batch, "integrated_gradients", 0, batch_size=2, use_cache=True, steps=2)  # other method
    explain_many(bert, batch, "integrated_gradients", 0, batch_size=2, use_cache=True, steps=2)  # hit
    explain_many(bert, batch, "integrated_gradients", 0, batch_size=2, use_cache=True, steps=3)  # other parameters
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][0, 1] += 1
    explain_many(bert, other, "saliency", 0, batch_size=2, use_cache=True)  # other inputs
    changed = tiny_bert(num_labels=2, dtype=torch.float64, seed=1)
    explain_many(changed, batch, "saliency", 0, batch_size=2, use_cache=True)  # other weights
    assert len(calls) == 6
    monkeypatch.setattr(cache, "code_digest", lambda: "other-code")  # other code
    explain_many(bert, batch, "saliency", 0, batch_size=2, use_cache=True)
    assert len(calls) == 7
    explain_many(bert, batch, "saliency", 0, batch_size=2)  # not memoised
    assert len(calls) == 8


def test_bad_input_is_one_clear_error(bert, batch):
    with pytest.raises(ExplainerError, match="3 targets for 5 examples"):
        explain_many(bert, batch, "saliency", [0, 1, 0])
    with pytest.raises(ExplainerError, match="input_ids"):
        explain_many(bert, torch.zeros(2, 3), "saliency")
    with pytest.raises(ExplainerError, match="batch_size"):
        explain_many(bert, batch, "saliency", batch_size=0)


def test_examples_explain_the_predictions_on_trimmed_rows(bert, batch):
    import dataclasses

    from lab.explainers.batch import text_examples

    ex = text_examples("t", bert, batch, labels=[0] * len(LENGTHS))
    predicted = predict_logits(bert, batch).argmax(-1)
    assert torch.equal(ex.targets, predicted) and len(ex) == len(LENGTHS)
    assert ex.info["accuracy_on_examples"] == pytest.approx(float((predicted == 0).double().mean()))
    assert not (ex.content & ~batch["attention_mask"].bool()).any() and ex.content.sum() > 0
    rows = ex.rows([1, 3])
    assert rows["input_ids"].shape[1] == int(batch["attention_mask"][[1, 3]].sum(1).max())
    assert dataclasses.replace(ex, targets=1 - ex.targets).fingerprint != ex.fingerprint
