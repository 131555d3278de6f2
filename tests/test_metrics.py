"""lab.metrics: properties on synthetic cases (a toy model decided by one known token), hand-computed values,
and consistency of the batched Hugging Face path with one-example-at-a-time evaluation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import jensenshannon
from torch import nn

from lab.metrics import (
    MetricInputError,
    aopc_lodds,
    auc_rep,
    comprehensiveness_sufficiency,
    deletion_curve,
    fraction_significant,
    groups_from_word_ids,
    iou_f1,
    jsd,
    kendall_tau,
    merge_wordpieces,
    pearson,
    precision_at_k,
    random_scores,
    rank_correlation_matrix,
    replace_top_k,
    spearman,
    token_f1_at_k,
    token_f1_curve,
    top_k_mask,
    tvd,
    word_groups,
)
from tests.models import CLS_ID, PAD_ID, SEP_ID, text_batch, tiny_bert, unbatch

KEY = 7  # the token that decides the toy model's label


class OneTokenModel(nn.Module):
    """p(class 1) = sigmoid(4 · #KEY tokens attended − 2): the label is decided by one known token."""

    def forward(self, input_ids, attention_mask):
        count = ((input_ids == KEY) & attention_mask.bool()).sum(1).double()
        logit = 4.0 * count - 2.0
        return torch.stack([torch.sigmoid(-logit), torch.sigmoid(logit)], dim=1)


def toy_batch(n=24, seed=0, min_len=8, max_len=14):
    """[CLS] content (one KEY at a random place) [SEP], right-padded; specials mask; all labels 1."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=gen)
    width = int(lengths.max())
    ids = torch.full((n, width), PAD_ID)
    mask = torch.zeros_like(ids)
    key_pos = torch.zeros(n, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        ids[i, 0], ids[i, length - 1] = CLS_ID, SEP_ID
        ids[i, 1:length - 1] = torch.randint(10, 60, (length - 2,), generator=gen)
        key_pos[i] = int(torch.randint(1, length - 1, (1,), generator=gen))
        ids[i, key_pos[i]] = KEY
        mask[i, :length] = 1
    special = (ids == CLS_ID) | (ids == SEP_ID) | (mask == 0)
    return {"input_ids": ids, "attention_mask": mask}, special, key_pos, torch.ones(n, dtype=torch.long)


def toy_scores(inputs, special, key_pos, seed=1):
    """oracle: KEY highest among content (others random in [0,1)); reversed = −oracle; random. Special tokens get
    the largest score of all, so any metric that touched them would be visibly wrong."""
    ids = inputs["input_ids"]
    base = random_scores(ids, seed)
    oracle = base.clone()
    oracle[torch.arange(len(ids)), key_pos] = 10.0
    reverse = -oracle
    rand = random_scores(ids, seed + 100)
    for s in (oracle, reverse, rand):
        s[special] = 1e3
    return {"oracle": oracle, "random": rand, "reversed": reverse}


@pytest.fixture(scope="module")
def toy():
    inputs, special, key_pos, labels = toy_batch()
    return OneTokenModel(), inputs, special, key_pos, labels, toy_scores(inputs, special, key_pos)


# ---- replace_top_k / top_k_mask ---------------------------------------------------------------------------


def test_fraction_zero_leaves_input_unchanged(toy):
    _, inputs, special, _, _, scores = toy
    for mode in ("replace", "delete"):
        out = replace_top_k(inputs["input_ids"], inputs["attention_mask"], scores["oracle"], special,
                            fraction=0.0, token_id=PAD_ID, mode=mode)
        assert torch.equal(out["input_ids"], inputs["input_ids"])
        assert torch.equal(out["attention_mask"], inputs["attention_mask"])


def test_full_replacement_replaces_all_content_but_not_specials(toy):
    _, inputs, special, _, _, scores = toy
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    out = replace_top_k(ids, mask, scores["random"], special, fraction=1.0, token_id=99)
    content = mask.bool() & ~special
    assert (out["input_ids"][content] == 99).all()
    assert torch.equal(out["input_ids"][~content], ids[~content])  # [CLS], [SEP], padding untouched
    assert torch.equal(out["attention_mask"], mask)
    deleted = replace_top_k(ids, mask, scores["random"], special, fraction=1.0, mode="delete")
    kept = [row[m.bool()].tolist() for row, m in zip(deleted["input_ids"], deleted["attention_mask"])]
    assert kept == [[CLS_ID, SEP_ID]] * len(ids)


def test_fraction_counts_content_tokens_and_rounds_half_to_even():
    ids = torch.tensor([[CLS_ID, 11, 12, 13, 14, 15, SEP_ID, PAD_ID]])  # 5 content tokens
    mask = (ids != PAD_ID).long()
    special = (ids == CLS_ID) | (ids == SEP_ID) | (mask == 0)
    scores = torch.tensor([[9.0, 0.1, 0.5, 0.3, 0.4, 0.2, 9.0, 9.0]])
    for fraction, expected in ((0.2, 1), (0.3, 2), (0.5, 2), (0.7, 4), (1.0, 5)):  # 1.5 -> 2, 2.5 -> 2, 3.5 -> 4
        sel = top_k_mask(scores, special, mask, fraction=fraction)
        assert int(sel.sum()) == expected, fraction
    sel = top_k_mask(scores, special, mask, k=3)
    assert sel[0].nonzero()[:, 0].tolist() == [2, 3, 4]  # scores 0.5, 0.4, 0.3
    sel = top_k_mask(scores, special, mask, k=2, order="asc")
    assert sel[0].nonzero()[:, 0].tolist() == [1, 5]  # scores 0.1, 0.2


def test_ties_broken_by_position_deterministically():
    ids = torch.tensor([[CLS_ID, 11, 12, 13, 14, SEP_ID]])
    special = (ids == CLS_ID) | (ids == SEP_ID)
    flat = torch.zeros(1, 6)
    for order in ("desc", "asc"):
        sel = top_k_mask(flat, special, k=2, order=order)
        assert sel[0].nonzero()[:, 0].tolist() == [1, 2]
    out = replace_top_k(ids, None, torch.tensor([[0.0, 1, 1, 1, 0.5, 0]]), special, k=2, token_id=PAD_ID)
    assert out["input_ids"].tolist() == [[CLS_ID, PAD_ID, PAD_ID, 13, 14, SEP_ID]]


def test_delete_compacts_and_repads_with_token_types():
    ids = torch.tensor([[CLS_ID, 11, 12, SEP_ID, 21, 22, SEP_ID], [CLS_ID, 11, SEP_ID, 21, SEP_ID, PAD_ID, PAD_ID]])
    mask = (ids != PAD_ID).long()
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]])
    special = (ids == CLS_ID) | (ids == SEP_ID) | (mask == 0)
    scores = torch.tensor([[0.0, 5, 1, 0, 4, 2, 0], [0.0, 1, 0, 5, 0, 0, 0]])
    out = replace_top_k(ids, mask, scores, special, k=2, mode="delete", token_type_ids=types)
    assert out["input_ids"].tolist() == [[CLS_ID, 12, SEP_ID, 22, SEP_ID], [CLS_ID, SEP_ID, SEP_ID, PAD_ID, PAD_ID]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]


def test_complement_perturbs_everything_but_the_top_k():
    ids = torch.tensor([[CLS_ID, 11, 12, 13, 14, SEP_ID]])
    special = (ids == CLS_ID) | (ids == SEP_ID)
    scores = torch.tensor([[0.0, 0.1, 0.9, 0.5, 0.2, 0.0]])
    out = replace_top_k(ids, None, scores, special, k=1, mode="delete", complement=True)
    assert out["input_ids"].tolist() == [[CLS_ID, 12, SEP_ID]]


def test_groups_select_whole_words():
    tokens = ["[CLS]", "un", "##believ", "##able", "film", "good", "[SEP]"]
    ids = torch.tensor([[CLS_ID, 11, 12, 13, 14, 15, SEP_ID]])
    groups = word_groups([tokens])
    assert groups.tolist() == [[-1, 0, 0, 0, 1, 2, -1]]
    scores = torch.tensor([[0.0, 0.2, 0.2, 0.2, 0.5, 0.1, 0.0]])  # word sums: 0.6, 0.5, 0.1
    out = replace_top_k(ids, None, scores, None, k=1, groups=groups, token_id=PAD_ID)
    assert out["input_ids"].tolist() == [[CLS_ID, PAD_ID, PAD_ID, PAD_ID, 14, 15, SEP_ID]]
    out = replace_top_k(ids, None, scores, None, k=1, groups=groups, reduce="max", token_id=PAD_ID)
    assert out["input_ids"].tolist() == [[CLS_ID, 11, 12, 13, PAD_ID, 15, SEP_ID]]
    sel = top_k_mask(scores, None, fraction=0.5, groups=groups)  # 3 words -> round(1.5) = 2 words
    assert sel.sum() == 4


def test_merge_wordpieces_bert_and_roberta():
    words, s = merge_wordpieces(["[CLS]", "un", "##believ", "##able", "movie", "[SEP]"], [9, 1, 2, 3, 4, 9])
    assert words == ["unbelievable", "movie"] and s.tolist() == [6.0, 4.0]
    words, s = merge_wordpieces(["[CLS]", "un", "##believ", "##able", "movie", "[SEP]"], [9, 1, 2, 3, 4, 9], "max")
    assert s.tolist() == [3.0, 4.0]
    words, s = merge_wordpieces(["<s>", "Hello", "Ġworld", "!", "Ġnice", "</s>"], [0, 1, 2, 3, 4, 0], "mean")
    assert words == ["Hello", "world!", "nice"] and s.tolist() == [1.0, 2.5, 4.0]
    assert groups_from_word_ids([[None, 0, 0, 1, None, 0, 1, None]]).tolist() == [[-1, 0, 0, 1, -1, 2, 3, -1]]
    with pytest.raises(MetricInputError, match="tokens but"):
        merge_wordpieces(["a", "b"], [1.0])


# ---- model-facing metrics on the toy model ---------------------------------------------------------------


def test_aopc_lodds_oracle_beats_random_and_reversed(toy):
    model, inputs, special, _, _, scores = toy
    res = {name: aopc_lodds(model, inputs, s, special_mask=special, token_id=PAD_ID, progress=False)
           for name, s in scores.items()}
    assert res["oracle"]["aopc_mean"] > res["random"]["aopc_mean"] > res["reversed"]["aopc_mean"]
    assert res["oracle"]["lodds_mean"] < res["random"]["lodds_mean"] < res["reversed"]["lodds_mean"]
    # the oracle removes the KEY at the first fraction already: full drop 0.88 -> 0.12 at every k
    p_on, p_off = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))
    assert torch.allclose(res["oracle"]["aopc"], torch.full((24,), p_on - p_off, dtype=torch.float64))
    assert torch.allclose(res["oracle"]["lodds"], torch.full((24,), math.log(p_off / p_on), dtype=torch.float64))
    # the reversed order removes the KEY only at 100%: one of nine fractions
    assert res["reversed"]["aopc_mean"] == pytest.approx((p_on - p_off) / 9)
    assert len(res["oracle"]["aopc_curve"]) == 9 and res["oracle"]["counts"].shape == (24, 9)


def test_aopc_fraction_zero_and_gold_label(toy):
    model, inputs, special, _, labels, scores = toy
    res = aopc_lodds(model, inputs, scores["oracle"], fractions=(0.0,), special_mask=special, progress=False)
    assert torch.equal(res["aopc"], torch.zeros(24, dtype=torch.float64))
    assert torch.equal(res["lodds"], torch.zeros(24, dtype=torch.float64))
    gold = aopc_lodds(model, inputs, scores["oracle"], label="gold", labels=1 - labels, special_mask=special,
                      progress=False)
    assert gold["aopc_mean"] < 0  # removing the KEY raises p(class 0)
    with pytest.raises(MetricInputError, match="needs labels"):
        aopc_lodds(model, inputs, scores["oracle"], label="gold", special_mask=special)


def test_comprehensiveness_sufficiency_order(toy):
    model, inputs, special, _, _, scores = toy
    res = {name: comprehensiveness_sufficiency(model, inputs, s, special_mask=special, progress=False)
           for name, s in scores.items()}
    assert res["oracle"]["comprehensiveness_mean"] > res["random"]["comprehensiveness_mean"] \
        > res["reversed"]["comprehensiveness_mean"]
    assert res["oracle"]["sufficiency_mean"] < res["random"]["sufficiency_mean"] <= res["reversed"]["sufficiency_mean"]
    assert res["oracle"]["comp_probs"].shape == (24, 5)


def test_deletion_curve_oracle_steepest(toy):
    model, inputs, special, _, labels, scores = toy
    res = {name: deletion_curve(model, inputs, s, labels, max_words=4, special_mask=special, progress=False)
           for name, s in scores.items()}
    assert res["oracle"]["accuracy"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert res["reversed"]["accuracy"].tolist() == [1.0] * 5  # >= 6 content tokens: the KEY survives 4 deletions
    assert 0.0 < res["random"]["auc"] < 1.0
    assert res["oracle"]["auc"] < res["random"]["auc"] < res["reversed"]["auc"]
    assert res["oracle"]["n_examples"] == 24
    # only initially-correct examples count: with flipped labels none is correct
    with pytest.warns(UserWarning, match="no example"):
        empty = deletion_curve(model, inputs, scores["oracle"], 1 - labels, max_words=2, special_mask=special,
                               progress=False)
    assert empty["n_examples"] == 0 and torch.isnan(empty["accuracy"]).all()


def test_word_units_count_words(toy):
    """With groups (pairs of adjacent content tokens as 'words'), fractions and deletions count words."""
    model, inputs, special, _, labels, scores = toy
    pos = torch.arange(inputs["input_ids"].shape[1]).expand_as(special)
    groups = torch.where(special, -1, (pos - 1) // 2)
    n_content = (~special).sum(1)
    res = aopc_lodds(model, inputs, scores["oracle"], fractions=(1.0,), groups=groups, special_mask=special,
                     progress=False)
    assert torch.equal(res["counts"][:, 0], (n_content + 1) // 2)
    curve = deletion_curve(model, inputs, scores["reversed"], labels, max_words=3, groups=groups,
                           special_mask=special, progress=False)
    assert torch.equal(curve["counts"][:, -1], torch.full((24,), 3))
    # the KEY's word is deleted last: it survives 2 deletions everywhere (>= 3 words), 3 only with >= 4 words
    assert curve["accuracy"][:3].tolist() == [1.0, 1.0, 1.0]
    assert curve["accuracy"][3] == pytest.approx(float(((n_content + 1) // 2 >= 4).double().mean()))
    oracle = deletion_curve(model, inputs, scores["oracle"], labels, max_words=2, groups=groups,
                            special_mask=special, progress=False)
    assert oracle["accuracy"].tolist() == [1.0, 0.0, 0.0]


def test_auc_rep_lower_for_oracle(toy):
    model, inputs, special, _, _, scores = toy
    res = {name: auc_rep(model, inputs, s, special_mask=special, progress=False) for name, s in scores.items()}
    assert res["oracle"]["auc_mean"] < res["random"]["auc_mean"] < res["reversed"]["auc_mean"]
    p_on = 1 / (1 + math.exp(-2))
    assert res["reversed"]["auc_mean"] == pytest.approx(p_on)  # flat curve, normalised area = its height
    assert res["oracle"]["curve"].shape == (24, 21) and res["oracle"]["curve"][:, 0].allclose(
        torch.full((24,), p_on, dtype=torch.float64))


def test_auc_rep_area_by_hand():
    """3 content tokens, stop 0.5: points x = 0, 1/3, 2/3 with p = 0.9, 0.3, 0.3; area on [0, 0.5] of the linear
    interpolation = (0.9+0.3)/2·(1/3) + 0.3·(1/6) = 0.25; normalised: 0.5."""
    class Drop(nn.Module):
        def forward(self, ids, mask):
            p = torch.where((ids == 11).any(1), 0.9, 0.3).double()
            return torch.stack([1 - p, p], 1)

    ids = torch.tensor([[CLS_ID, 11, 12, 13, SEP_ID]])
    special = (ids == CLS_ID) | (ids == SEP_ID)
    res = auc_rep(Drop(), {"input_ids": ids}, torch.tensor([[0, 3.0, 2, 1, 0]]), stop=0.5, special_mask=special,
                  progress=False)
    assert res["probs"][0].tolist() == pytest.approx([0.9, 0.3, 0.3])
    assert res["auc_mean"] == pytest.approx(0.5)
    raw = auc_rep(Drop(), {"input_ids": ids}, torch.tensor([[0, 3.0, 2, 1, 0]]), stop=0.5, special_mask=special,
                  normalize=False, progress=False)
    assert raw["auc_mean"] == pytest.approx(0.25)


def test_predict_fn_must_return_probabilities(toy):
    _, inputs, special, _, _, scores = toy
    logits_fn = lambda ids, mask: torch.randn(len(ids), 2) * 5  # noqa: E731
    with pytest.raises(MetricInputError, match="probabilities"):
        aopc_lodds(logits_fn, inputs, scores["oracle"], special_mask=special, progress=False)
    with pytest.raises(MetricInputError, match="scores have shape"):
        aopc_lodds(OneTokenModel(), inputs, scores["oracle"][:, :3], special_mask=special)
    with pytest.raises(MetricInputError, match="label must be"):
        aopc_lodds(OneTokenModel(), inputs, scores["oracle"], label="true", special_mask=special)


# ---- the Hugging Face path -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert():
    return tiny_bert(num_labels=3)


def test_hf_batched_equals_one_at_a_time(bert):
    """Chunks that mix padded examples (batch_size=5) give each example's unpadded, one-at-a-time values."""
    batch = text_batch((9, 5, 4), seed=3)
    scores = random_scores(batch["input_ids"], seed=5)
    full = aopc_lodds(bert, batch, scores, batch_size=5, progress=False)
    comp = comprehensiveness_sufficiency(bert, batch, scores, bins=(0.2, 0.5), batch_size=4, progress=False)
    for i in range(3):
        one = unbatch(batch, i)
        n = one["input_ids"].shape[1]
        single = aopc_lodds(bert, one, scores[i:i + 1, :n], progress=False)
        assert torch.allclose(single["aopc"], full["aopc"][i:i + 1], atol=1e-10)
        assert torch.allclose(single["lodds"], full["lodds"][i:i + 1], atol=1e-10)
        c1 = comprehensiveness_sufficiency(bert, one, scores[i:i + 1, :n], bins=(0.2, 0.5), progress=False)
        assert torch.allclose(c1["sufficiency"], comp["sufficiency"][i:i + 1], atol=1e-10)
        assert torch.allclose(c1["comprehensiveness"], comp["comprehensiveness"][i:i + 1], atol=1e-10)
    assert all(torch.isfinite(full[k]).all() for k in ("aopc", "lodds", "probs"))


def test_hf_matches_manual_perturbation(bert):
    """One fraction by hand: replace_top_k with the adapter's special mask, then the model itself."""
    from lab.models.adapters import get_adapter

    batch = text_batch((8, 6), seed=1)
    scores = random_scores(batch["input_ids"], seed=2)
    special = get_adapter(bert).special_mask(batch)
    res = aopc_lodds(bert, batch, scores, fractions=(0.5,), progress=False)
    pert = replace_top_k(batch["input_ids"], batch["attention_mask"], scores, special, fraction=0.5,
                         token_id=bert.config.pad_token_id, token_type_ids=batch["token_type_ids"])
    assert (pert["input_ids"][:, 0] == CLS_ID).all()
    with torch.no_grad():
        p0 = bert(**batch).logits.softmax(-1)
        p1 = bert(**pert).logits.softmax(-1)
    y = p0.argmax(-1)
    idx = torch.arange(2)
    assert torch.allclose(res["aopc"], p0[idx, y] - p1[idx, y], atol=1e-12)
    assert torch.allclose(res["lodds"], (p1[idx, y] / p0[idx, y]).log(), atol=1e-10)


def test_hf_accepts_explanation_and_restores_mode(bert):
    import lab

    batch = text_batch((7, 5), seed=4)
    expl = lab.explain(bert, batch, "random")
    bert.train()
    try:
        res = aopc_lodds(bert, batch, expl, progress=False)
        assert bert.training
    finally:
        bert.eval()
    assert res["counts"][:, -1].tolist() == [5, 3]  # content tokens only: [CLS]/[SEP] excluded via expl.special
    curve = deletion_curve(bert, batch, expl, labels=res["target"], max_words=3, progress=False)
    assert curve["accuracy"][0] == 1.0 and curve["n_examples"] == 2


# ---- rationales ------------------------------------------------------------------------------------------


def test_token_f1_equals_one_when_top_k_is_the_rationale():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.1, 0.2, 0.0]])
    rationale = torch.tensor([[0, 1, 1, 0, 0, 0]])
    special = torch.tensor([[1, 0, 0, 0, 0, 1]]).bool()
    res = token_f1_at_k(scores, rationale, k=2, special_mask=special)
    assert res["macro_f1"] == 1.0 and res["micro_f1"] == 1.0


