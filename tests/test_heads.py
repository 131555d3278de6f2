"""lab.analysis.heads: alignment, counting (Eqs. 7-8), masks, random/corrupted masks, caching."""
import math

import numpy as np
import pytest
import torch

from lab.analysis import heads
from lab.analysis.heads import HeadStats, ParsedSegment


def _tiny_text_model(vocab_size, layers=2, n_heads=4, seed=0):
    """A random BERT classifier over the real WordPiece vocabulary (hidden 16), so the MiniLM tokenizer fits."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=layers, num_attention_heads=n_heads,
                     intermediate_size=32, max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, initializer_range=0.3, attn_implementation="eager")
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def tokenizer():
    from lab.models.loading import load_tokenizer

    return load_tokenizer("minilm")


def _stats(alpha, n_dep, lam_counts, pos_counts, n_queries, max_offset=2):
    """HeadStats from α-like hit counts [B, M, K], dependents [K], offsets [K, 2W+1], positions [B, M, 2W+1]."""
    return HeadStats(np.asarray(alpha), np.asarray(n_dep), np.asarray(lam_counts), np.asarray(pos_counts),
                     n_queries, max_offset, 1)


# ---- alignment ------------------------------------------------------------------------------------------------


def test_align_tokens_maps_pieces_to_words_and_skips_specials(tokenizer):
    text = "it 's a charming , unforgettable journey"
    seg = ParsedSegment(spans=[(0, 2), (3, 5), (6, 7), (8, 16), (17, 18), (19, 32), (33, 40)],
                        heads=[1, 1, 6, 6, 6, 6, 1], deps=["nsubj", "ROOT", "det", "amod", "punct", "amod", "attr"],
                        punct=[False, False, False, False, True, False, False])
    enc = tokenizer(text, return_offsets_mapping=True)
    align = heads.align_tokens(enc["offset_mapping"], enc.sequence_ids(0), [seg])
    toks = enc.tokens(0)
    assert align[0] is None and align[-1] is None  # [CLS], [SEP]
    words = {}
    for tok, a in zip(toks, align):
        if a is not None:
            words.setdefault(a[1], []).append(tok)
    assert words[1] == ["'", "s"]  # one spaCy word, two word pieces
    assert "".join(p.lstrip("#") for p in words[5]) == "unforgettable" and len(words[5]) > 1
    units = heads.merge_units(align, [seg])
    assert units.n_units == 2 + len(seg)  # [CLS] and [SEP] are units of their own
    assert units.punct_unit.sum() == 1
    deps = heads.dependents(units, [seg])
    got = {(toks[row], heads.RELATIONS[k], off) for row, _, k, off in deps}
    # nsubj "it" -> "'s" (offset -1), amod "charming" -> "journey" (-3), amod "unforgettable" -> "journey" (-1)
    assert got == {("it", "nsubj", -1), ("charming", "amod", -3), (words[5][0], "amod", -1)}


def test_dependents_skip_words_lost_to_truncation(tokenizer):
    seg = ParsedSegment(spans=[(0, 4), (5, 10)], heads=[1, 1], deps=["nsubj", "ROOT"], punct=[False, False])
    enc = tokenizer("dogs sleep", return_offsets_mapping=True, truncation=True, max_length=3)  # [CLS] dogs [SEP]
    units = heads.merge_units(heads.align_tokens(enc["offset_mapping"], enc.sequence_ids(0), [seg]), [seg])
    assert heads.dependents(units, [seg]) == []


def test_parser_loads_and_reads_obj_as_dobj():
    seg = heads.parse_texts(["the old man quickly ate a big apple ."])[0]
    assert len(seg) == 9 and seg.punct[-1]
    assert {"nsubj", "dobj", "amod", "advmod"} <= set(seg.deps)
    assert "obj" not in seg.deps


# ---- counting -------------------------------------------------------------------------------------------------


def test_positional_counts_find_previous_token_heads():
    seq, max_offset = 5, 3
    att = torch.full((1, 2, 2, seq, seq), 0.01)  # [L, B, H, S, S]
    for i in range(seq):
        att[0, :, 0, i, max(i - 1, 0)] = 1.0  # head 0 attends to the previous token
        att[0, :, 1, i, i] = 1.0  # head 1 attends to itself
    valid = torch.ones(2, seq, dtype=torch.bool)
    valid[1, 3:] = False  # second example has 3 tokens
    att[0, 1, :, :, 4] = 5.0  # a padding key must never win
    counts, n = heads._positional_counts(att, valid, max_offset)
    assert n == 8
    assert counts[0, 0, max_offset - 1] == 6 and counts[0, 0, max_offset] == 2  # rows 0 attend to themselves
    assert counts[0, 1, max_offset] == 8
    assert counts.sum(-1).tolist() == [[8, 8]]


def test_syntactic_counts_merge_pieces_and_mask_punctuation():
    # tokens: [CLS] w0 w1a w1b , [SEP] -> units: 0 [CLS], 1 w0, 2 w1, 3 ",", 4 [SEP]
    units = heads.Units(np.array([0, 1, 2, 2, 3, 4]), 5, np.array([False, False, False, True, False]),
                        {(0, 0): 1, (0, 1): 2, (0, 2): 3}, {(0, 0): 1, (0, 1): 2, (0, 2): 4})
    att = torch.zeros(1, 3, 6, 6)
    att[0, 0, 1] = torch.tensor([0.0, 0.1, 0.25, 0.25, 0.4, 0.0])  # pieces of w1 sum to 0.5 > 0.4: hit
    att[0, 1, 1] = torch.tensor([0.0, 0.1, 0.2, 0.1, 0.6, 0.0])  # the comma wins but is masked; w1 0.3 > 0.1: hit
    att[0, 2, 1] = torch.tensor([0.5, 0.1, 0.2, 0.1, 0.1, 0.0])  # [CLS] wins: miss
    deps = [(1, 2, 0, -1)]  # dependent w0 (first piece row 1), head unit w1, relation nsubj
    hits = heads._syntactic_counts(att, units, deps, len(heads.RELATIONS))
    assert hits[0, :, 0].tolist() == [1, 1, 0]
    assert hits[..., 1:].sum() == 0


def test_head_statistics_end_to_end_and_cache(tokenizer, lab_dirs, monkeypatch):
    model = _tiny_text_model(tokenizer.vocab_size)
    texts = ["the old man quickly ate a big apple .", "a charming and often affecting journey .",
             "she reads long books ."]
    stats = heads.cached_head_statistics(model, tokenizer, texts, model_key="tiny", max_length=32, progress=False)
    assert stats.shape == (2, 4) and stats.n_texts == 3
    assert stats.n_dependents.sum() > 0 and (stats.hits <= stats.n_dependents).all()
    assert (stats.position_counts.sum(-1) == stats.n_queries).all()
    n_tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
    assert stats.n_queries == n_tokens
    assert stats.relation_offsets.sum() == stats.n_dependents.sum()
    # the second call reads the cache instead of computing
    monkeypatch.setattr(heads, "head_statistics", lambda *a, **k: pytest.fail("recomputed a cached statistic"))
    again = heads.cached_head_statistics(model, tokenizer, texts, model_key="tiny", max_length=32, progress=False)
    np.testing.assert_array_equal(again.hits, stats.hits)
    np.testing.assert_array_equal(again.position_counts, stats.position_counts)
    assert again.n_queries == stats.n_queries and again.relations == stats.relations


def test_head_statistics_pairs(tokenizer):
    model = _tiny_text_model(tokenizer.vocab_size)
    stats = heads.head_statistics(model, tokenizer, ["a man eats an apple ."], ["the man is eating quickly ."],
                                  max_length=32, progress=False)
    n_tokens = len(tokenizer("a man eats an apple .", "the man is eating quickly .")["input_ids"])
    assert stats.n_queries == n_tokens
    assert stats.n_dependents.sum() >= 3  # relations of both segments are counted


def test_head_statistics_rejects_bad_input(tokenizer):
    model = _tiny_text_model(tokenizer.vocab_size)
    with pytest.raises(heads.HeadStatsError, match="no texts"):
        heads.head_statistics(model, tokenizer, [], progress=False)
    with pytest.raises(heads.HeadStatsError, match="unknown relation"):
        heads.head_statistics(model, tokenizer, ["a b"], relations=("nmod",), progress=False)


# ---- masks ----------------------------------------------------------------------------------------------------


def _toy_stats():
    # 2 blocks x 2 heads, K = 4 relations; 10 dependents of nsubj and amod, none of dobj/advmod
    hits = np.zeros((2, 2, 4), int)
    hits[1, 0, 0] = 8  # α_nsubj = 0.8
    hits[1, 1, 0] = 6  # α_nsubj = 0.6 = max λ + 0.1 exactly: not strictly greater
    hits[0, 1, 2] = 9  # α_amod = 0.9
    n_dep = np.array([10, 0, 10, 0])
    lam = np.zeros((4, 5), int)
    lam[0, 1] = 5; lam[0, 3] = 5  # max λ_nsubj = 0.5
    lam[2, 1] = 10  # max λ_amod = 1.0: no head can beat it
    pos = np.zeros((2, 2, 5), int)
    pos[0, 0, 1] = 9; pos[0, 0, 2] = 1  # 90 % at offset -1
    pos[0, 1, 2] = 10  # 100 % at offset 0 (itself)
    pos[1, :, 3] = 5; pos[1, :, 4] = 5
    return _stats(hits, n_dep, lam, pos, 10)


def test_masks_follow_equations_7_and_8():
    st = _toy_stats()
    assert math.isnan(st.alpha_synt[0, 0, 1]) and math.isnan(st.lambda_max[1])
    synt = heads.syntactic_heads(st, 0.1)
    assert synt.any(-1).tolist() == [[False, False], [True, False]]
    pos_self = heads.positional_heads(st, 0.8, include_self=True)
    pos_no_self = heads.positional_heads(st, 0.8, include_self=False)
    assert pos_self.tolist() == [[True, True], [False, False]]
    assert pos_no_self.tolist() == [[True, False], [False, False]]
    m = heads.head_mask(st, 0.1, 0.8)
    assert m.tolist() == [[1, 1], [1, 0]] and m.dtype == torch.float32
    assert heads.head_mask(st, positional=False).tolist() == [[0, 0], [1, 0]]
    assert heads.head_mask(st, syntactic=False).tolist() == [[1, 1], [0, 0]]
    assert heads.head_mask(st, xi_synt=0.05).tolist() == [[1, 1], [1, 1]]  # 0.6 > 0.5 + 0.05
    s = heads.mask_summary(st)
    assert (s["n_kept"], s["n_syntactic"], s["n_positional"], s["mask_rate"]) == (3, 1, 2, 0.75)
    assert s["per_relation"] == {"nsubj": 1, "dobj": 0, "amod": 0, "advmod": 0}


def test_stats_add_and_roundtrip(tmp_path):
    st = _toy_stats()
    both = st + st
    np.testing.assert_array_equal(both.hits, 2 * st.hits)
    np.testing.assert_allclose(both.alpha_synt, st.alpha_synt)
    st.save(tmp_path)
    back = HeadStats.load(tmp_path)
    assert heads.head_mask(back).tolist() == heads.head_mask(st).tolist()
    with pytest.raises(heads.HeadStatsError):
        st + _stats(np.zeros((3, 2, 4)), np.zeros(4), np.zeros((4, 5)), np.zeros((3, 2, 5)), 0)


def test_random_and_corrupted_masks():
    mask = torch.zeros(6, 12)
    mask[0, 3] = mask[4, 7] = mask[5, 0] = 1
    r0, r0b, r1 = (heads.random_mask((6, 12), 3, seed=s) for s in (0, 0, 1))
    assert int(r0.sum()) == 3 and torch.equal(r0, r0b) and not torch.equal(r0, r1)
    assert torch.equal(heads.corrupted_mask(mask, 0.0, seed=0), mask)
    assert torch.equal(heads.corrupted_mask(mask, 1.0, seed=3), torch.ones(6, 12))
    half = heads.corrupted_mask(mask, 0.5, seed=2)
    assert int(half.sum()) == 3 + round(0.5 * 69)
    assert bool((half[mask == 1] == 1).all())  # the kept heads stay kept
    with pytest.raises(heads.HeadStatsError):
        heads.corrupted_mask(mask, 1.5)
    with pytest.raises(heads.HeadStatsError):
        heads.random_mask((2, 2), 5)


def test_all_ones_corrupted_mask_gives_chefer_exactly():
    import lab
    from tests.models import text_batch, tiny_bert

    model, batch = tiny_bert(), text_batch()
    ones = heads.corrupted_mask(torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]]), 1.0, seed=0)
    a = lab.explain(model, batch, "mask_lrp", head_mask=ones).scores
    b = lab.explain(model, batch, "chefer").scores
    assert torch.equal(a, b)
    sparse = lab.explain(model, batch, "mask_lrp", head_mask=torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]])).scores
    assert not torch.allclose(sparse, b)  # the mask changes the explanation


def test_content_statistics_keep_the_syntax_and_count_content_queries_only(tokenizer, lab_dirs, monkeypatch):
    model = _tiny_text_model(tokenizer.vocab_size)
    texts = ["a charming and often affecting journey .", "she reads long books ."]
    raw = _stats(np.ones((2, 4, 4)), [2, 2, 2, 2], np.ones((4, 5)), np.ones((2, 4, 5)), 5)
    out, shares = heads.content_statistics(model, tokenizer, texts, None, raw, model_key="tiny", name="t",
                                           max_length=32)
    assert out.hits is raw.hits and out.relation_offsets is raw.relation_offsets and out.shape == raw.shape
    whole = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    counts, n_queries, expected_shares = heads.positions_without_specials(model, [whole], raw.max_offset)
    assert np.array_equal(out.position_counts, counts) and out.n_queries == n_queries and shares == expected_shares
    assert n_queries < int(whole["attention_mask"].sum())  # [CLS] is no query
    assert len(shares) == 2 and all(0 <= s <= 1 for s in shares) and out.meta["head_specials"] == "exclude"
    monkeypatch.setattr(heads, "positions_without_specials", lambda *a, **k: pytest.fail("recomputed"))
    again, _ = heads.content_statistics(model, tokenizer, texts, None, raw, model_key="tiny", name="t", max_length=32)
    np.testing.assert_array_equal(again.position_counts, out.position_counts)
