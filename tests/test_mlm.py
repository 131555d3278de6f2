"""The masked LM (built from the offline encoder, tied decoder, masking, training, evaluation) and the small causal LM
of notebook 06, on tiny random models (seconds)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from lab.models import causal_lm as C
from lab.models import mlm as M
from lab.models.loading import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def tiny_bert_mlm(vocab: int = 30522, seed: int = 0):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, pad_token_id=0, mask_token_id=103)
    return BertForMaskedLM(cfg).eval()


def test_mask_tokens_selects_only_content_and_at_least_one():
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([[101, 2000, 2001, 102, 0, 0], [101, 2002, 2003, 2004, 2005, 102]])
    special = torch.isin(ids, torch.tensor([0, 101, 102]))
    for _ in range(20):
        out, sel = M.mask_tokens(ids, special, 103, 30522, gen, rate=0.01, bert_mix=False)
        assert not (sel & special).any() and sel.any(1).all()
        assert (out[sel] == 103).all() and torch.equal(out[~sel], ids[~sel])
    out, sel = M.mask_tokens(ids.repeat(200, 1), special.repeat(200, 1), 103, 30522, gen, rate=0.5)
    frac_mask = float((out[sel] == 103).double().mean())
    assert 0.7 < frac_mask < 0.9  # BERT's 80/10/10


def test_candidate_log_probs_excludes_and_normalises():
    logits = torch.randn(3, 10)
    logp = M.candidate_log_probs(logits, [0, 4])
    assert torch.isinf(logp[:, [0, 4]]).all()
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, dtype=torch.float64))


def test_masked_log_probs_equals_per_position_forward():
    mlm = tiny_bert_mlm(vocab=50)
    mlm.config.cls_token_id, mlm.config.sep_token_id = 2, 3
    row = {"input_ids": torch.tensor([[2, 10, 11, 12, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    mlm.config.mask_token_id = 4
    got = M.masked_log_probs(mlm, row, [1, 3], max_batch=1)
    for k, p in enumerate([1, 3]):
        ids = row["input_ids"].clone()
        ids[0, p] = 4
        with torch.no_grad():
            logits = mlm(input_ids=ids, attention_mask=row["attention_mask"]).logits[0, p].double()
        logits[[0, 2, 3, 4]] = float("-inf")
        torch.testing.assert_close(got[k], logits.log_softmax(-1), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("freeze_layers", [0, 1])
def test_training_reduces_loss_and_improves_accuracy(tokenizer, freeze_layers):
    mlm = tiny_bert_mlm()
    texts = ["the movie is great fun", "a dull and boring film", "the acting is great"] * 20
    before = M.evaluate_mlm(mlm, tokenizer, texts[:3])
    frozen = mlm.bert.embeddings.word_embeddings.weight.clone()
    out = M.train_mlm(mlm, tokenizer, texts, steps=60, batch_size=8, lr=3e-3, freeze_layers=freeze_layers,
                      progress=False)
    after = M.evaluate_mlm(mlm, tokenizer, texts[:3])
    assert out["steps_done"] == 60 and out["history"][-1]["loss"] < out["history"][0]["loss"]
    # frozen random 16-d tied embeddings limit what the head can learn; the full model memorises the texts
    assert after["perplexity"] < before["perplexity"] / (1.2 if freeze_layers else 5)
    assert after["top5"] >= before["top5"]
    assert all(p.requires_grad for p in mlm.parameters()) and not mlm.training
    tied = torch.equal(mlm.bert.embeddings.word_embeddings.weight, frozen)
    assert tied == bool(freeze_layers)  # frozen embeddings (and the tied decoder) when layers are frozen


def test_early_stopping_keeps_the_best_heldout_weights(tokenizer):
    mlm = tiny_bert_mlm()
    texts = ["the movie is great fun", "a dull and boring film", "the acting is great"] * 20
    stop = ["the film is great", "a boring movie"]
    out = M.train_mlm(mlm, tokenizer, texts, steps=40, batch_size=8, lr=3e-2, progress=False, stop_texts=stop,
                      eval_every=10, patience=1)
    evals = out["stop_evals"]
    assert [e["step"] for e in evals][:2] == [10, 20] and out["steps_done"] == evals[-1]["step"]
    best = max(evals, key=lambda e: e["top5"])  # the first of the best: later ties do not count as improvement
    assert out["best_step"] == best["step"] and out["stop_top5"] == pytest.approx(best["top5"], abs=1e-4)
    if out["steps_done"] < 40:  # stopped early: exactly `patience` evaluations after the best one
        assert evals[-2]["step"] == best["step"]
    assert M.evaluate_mlm(mlm, tokenizer, stop, max_length=48)["top5"] == pytest.approx(out["stop_top5"])
    with pytest.raises(M.MLMError, match="eval_every"):
        M.train_mlm(mlm, tokenizer, texts, steps=5, stop_texts=stop, eval_every=0, progress=False)


def test_build_mlm_ties_decoder_and_keeps_encoder_weights():
    from transformers import BertModel

    from lab.models.loading import resolve_model_name

    mlm = M.build_mlm("minilm")
    base = BertModel.from_pretrained(resolve_model_name("minilm"), add_pooling_layer=False)
    assert mlm.cls.predictions.decoder.weight is mlm.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(mlm.bert.encoder.layer[3].output.dense.weight, base.encoder.layer[3].output.dense.weight)
    with pytest.raises(M.MLMError, match="unknown MLM profile"):
        M.settings("huge")


def test_causal_lm_sequence_probability_is_the_chain_rule():
    lm = C.build_causal_lm(40, d_model=16, layers=1, heads=2, max_positions=16)
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        got = C.sequence_log_prob(lm, ids, mask)
        for i, n in enumerate([5, 3]):
            total = 0.0
            for t in range(1, n):
                total += lm(input_ids=ids[i:i + 1, :t]).logits[0, -1].double().log_softmax(-1)[ids[i, t]].item()
            assert abs(got[i].item() - total) < 1e-5
    from lab.explainers.marginalization import sentence_log_probs_fn

    two = sentence_log_probs_fn(lm)({"input_ids": ids, "attention_mask": mask})
    torch.testing.assert_close(two.exp().sum(-1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(C.CausalLMError, match="seq >= 2"):
        C.sequence_log_prob(lm, torch.tensor([[2]]))


@pytest.mark.skipif(not (Path(os.environ.get("LAB_DATA_DIR", "/work/shared/data")) / "sst2").exists(),
                    reason="needs the offline GLUE SST-2 dev split (LAB_DATA_DIR)")
def test_notebook06_studies_are_memoised(lab_dirs, monkeypatch):
    from types import SimpleNamespace

    from lab.experiments import input_marginalization as im
    from lab.models.cnn import TextConfig, build_text_classifier

    torch.manual_seed(0)
    models = {arch: SimpleNamespace(model=build_text_classifier(TextConfig(30522, 2, arch, embed_dim=4, filters=2,
                                                                           hidden=3)).eval()) for arch in ("cnn", "lstm")}
    mlm = im.CachedMLM(tiny_bert_mlm(), vocab=8)
    cfg = im.settings("smoke", use_cache=True, n_mc_sentences=1, mc_sizes=[2], mc_max_words=3)
    first = im.mc_study(models, mlm, cfg, sigmas=(1e-2,), seeds=(0,), progress=False)
    calls = []
    real = im.attribute
    monkeypatch.setattr(im, "attribute", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert im.mc_study(models, mlm, cfg, sigmas=(1e-2,), seeds=(0,), progress=False) == first and calls == []
    im.mc_study(models, mlm, cfg, model="lstm", sigmas=(1e-2,), seeds=(0,), progress=False)  # another model
    assert len(calls) == 3  # exact reference, one σ, one MC draw


def test_corpus_vocabulary_is_the_only_candidate_set_and_starts_the_bias_at_log_frequencies(tokenizer, tmp_path):
    from transformers import BertForMaskedLM

    mlm = tiny_bert_mlm()
    special = M.excluded_ids(tokenizer) + [tokenizer.unk_token_id]
    good, movie = tokenizer.convert_tokens_to_ids(["good", "movie"])
    seqs = [[101, good, movie, good, 102], [101, good, 102]]
    assert M.restrict_vocabulary(mlm, seqs, special) == 2
    assert mlm.config.candidate_token_ids == sorted([good, movie])
    bias = mlm.cls.predictions.bias.detach().double()
    assert float(bias[good] - bias[movie]) == pytest.approx(math.log(4 / 2), abs=1e-6)  # add-one counts 3+1, 1+1
    row = {"input_ids": torch.tensor([[101, good, movie, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    probs = M.masked_log_probs(mlm, row, [1, 2]).exp()
    torch.testing.assert_close(probs[:, [good, movie]].sum(-1), torch.ones(2, dtype=torch.float64))
    mlm.save_pretrained(tmp_path)  # the vocabulary travels with the checkpoint
    assert BertForMaskedLM.from_pretrained(tmp_path).config.candidate_token_ids == sorted([good, movie])
    ev = M.evaluate_mlm(mlm, tokenizer, ["film film", "good movie good"])  # >= 1 masked position per sentence
    assert 0 < ev["oov_rate"] < 1 and math.isfinite(ev["perplexity"])  # "film" is outside: a miss, not an inf
    out = M.train_mlm(mlm, tokenizer, ["good movie good"] * 8, steps=3, batch_size=4, mask_rate=0.5, progress=False)
    assert out["steps_done"] == 3 and math.isfinite(out["history"][-1]["loss"])
    with pytest.raises(M.MLMError, match="unknown extra corpus"):
        M.corpus_texts(10, ("wiki",))


def test_masked_lm_logits_are_the_models_head_on_the_encoder_output():
    from lab.models.adapters import masked_lm_logits

    mlm = tiny_bert_mlm(vocab=50)
    row = {"input_ids": torch.tensor([[2, 10, 11, 12, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        assert torch.equal(masked_lm_logits(mlm, mlm.base_model(**row).last_hidden_state), mlm(**row).logits)


def test_special_ids_come_from_the_tokenizer_not_from_a_known_vocabulary():
    from types import SimpleNamespace

    mlm = tiny_bert_mlm()  # 30522 ids, the config names [PAD] and [MASK] only
    mlm.config.mask_token_id = None
    row = {"input_ids": torch.tensor([[7, 10, 11, 9]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with pytest.raises(M.MLMError, match="mask_token_id"):
        M.masked_log_probs(mlm, row, [1])
    M.name_special_ids(mlm, SimpleNamespace(pad_token_id=0, cls_token_id=7, sep_token_id=9, mask_token_id=8,
                                            unk_token_id=1))
    probs = M.masked_log_probs(mlm, row, [1, 2]).exp()
    assert (probs[:, [0, 7, 8, 9]] == 0).all() and (probs[:, [1, 101, 102, 103]] > 0).all()