def test_token_f1_hand_computed():
    """doc 0: top-2 = {0, 2}, rationale {0, 1}: P = R = 1/2, F1 = 1/2.
    doc 1 (3 valid tokens): top-2 = {1, 2}, rationale {2}: P = 1/2, R = 1, F1 = 2/3.
    macro F1 = (1/2 + 2/3) / 2 = 7/12; micro: TP 2, |pred| 4, |truth| 3 -> P 1/2, R 2/3, F1 4/7."""
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.3, 0.2], [0.1, 0.5, 0.4, 0.9, 0.9]])
    rationale = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    res = token_f1_at_k(scores, rationale, valid, k=2)
    assert res["f1"].tolist() == pytest.approx([0.5, 2 / 3])
    assert res["macro_f1"] == pytest.approx(7 / 12)
    assert res["micro_precision"] == pytest.approx(0.5) and res["micro_recall"] == pytest.approx(2 / 3)
    assert res["micro_f1"] == pytest.approx(4 / 7)
    curve = token_f1_curve(scores, rationale, valid, ks=(1, 2, 10))
    assert curve["macro_f1"][1] == pytest.approx(7 / 12)
    # k larger than the document: everything is predicted -> recall 1
    assert curve["per_k"][10]["recall"].tolist() == [1.0, 1.0]


