"""More architectures through the adapter: DistilBERT, ELECTRA, DeiT (with and without teacher) and GPT-2- and
Llama-shaped causal LMs explained at their next-token prediction. Tiny random fp64 models built from configs (no
download): the adapter's forwards equal the Hugging Face output, batched == one by one (decoders: left and right
padding), every explainer that applies runs and leaves the model as found, the conserving rules conserve, and
`python -m lab explainers` prints the support table that `explain()` enforces."""
from __future__ import annotations

import pytest
import torch
import transformers as tf

import lab
from lab.cli import main as cli_main
from lab.explainers.base import EXPLAINERS, _hook_state, applies
from lab.models.adapters import ARCHITECTURES, ExplainInputError, get_adapter
from lab.relevance import ATTNLRP, CHEFER, CP_LRP, RelevanceOps
from tests.models import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID, VOCAB, image_batch, text_batch

BOS_ID = 1  # decoders: <s> / <|endoftext|>; content ids >= 5 as in tests.models
ENCODERS = ["distilbert", "electra", "deit", "deit_teacher"]
DECODERS = ["gpt2", "llama"]
KINDS = ENCODERS + DECODERS
SIZES = dict(vocab_size=VOCAB, initializer_range=0.3, attn_implementation="eager")
TEXT_IDS = dict(pad_token_id=PAD_ID, cls_token_id=CLS_ID, sep_token_id=SEP_ID, unk_token_id=UNK_ID,
                mask_token_id=MASK_ID)


def _config(kind):
    if kind == "distilbert":
        return tf.DistilBertConfig(dim=16, n_layers=2, n_heads=4, hidden_dim=32, max_position_embeddings=32,
                                   num_labels=3, dropout=0.0, attention_dropout=0.0, **SIZES, **TEXT_IDS)
    if kind == "electra":  # embedding size != hidden size: the embeddings_project linear is in the graph
        return tf.ElectraConfig(embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=32, max_position_embeddings=32, num_labels=3, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0, **SIZES, **TEXT_IDS)
    if kind.startswith("deit"):
        return tf.DeiTConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, initializer_range=0.3, attn_implementation="eager")
    if kind == "gpt2":  # per-layer score scaling: the adapter must take the scaling from the attention module
        return tf.GPT2Config(n_embd=16, n_layer=2, n_head=4, n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0,
                             attn_pdrop=0.0, scale_attn_by_inverse_layer_idx=True, bos_token_id=BOS_ID,
                             eos_token_id=BOS_ID, pad_token_id=PAD_ID, **SIZES)
    return tf.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=32, bos_token_id=BOS_ID, eos_token_id=2,
                          pad_token_id=PAD_ID, **SIZES)  # grouped-query attention, rotary positions, RMSNorm


MODEL_CLASSES = {"distilbert": tf.DistilBertForSequenceClassification, "electra": tf.ElectraForSequenceClassification,
                 "deit": tf.DeiTForImageClassification, "deit_teacher": tf.DeiTForImageClassificationWithTeacher,
                 "gpt2": tf.GPT2LMHeadModel, "llama": tf.LlamaForCausalLM}


def _lively(model, seed=0):
    """Unit-scale weights and non-zero biases and norm parameters, so that every rule and every bias matters."""
    gen = torch.Generator().manual_seed(seed)
    norms = {name for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)
             or type(m).__name__.endswith("RMSNorm")}
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            owner, _, leaf = name.rpartition(".")
            if owner in norms:
                p.copy_(1.0 + 0.1 * noise if leaf == "weight" else 0.1 * noise)
            elif leaf == "bias":
                p.copy_(0.1 * noise)
            elif p.dim() >= 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
                p.copy_(noise / min(p.shape) ** 0.5)
            else:
                p.copy_(noise)
    return model


def tiny(kind, attn="eager", lively=True):
    torch.manual_seed(0)
    model = MODEL_CLASSES[kind](_config(kind)).to(torch.float64)
    if attn != "eager":
        model.set_attn_implementation(attn)
    return (_lively(model) if lively else model).eval()


