"""Jain & Wallace attention classifiers (lab.models.rnn): the staged API, padding invariance, detached-attention
gradients, training and the cache."""
import numpy as np
import pytest
import torch

from lab.models import rnn


class WordTokenizer:
    """A whitespace 'tokenizer' with the two methods Vocab uses (ids = position in a fixed word list + 10)."""

    unk_token, unk_token_id = "[UNK]", 1

    def __init__(self, words):
        self.words = list(words)

    def __call__(self, texts, **kw):
        return {"input_ids": [[self.words.index(w) + 10 for w in t.split()] for t in texts]}

    def convert_ids_to_tokens(self, ids):
        return [self.words[i - 10] if i >= 10 else "[UNK]" for i in ids]


WORDS = "good bad movie plot the a was great awful fine where is john mary kitchen garden".split()


def tiny_model(encoder="lstm", pair=False, num_classes=2, attention="tanh", seed=0, average_reading="authors"):
    torch.manual_seed(seed)
    cfg = rnn.RNNConfig(vocab_size=20, num_classes=num_classes, encoder=encoder, attention=attention, embed_dim=6,
                        hidden=4, pair=pair, average_reading=average_reading)
    return rnn.AttentionClassifier(cfg).double().eval()


def random_set(n=5, pair=False, seed=0, lengths=None):
    gen = np.random.default_rng(seed)
    lengths = lengths or [int(x) for x in gen.integers(1, 8, n)]
    ids = [gen.integers(2, 20, L).tolist() for L in lengths]
    q = [gen.integers(2, 20, int(gen.integers(1, 4))).tolist() for _ in lengths] if pair else None
    return rnn.EncodedSet(ids, [int(x) for x in gen.integers(0, 2, len(lengths))], q, list(range(len(lengths))))


def test_vocab_keeps_training_pieces_and_maps_the_rest_to_unk():
    tok = WordTokenizer(WORDS)
    vocab = rnn.Vocab.build(tok, ["good movie", "bad plot"])
    assert len(vocab) == 2 + 4
    ids = vocab.encode(["good awful movie"])[0]
    assert ids[1] == rnn.UNK and ids[0] >= 2 and ids[2] >= 2
    assert vocab.tokens(ids) == ["good", "[UNK]", "movie"]
    assert vocab.encode(["good bad movie plot"], max_length=2)[0] == vocab.encode(["good bad"])[0]
    table = torch.arange(40 * 3, dtype=torch.float32).view(40, 3)
    emb = vocab.embedding_matrix(table)
    assert torch.equal(emb[rnn.PAD], torch.zeros(3)) and torch.equal(emb[rnn.UNK], table[1])
    assert torch.equal(emb[ids[0]], table[WORDS.index("good") + 10])


def test_bad_config_is_one_clear_error():
    with pytest.raises(rnn.RNNInputError, match="encoder must be one of"):
        rnn.RNNConfig(vocab_size=10, num_classes=2, encoder="gru")
    with pytest.raises(rnn.RNNInputError, match="num_classes"):
        rnn.RNNConfig(vocab_size=10, num_classes=1)


@pytest.mark.parametrize("encoder", rnn.ENCODERS)
@pytest.mark.parametrize("pair", [False, True])
def test_decode_with_the_models_own_attention_reproduces_forward(encoder, pair):
    model = tiny_model(encoder, pair, num_classes=3)
    batch = rnn.make_batch(random_set(4, pair))
    out = model(batch)
    assert torch.allclose(out.attention.sum(-1), torch.ones(4, dtype=torch.float64))
    assert (out.attention[~batch.mask] == 0).all()
    enc = out.encoded
    assert torch.allclose(model.decode(enc.h, out.attention, enc.query), out.logits)
    # K distributions per instance in one call == one call per distribution, h unchanged
    alphas = torch.softmax(torch.randn(4, 3, batch.ids.shape[1], dtype=torch.float64), -1) * batch.mask[:, None]
    many = model.decode(enc.h, alphas, enc.query)
    for k in range(3):
        assert torch.allclose(many[:, k], model.decode(enc.h, alphas[:, k], enc.query))