def test_iou_f1_and_precision_at_k():
    pred = torch.tensor([[0, 1, 1, 1, 0, 0, 1, 0]])
    truth = torch.tensor([[0, 1, 1, 0, 0, 0, 0, 1]])  # spans (1,3), (7,8); pred spans (1,4) IOU 2/3, (6,7) IOU 0
    res = iou_f1(pred, truth)
    assert res["precision"] == 0.5 and res["recall"] == 0.5 and res["f1"] == 0.5
    assert iou_f1(pred, truth, threshold=0.7)["f1"] == 0.0
    scores = torch.tensor([[0.0, 5, 4, 3, 2, 1], [0.0, 1, 2, 3, 4, 5]])
    answer = torch.tensor([[0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1]])
    assert precision_at_k(scores, answer, k=2) == pytest.approx(3 / 4)


# ---- agreement -------------------------------------------------------------------------------------------


def test_tvd_jsd_bounds_symmetry_and_known_values():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(50, 7, generator=gen, dtype=torch.float64) ** 3
    p = p / p.sum(-1, keepdim=True)
    q = torch.rand(50, 7, generator=gen, dtype=torch.float64)
    q = q / q.sum(-1, keepdim=True)
    for f, top in ((tvd, 1.0), (jsd, math.log(2))):
        d = f(p, q)
        assert d.shape == (50,) and (d >= 0).all() and (d <= top + 1e-12).all()
        assert torch.allclose(d, f(q, p))
        assert torch.allclose(f(p, p), torch.zeros(50, dtype=torch.float64), atol=1e-12)
    disjoint_p, disjoint_q = np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.3, 0.7])
    assert jsd(disjoint_p, disjoint_q) == pytest.approx(math.log(2))
    assert tvd(disjoint_p, disjoint_q) == pytest.approx(1.0)
    assert tvd([0.2, 0.8], [0.5, 0.5]) == pytest.approx(0.3)
    ref = jensenshannon(p[0].numpy(), q[0].numpy()) ** 2  # scipy: sqrt of JSD, natural log
    assert float(jsd(p[0], q[0])) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(MetricInputError, match="sum to 1"):
        jsd([0.2, 0.2], [0.5, 0.5])