def decoder_batch(lengths=(6, 3, 5), side="right", seed=0):
    """<s> content... per row, padded on `side` with PAD_ID."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        row = torch.randint(5, VOCAB, (n,), generator=gen)
        row[0] = BOS_ID
        ids[i, cols], mask[i, cols] = row, 1
    return {"input_ids": ids, "attention_mask": mask}


def batch_for(kind, side="right"):
    if kind in DECODERS:
        return decoder_batch(side=side)
    if kind.startswith("deit"):
        return {"pixel_values": image_batch(3)}
    return text_batch(lengths=(7, 4, 5))


def row(batch, i):
    """Example i alone, without padding (wherever it is)."""
    if "pixel_values" in batch:
        return {"pixel_values": batch["pixel_values"][i:i + 1]}
    keep = batch["attention_mask"][i].bool()
    return {k: v[i:i + 1, keep] for k, v in batch.items()}


def hf_logits(model, kind, batch):
    """The prediction as Hugging Face computes it: classifier logits, or a causal LM's logits at each row's last real
    token (each row run alone, so no padding or position convention is involved)."""
    with torch.no_grad():
        if kind not in DECODERS:
            return model(**batch).logits
        return torch.cat([model(**row(batch, i)).logits[:, -1] for i in range(batch["input_ids"].shape[0])])


# ---- forwards -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_relevance_forward_equal_hugging_face(kind):
    model = tiny(kind)
    for side in (["left", "right"] if kind in DECODERS else ["right"]):
        batch = batch_for(kind, side)
        adapter = get_adapter(model)
        inputs = adapter.prepare(batch)
        reference = hf_logits(model, kind, batch)
        with torch.no_grad():
            torch.testing.assert_close(adapter.forward(inputs).logits, reference, atol=1e-6, rtol=0)
        for composite in (CHEFER, ATTNLRP):
            with torch.enable_grad():
                _, logits = adapter.relevance_forward(inputs, RelevanceOps(composite))
            torch.testing.assert_close(logits.detach(), reference, atol=1e-6, rtol=0)
    assert adapter.num_labels == (VOCAB if kind in DECODERS else 3)


@pytest.mark.parametrize("kind", DECODERS)
def test_decoder_explains_the_next_token_and_refuses_cls_row_methods(kind):
    model = tiny(kind)
    batch = decoder_batch(side="left")
    out = lab.explain(model, batch, "attnlrp")
    torch.testing.assert_close(out.logits, hf_logits(model, kind, batch), atol=1e-6, rtol=0)
    assert torch.equal(out.target, out.logits.argmax(-1)) and out.logits.shape == (3, VOCAB)
    last = out.valid.sum(-1) - 1  # left padding was moved to the right
    assert out.valid[:, 0].all() and not out.special[torch.arange(3), last].any() and out.special[:, 0].all()  # <s>
    with pytest.raises(ExplainInputError, match="reads the attention row of \\[CLS\\].*attnlrp"):
        lab.explain(model, batch, "chefer")
    with pytest.raises(ExplainInputError, match="out of range"):
        lab.explain(model, batch, "attnlrp", target=VOCAB)


# ---- every applicable explainer, batching, hygiene ------------------------------------------------------------


PARAMS = {"integrated_gradients": dict(steps=8), "erasure": dict(token="zero"),
          "mask_lrp": dict(head_mask=torch.ones(2, 4))}
NEEDS_AN_MLM = {"input_marginalization"}


def _applicable(kind):
    adapter = get_adapter(tiny(kind, lively=False))
    return [n for n, s in EXPLAINERS.items() if applies(s, adapter) is None and n not in NEEDS_AN_MLM]


def _snapshot(model):
    return dict(state={k: v.clone() for k, v in model.state_dict().items()}, hooks=_hook_state(model),
                training=[m.training for m in model.modules()], attn=model.config._attn_implementation,
                requires_grad=[p.requires_grad for p in model.parameters()],
                grads=[p.grad is None for p in model.parameters()])


@pytest.mark.parametrize("kind", KINDS)
def test_every_applicable_explainer_runs_and_leaves_the_model_unchanged(kind):
    model = tiny(kind, attn="sdpa").train()  # explain() must switch to eager and eval, and restore both
    for p in list(model.parameters())[::3]:
        p.requires_grad_(False)
    batch = batch_for(kind, side="left")
    before = _snapshot(model)
    methods = _applicable(kind)
    assert {"attnlrp", "cp_lrp", "lrp", "grad_x_input", "integrated_gradients", "leave_one_out"} <= set(methods)
    assert ("chefer" in methods) == (kind in ("distilbert", "electra", "deit"))
    for method in methods:
        out = lab.explain(model, batch, method, **PARAMS.get(method, {}))
        assert torch.isfinite(out.scores).all(), method
        shape = (3, 16, 16) if out.unit == "pixel" else out.valid.shape
        assert out.scores.shape == shape and out.valid.shape == out.special.shape, method
        if kind.startswith("deit") and out.unit == "patch":
            assert out.patch_map().shape == (3, 4, 4) and out.valid.shape == (3, 18)
    after = _snapshot(model)
    assert before.keys() == after.keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k
    for key in ("hooks", "training", "attn", "requires_grad", "grads"):
        assert before[key] == after[key], key


BATCH_METHODS = {"distilbert": ["chefer", "attnlrp", "grad_x_input"], "electra": ["chefer", "cp_lrp", "saliency"],
                 "deit": ["chefer", "attnlrp"], "deit_teacher": ["attnlrp", "lrp"],
                 "gpt2": ["attnlrp", "cp_lrp", "grad_x_input", "leave_one_out"], "llama": ["attnlrp", "cp_lrp",
                                                                                            "grad_x_input"]}


@pytest.mark.parametrize("kind", KINDS)
def test_batched_equals_one_by_one(kind):
    model = tiny(kind)
    for side in (["left", "right"] if kind in DECODERS else ["right"]):
        batch = batch_for(kind, side)
        for method in BATCH_METHODS[kind]:
            full = lab.explain(model, batch, method)
            for i in range(3):
                single = lab.explain(model, row(batch, i), method)
                keep = full.valid[i] if full.unit != "pixel" else torch.ones_like(full.scores[i], dtype=torch.bool)
                torch.testing.assert_close(full.scores[i][keep], single.scores[0].flatten(), atol=1e-5, rtol=1e-5)
                assert torch.all(full.scores[i][~keep] == 0)
                assert full.target[i] == single.target[0]


# ---- conservation (fp64) ---------------------------------------------------------------------------------------


def _relevance(adapter, inputs, ops):
    with torch.enable_grad():
        leaf, logits = adapter.relevance_forward(inputs, ops)
        seed = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        (relevance,) = torch.autograd.grad(logits, leaf, seed)
    return relevance.sum((1, 2))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp"])
def test_attnlrp_and_cp_lrp_conserve_once_absorbed_relevance_is_counted(kind, method):
    """As tests/test_attnlrp.py on BERT and ViT: the epsilon, norm and softmax rules leave relevance to biases;
    counting it, input relevance + absorbed = the target's one-hot start. On decoders this covers the rotary
    split, the gated MLP product (uniform / gate-constant rule) and grouped-query attention."""
    model = tiny(kind)
    adapter = get_adapter(model)
    ops = RelevanceOps({"attnlrp": ATTNLRP, "cp_lrp": CP_LRP}[method], record_absorbed=True)
    total = _relevance(adapter, adapter.prepare(batch_for(kind, side="left")), ops)
    if kind == "llama" and method == "cp_lrp":  # no biases, and the softmax is skipped: nothing to absorb
        assert (total - 1).abs().max() < 1e-5
    else:
        assert (total - 1).abs().max() > 1e-3  # biases and the softmax do absorb a visible share
    torch.testing.assert_close(total + ops.absorbed, torch.ones_like(total), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ENCODERS)
def test_chefer_conserves_in_every_block_without_biases(kind):
    """Chefer's rules conserve once the biases (which take relevance in Eq. 6) are zero; as in test_relevance, on
    the model as initialised (scale 0.3, biases and norm shifts 0; unit-scale random weights can meet a near-zero
    denominator in Eq. 6 / Sec. 3.2 and lose up to ~1e-3 in one block)."""
    model = tiny(kind, lively=False)
    assert all(p.abs().max() == 0 for name, p in model.named_parameters() if name.endswith("bias"))
    adapter = get_adapter(model)
    ops = RelevanceOps(CHEFER)
    total = _relevance(adapter, adapter.prepare(batch_for(kind)), ops)
    ones = torch.ones(3, dtype=torch.float64)
    if kind != "electra":  # ELECTRA's leaf is before the 8 -> 16 embeddings_project, where one neuron of this
        torch.testing.assert_close(total, ones, atol=1e-5, rtol=0)  # model has no positive input: Eq. 6 drops it
    assert len(ops.block_totals) == 3
    for name, block_total in ops.block_totals.items():
        torch.testing.assert_close(block_total, ones, atol=1e-5, rtol=0, msg=name)


# ---- the support table -------------------------------------------------------------------------------------


def test_cli_prints_the_support_table_that_explain_enforces(capsys):
    assert cli_main(["explainers"]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if "GPT-2" in line and "DistilBERT" in line)
    names = [a.name for a in ARCHITECTURES]
    starts = [header.index(n) for n in names]
    for name, spec in EXPLAINERS.items():
        line = next(ln for ln in text.splitlines() if ln.split() and ln.split()[0] == name and ln.count("yes"))
        marks = ["yes" in line[s:s + len(n)] for s, n in zip(starts, names)]
        assert marks == [applies(spec, a.adapter, a.classes) is None for a in ARCHITECTURES], name
    chefer = dict(zip(names, [applies(EXPLAINERS["chefer"], a.adapter) is None for a in ARCHITECTURES]))
    assert chefer["DistilBERT"] and chefer["DeiT"] and not chefer["GPT-2 (next token)"]
    assert all(applies(EXPLAINERS["attnlrp"], a.adapter) is None for a in ARCHITECTURES)
    wu_ong = dict(zip(names, [applies(EXPLAINERS["lrp_wu_ong"], a.adapter, a.classes) is None for a in ARCHITECTURES]))
    assert wu_ong["BERT / MiniLM"] and wu_ong["RoBERTa"] and not wu_ong["ELECTRA"] and not wu_ong["DistilBERT"]


def test_an_explainer_limited_to_model_classes_refuses_others_in_one_line():
    model = tiny("distilbert")
    with pytest.raises(ExplainInputError, match="lrp_wu_ong.*BertForSequenceClassification.*DistilBert"):
        lab.explain(model, text_batch(), "lrp_wu_ong", target=0)


def test_bench_times_a_decoder_with_the_explainers_that_apply():
    from lab import bench

    label, model, inputs = bench.decoder_setup(batch=2, length=8, layers=1, width=16, vocab=VOCAB)
    rows = bench.bench_model(label, model, inputs, ["attnlrp", "cp_lrp", "chefer"], repeat=1)
    assert [r["method"] for r in rows] == ["(forward+backward)", "attnlrp", "cp_lrp"]
    assert all(r["model"] == "gpt2-next-token" and r["ratio_fb"] > 0 for r in rows)


def test_tour_explains_a_next_token_and_falls_back_to_a_random_model_with_a_warning(lab_dirs):
    from matplotlib.figure import Figure

    from lab.experiments.tour import explain_next_token, next_token_panels, tour_causal_lm

    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        model, tokenizer, note = tour_causal_lm("smoke")  # empty cache: notebook 06 has not run
    assert "not cached" in note and type(model).__name__ == "GPT2LMHeadModel"
    out = explain_next_token(model, tokenizer, "a gripping film", ["attnlrp", "grad_x_input"])
    exp = out["attnlrp"]
    assert exp.tokens[0][0] == tokenizer.cls_token and exp.logits.shape == (1, tokenizer.vocab_size)
    assert torch.isfinite(exp.scores).all() and exp.scores.shape == (1, len(exp.tokens[0]))
    assert isinstance(next_token_panels(out, tokenizer), Figure)


def test_special_tokens_come_from_the_tokenizer_saved_with_the_checkpoint(tmp_path):
    """BERT configs name only [PAD]; [CLS]/[SEP] come from the tokenizer saved beside the weights (no id is hard-coded:
    here [CLS]=7 and [SEP]=9, not BERT's 101/102)."""
    from tests.models import tiny_bert

    vocab = ["[PAD]", "[UNK]", "a", "b", "c", "d", "e", "[CLS]", "[MASK]", "[SEP]", "film", "good"]
    tokenizer = tf.BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id) == (7, 9)
    tokenizer.save_pretrained(tmp_path)
    model = tiny_bert()
    for kind in ("cls", "sep", "unk", "mask"):
        setattr(model.config, f"{kind}_token_id", None)
    model.save_pretrained(tmp_path)
    loaded = tf.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[7, 10, 11, 9, 0]])
    special = get_adapter(loaded).special_mask({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 1, 0]])})
    assert special.tolist() == [[True, False, False, True, True]]