@pytest.mark.parametrize("encoder", rnn.ENCODERS)
def test_outputs_do_not_depend_on_padding_or_batch_mates(encoder):
    model = tiny_model(encoder, pair=True)
    data = random_set(4, pair=True, lengths=[7, 2, 5, 1])
    batched = model.probabilities(model(rnn.make_batch(data)).logits)
    for i in range(4):
        single = model.probabilities(model(rnn.make_batch(data, [i])).logits)
        assert torch.allclose(batched[i], single[0], atol=1e-10)


def test_binary_output_is_sigmoid_and_multiclass_is_softmax():
    model = tiny_model(num_classes=2)
    logits = torch.tensor([[0.3], [-2.0]], dtype=torch.float64)
    p = model.probabilities(logits)
    assert torch.allclose(p[:, 1], torch.sigmoid(logits[:, 0]))
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=p.dtype))
    assert tiny_model(num_classes=3).out.out_features == 3 and model.out.out_features == 1


def test_detached_attention_gradient_matches_the_average_encoders_closed_form():
    """Average encoder (appendix reading, ReLU), α fixed: ∂z/∂e_t = α_t · W₁ᵀ(θ ⊙ 1[W₁e_t + b > 0]) — no path
    through the attention."""
    model = tiny_model("average", average_reading="appendix")
    batch = rnn.make_batch(random_set(1, lengths=[5]))
    e = model.embed(batch.ids).detach().requires_grad_(True)
    out = model(batch, embeds=e, detach_attention=True)
    (g,) = torch.autograd.grad(out.logits.sum(), e)
    W, b, theta = model.encoder.proj.weight, model.encoder.proj.bias, model.out.weight[0]
    alpha = out.attention.detach()[0]
    active = ((e[0] @ W.T + b) > 0).to(e.dtype)
    expected = alpha[:, None] * ((theta * active) @ W)
    assert torch.allclose(g[0], expected, atol=1e-12)
    (g_full,) = torch.autograd.grad(model(batch, embeds=e).logits.sum(), e)
    assert not torch.allclose(g_full, g)  # with the attention attached, the gradient differs


def test_training_learns_a_keyword_task_and_the_cache_reloads_it(lab_dirs):
    gen = np.random.default_rng(0)
    ids, labels = [], []
    for _ in range(160):
        seq = gen.integers(4, 20, int(gen.integers(3, 8))).tolist()
        y = int(gen.integers(0, 2))
        seq[int(gen.integers(0, len(seq)))] = 2 + y  # the label word
        ids.append(seq)
        labels.append(y)
    data = rnn.EncodedSet(ids, labels, None, list(range(160)))
    train, dev = data.subset(range(120)), data.subset(range(120, 160))
    vocab = rnn.Vocab(list(range(100, 118)), WordTokenizer(WORDS))
    cfg = rnn.RNNConfig(vocab_size=20, num_classes=2, encoder="average", embed_dim=8, hidden=4)
    tc = rnn.TrainConfig(epochs=8, batch_size=16, lr=0.03)
    trained = rnn.train_cached("toy", train, dev, vocab, cfg, tc, progress=False)
    assert not trained.from_cache
    acc = rnn.classification_metrics(rnn.predict_proba(trained.model, dev), dev.labels)["accuracy"]
    assert acc >= 0.9
    assert trained.metrics["history"][-1]["train_loss"] < trained.metrics["history"][0]["train_loss"]
    again = rnn.train_cached("toy", train, dev, vocab, cfg, tc, progress=False)
    assert again.from_cache and again.path == trained.path
    assert np.allclose(rnn.predict_proba(again.model, dev), rnn.predict_proba(trained.model, dev))
    other = rnn.train_cached("toy", train, dev, vocab, cfg, rnn.TrainConfig(epochs=1, batch_size=16), progress=False)
    assert other.path != trained.path