def test_kendall_pearson_spearman():
    a = np.array([0.1, 0.4, 0.3, 0.9, 0.7])
    tau, p = kendall_tau(a, a)
    assert tau == pytest.approx(1.0)
    assert kendall_tau(a, -a).statistic == pytest.approx(-1.0)
    b = np.array([0.2, 0.1, 0.5, 0.8, 0.6])
    ref = stats.kendalltau(a, b)
    got = kendall_tau(a, b)
    assert got.statistic == pytest.approx(ref.statistic) and got.pvalue == pytest.approx(ref.pvalue)
    # batched with a mask, ragged lists, constant rows -> NaN
    A = np.array([[1.0, 2, 3, 4, 0], [1, 2, 3, 4, 5], [1, 1, 1, 1, 1]])
    B = np.array([[1.0, 2, 3, 4, 9], [5, 4, 3, 2, 1], [1, 2, 3, 4, 5]])
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    taus, pvals = kendall_tau(A, B, mask)
    assert taus[:2].tolist() == pytest.approx([1.0, -1.0]) and np.isnan(taus[2])
    rag = kendall_tau([A[0, :4], A[1]], [B[0, :4], B[1]])
    assert rag.statistic.tolist() == pytest.approx([1.0, -1.0])
    assert pearson(A, B, mask).statistic[:2].tolist() == pytest.approx([1.0, -1.0])
    assert spearman(a, b).statistic == pytest.approx(stats.spearmanr(a, b).statistic)
    pooled = pearson(A[:2], B[:2], per_instance=False)
    assert isinstance(pooled.statistic, float)
    assert fraction_significant(np.array([0.01, 0.2, np.nan, 0.049])) == 0.5
    # exact p of a perfect ranking: 2/4! = 0.083 on 4 points, 2/5! = 0.017 on 5; the constant row is NaN
    assert pvals[:2].tolist() == pytest.approx([2 / 24, 2 / 120]) and np.isnan(pvals[2])
    assert fraction_significant(pvals, level=0.05) == pytest.approx(1 / 3)
    assert fraction_significant(pvals, level=0.1) == pytest.approx(2 / 3)