# ---- what the adapter tells the rest of lab (the one file that knows Hugging Face module names) ---------------


def _text_model(kind):
    from tests.models import tiny_bert, tiny_roberta

    return {"bert": tiny_bert, "roberta": tiny_roberta}[kind]() if kind in ("bert", "roberta") else tiny(kind)


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "electra"])
def test_classify_is_the_models_own_head_on_the_last_hidden_states(kind):
    model = _text_model(kind)
    with torch.no_grad():
        out = model(**text_batch(), output_hidden_states=True)
        got = get_adapter(model).classify(out.hidden_states[-1])
    assert torch.equal(got, out.logits)


def test_head_modules_are_the_modules_after_the_last_block_in_order():
    from tests.models import tiny_bert, tiny_roberta, tiny_vit

    bert, roberta, vit = tiny_bert(), tiny_roberta(), tiny_vit()
    expected = {bert: [bert.classifier, bert.bert.pooler], roberta: [roberta.classifier],
                vit: [vit.classifier, vit.vit.layernorm]}
    for model, modules in expected.items():
        got = get_adapter(model).head_modules()
        assert len(got) == len(modules) and all(a is b for a, b in zip(got, modules))


def test_erasure_takes_the_token_id_from_the_tokenizer_when_the_config_names_none():
    from types import SimpleNamespace

    from tests.models import tiny_bert

    model = tiny_bert()
    model.config.mask_token_id = None
    tokenizer = SimpleNamespace(mask_token_id=MASK_ID, pad_token_id=PAD_ID, convert_ids_to_tokens=lambda ids: ids)
    assert get_adapter(model, tokenizer).token_ids["mask"] == MASK_ID
    by_name = lab.explain(model, text_batch(), "erasure", target=0, token="mask", tokenizer=tokenizer)
    by_id = lab.explain(model, text_batch(), "erasure", target=0, token_id=MASK_ID)
    assert torch.equal(by_name.scores, by_id.scores) and by_name.params["token_id"] == MASK_ID