def test_classification_metrics():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = rnn.classification_metrics(probs, [0, 1, 1, 1])
    assert m["accuracy"] == 0.75
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_test_metrics_report_the_papers_metric_with_an_interval():
    model, data = tiny_model(), random_set(n=40, seed=3)
    probs = rnn.predict_proba(model, data)
    exact = rnn.classification_metrics(probs, data.labels)
    for metric in ("macro_f1", "accuracy"):
        m = rnn.test_metrics(model, data, metric)
        iv = m["paper_metric_interval"]
        assert m["paper_metric"] == exact[metric] and iv.low <= exact[metric] <= iv.high and iv.n == 40
        assert iv.estimate == pytest.approx(exact[metric], abs=1e-12)  # the resampled statistic is the same metric


@pytest.mark.parametrize("reading, width, act", [("authors", 128, torch.tanh), ("appendix", 256, torch.relu)])
def test_average_readings_are_the_authors_tanh_128_and_the_appendixs_relu_256(reading, width, act):
    """The authors' configuration (generate_average_config: activation tanh, hidden_size 128 = m) and the paper's
    appendix (ReLU, 256) for hidden 128; h_t = act(W e_t + b) on every unpadded position, 0 on padding."""
    torch.manual_seed(0)
    cfg = rnn.RNNConfig(vocab_size=20, num_classes=2, encoder="average", embed_dim=6, hidden=128,
                        average_reading=reading)
    model = rnn.AttentionClassifier(cfg).double().eval()
    assert cfg.hidden_dim == width and model.encoder.proj.out_features == width
    assert model.attention.w1.in_features == width and model.out.in_features == width
    batch = rnn.make_batch(random_set(2, lengths=[5, 3]))
    e = model.embed(batch.ids)
    h = model.encode(batch).h
    expected = act(model.encoder.proj(e)) * batch.mask[..., None]
    assert torch.allclose(h, expected, atol=1e-12)
    assert (h[0] < 0).any() == (reading == "authors")  # tanh goes negative, ReLU never


def test_average_reading_enters_the_cache_key_of_average_models_only():
    """The default (authors) reading has its own key; the appendix reading keeps the key written before the option
    existed (those cached models are all ReLU/256); other encoders' keys do not change."""
    base = dict(vocab_size=20, num_classes=2, embed_dim=6, hidden=4)
    authors = rnn.RNNConfig(encoder="average", **base)
    appendix = rnn.RNNConfig(encoder="average", average_reading="appendix", **base)
    assert authors.average_reading == "authors" and authors.key() != appendix.key()
    old = {k: v for k, v in vars(appendix).items() if k != "average_reading"}
    assert appendix.key() == old
    lstm = [rnn.RNNConfig(encoder="lstm", average_reading=r, **base).key() for r in rnn.AVERAGE_READINGS]
    assert lstm[0] == lstm[1] and "average_reading" not in lstm[0]
    with pytest.raises(rnn.RNNInputError, match="average_reading must be one of"):
        rnn.RNNConfig(encoder="average", average_reading="relu", **base)


def test_a_cached_average_model_from_before_the_option_loads_as_the_appendix_reading(lab_dirs):
    from lab import cache

    model = tiny_model("average", average_reading="appendix").float()
    final = cache.cached_dir("rnn", "old-average")
    config = {k: v for k, v in vars(model.cfg).items() if k != "average_reading"}
    with cache.atomic_dir(final) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        cache.atomic_write_json(tmp / "config.json", {"config": config, "pieces": []})
        cache.atomic_write_json(tmp / "metrics.json", {})
    loaded = rnn.load_trained(final)
    assert loaded.config.average_reading == "appendix" and loaded.config.hidden_dim == 8