def test_rank_correlation_matrix_with_directions():
    table = {"chefer": {"aopc": 0.5, "lodds": -2.0, "auc_rep": 0.3},
             "rollout": {"aopc": 0.3, "lodds": -1.0, "auc_rep": 0.4},
             "random": {"aopc": 0.1, "lodds": -0.5, "auc_rep": 0.6}}
    m = rank_correlation_matrix(table, directions={"lodds": "lower", "auc_rep": "lower"})
    assert np.allclose(m.to_numpy(), 1.0)
    raw = rank_correlation_matrix(table, method="spearman")  # without directions: lower-is-better disagrees
    assert raw.loc["aopc", "lodds"] == pytest.approx(-1.0) and raw.loc["aopc", "auc_rep"] == pytest.approx(-1.0)
    assert raw.loc["lodds", "auc_rep"] == pytest.approx(1.0) and raw.loc["aopc", "aopc"] == pytest.approx(1.0)
    nested = {k: {m_: {"paper": None, "ours": v} for m_, v in row.items()} for k, row in table.items()}
    assert np.allclose(rank_correlation_matrix(nested, value_key="ours", method="spearman").to_numpy(), raw.to_numpy())
    with pytest.raises(MetricInputError, match="value_key"):
        rank_correlation_matrix(nested)