def test_bert_style_module_access_runs_the_model_in_parts():
    from lab.models import adapters
    from tests.models import tiny_bert

    model = tiny_bert(layers=3)
    batch = text_batch()
    blocks = adapters.encoder_blocks(model)
    assert adapters.embedding_module(model) is model.bert.embeddings and blocks is model.bert.encoder.layer
    assert adapters.encoder_blocks(tiny("distilbert")) is None and adapters.embedding_module(tiny("deit")) is not None
    with torch.no_grad():
        full = model.bert(**batch, output_hidden_states=True).hidden_states
        assert torch.equal(adapters.embedding_module(model)(input_ids=batch["input_ids"]), full[0])
        with adapters.only_blocks(model, slice(0, 2)):
            assert len(adapters.encoder_blocks(model)) == 2
            assert torch.equal(model.bert(**batch).last_hidden_state, full[2])
    assert adapters.encoder_blocks(model) is blocks
    assert any(key.endswith(adapters.WORD_EMBEDDINGS_KEY) for key in model.state_dict())


@pytest.mark.parametrize("kind", ["distilbert", "electra"])
def test_attention_readout_decodes_the_models_own_attention_row(kind):
    """Jain & Wallace's last-block decoder comes from the adapter's layout: given the model's own [CLS] attention it
    returns the model's prediction (so any family the layout describes, not only BERT, can be tested)."""
    from lab.analysis import attention_tests as at

    model, batch = tiny(kind), batch_for(kind)
    view = at.transformer_view(model, batch)
    assert torch.allclose(view.probs, hf_logits(model, kind, batch).softmax(-1), atol=1e-10)
    assert torch.allclose(view.decode(view.alpha[:, None])[:, 0], view.probs, atol=1e-10)
    assert not torch.allclose(view.decode(view.shown[:, None])[:, 0], view.probs, atol=1e-6)


@pytest.mark.parametrize("kind", ["gpt2", "deit"])
def test_attention_readout_refuses_models_that_do_not_read_cls(kind):
    from lab.analysis import attention_tests as at

    with pytest.raises(at.AttentionTestError, match="read \\[CLS\\]"):
        at.last_block_cls_decoder(get_adapter(tiny(kind)), torch.zeros(1, 3, 32, dtype=torch.float64))
