"""Jain & Wallace (2019) attention classifiers: embeddings -> encoder -> attention -> decoder (Sec. 2).

    vocab = Vocab.build(load_tokenizer("minilm"), train_texts)        # word pieces seen in training
    data = encode_examples(vocab, dataset, max_length=256)              # ids (+ query ids) and labels
    cfg = RNNConfig(vocab_size=len(vocab), num_classes=2, encoder="lstm", attention="tanh")
    trained = train_cached("sst_jw", data_train, data_dev, vocab, cfg, TrainConfig(epochs=4))
    out = trained.model(make_batch(data_test, range(8)))               # logits, attention α̂, encoder states

Model pieces (REPRODUCTION_SPEC 003.1 / 003.3):
- embedding E (pretrained rows when given; pad row 0);
- encoder h = Enc(x_e) ∈ R^{T×m}: "lstm" (BiLSTM, m = 2·hidden), "average" (h_t = act(W e_t + b); `average_reading`
  "authors" = tanh with m = hidden, i.e. tanh/128, the authors' configuration `generate_average_config`; "appendix"
  = ReLU with m = 2·hidden, i.e. ReLU/256 as the paper's appendix states), "cnn" (kernels 1/3/5/7 × hidden/2
  filters, ReLU, m = 2·hidden);
- attention α̂ = softmax(φ(h, Q)): "tanh" (additive, φ = vᵀ tanh(W₁h + W₂Q)) or "dot" (scaled, φ = h·Q/√m); without a
  query (single-sequence classification) Q is absent for "tanh" and a learned vector for "dot";
- decoder ŷ = σ(θ·h_α) for two classes (one logit), softmax(θ·h_α) otherwise; for pairs (SNLI premise/hypothesis,
  bAbI story/question) the query Q = Enc_q(question)'s final state enters the attention and the decoder
  (logits = W_o tanh(W_p h_α + W_q Q), the authors' QA decoder).

The API separates the three stages so the attention tests can decode with externally supplied attention while the
encoder states stay fixed (`decode(h, α, query)` = Dec(h, α)) and compute gradients with attention detached
(`forward(batch, embeds=e, detach_attention=True)`).

Training: maximum likelihood, Adam (PyTorch defaults, lr 1e-3), ℓ2 1e-5 on all parameters (Adam weight_decay), the
epoch with the best development accuracy is kept; cached in ``cache_dir()/rnn/<key>`` (written atomically).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lab import cache, stats
from lab.data import load
from lab.progress import progress as progress_bar

PAD, UNK = 0, 1
ENCODERS = ("lstm", "average", "cnn")
ATTENTIONS = ("tanh", "dot")
AVERAGE_READINGS = {"authors": ("tanh", 1), "appendix": ("relu", 2)}  # reading -> (activation, m / hidden)
CNN_KERNELS = (1, 3, 5, 7)
RNN_VERSION = 1  # bump when the model or training procedure changes (invalidates cached models)


class RNNInputError(ValueError):
    """Bad input to the Jain & Wallace models; the message says what to change."""


# ---------------------------------------------------------------- vocabulary and data
@dataclass
class Vocab:
    """Word pieces of a tokenizer seen in the training texts: id 0 = pad, 1 = unk, 2.. = `pieces` (tokenizer ids)."""

    pieces: list[int]
    tokenizer: object = field(repr=False, default=None)

    def __post_init__(self):
        self._index = {p: i + 2 for i, p in enumerate(self.pieces)}

    def __len__(self) -> int:
        return len(self.pieces) + 2

    @classmethod
    def build(cls, tokenizer, texts: Sequence[str], min_count: int = 1) -> "Vocab":
        counts: dict[int, int] = {}
        for ids in _tokenize(tokenizer, texts):
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
        pieces = sorted(p for p, c in counts.items() if c >= min_count)
        return cls(pieces, tokenizer)

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """Vocabulary ids of each text (word pieces, no special tokens), truncated to `max_length`."""
        out = []
        for ids in _tokenize(self.tokenizer, texts):
            ids = [self._index.get(i, UNK) for i in ids]
            out.append(ids[:max_length] if max_length else ids)
        return out

    def tokens(self, ids: Sequence[int]) -> list[str]:
        unk = getattr(self.tokenizer, "unk_token", "[UNK]")
        pieces = [self.pieces[i - 2] if i >= 2 else None for i in ids]
        names = self.tokenizer.convert_ids_to_tokens([p if p is not None else 0 for p in pieces])
        return ["<pad>" if i == PAD else unk if i == UNK else n for i, n in zip(ids, names)]

    def embedding_matrix(self, table: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Rows of a pretrained table [tokenizer vocab, d] for our ids; pad = 0, unk = the tokenizer's unk row
        (or N(0, σ²) with the table's σ when the tokenizer has none)."""
        out = torch.zeros(len(self), table.shape[1], dtype=torch.float32)
        out[2:] = table[torch.as_tensor(self.pieces, dtype=torch.long)].float()
        unk_id = getattr(self.tokenizer, "unk_token_id", None)
        if unk_id is not None and 0 <= unk_id < table.shape[0]:
            out[UNK] = table[unk_id].float()
        else:
            gen = torch.Generator().manual_seed(seed)
            out[UNK] = torch.randn(table.shape[1], generator=gen) * float(table.std())
        return out

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.pieces).encode()).hexdigest()[:16]


def _tokenize(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if tokenizer is None:
        raise RNNInputError("Vocab has no tokenizer; build it with Vocab.build(tokenizer, texts)")
    texts = list(texts)
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]


@dataclass
class EncodedSet:
    """A dataset as vocabulary ids: `ids[i]` the (premise/story) sequence, `query_ids[i]` the hypothesis/question
    (pairs only), `labels[i]`, `index[i]` the example's position in the source dataset."""

    ids: list[list[int]]
    labels: list[int]
    query_ids: list[list[int]] | None = None
    index: list[int] = field(default_factory=list)
    label_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def pair(self) -> bool:
        return self.query_ids is not None

    def subset(self, rows: Sequence[int]) -> "EncodedSet":
        rows = list(rows)
        q = None if self.query_ids is None else [self.query_ids[r] for r in rows]
        return EncodedSet([self.ids[r] for r in rows], [self.labels[r] for r in rows], q,
                          [self.index[r] for r in rows], self.label_names)

    def digest(self) -> str:
        blob = json.dumps([self.ids, self.labels, self.query_ids]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def encode_examples(vocab: Vocab, dataset, max_length: int | None = None) -> EncodedSet:
    """Encode a `lab.data.TextDataset` (text [+ text_pair]); examples with no word piece are dropped."""
    examples = list(dataset)
    pair = any(e.text_pair is not None for e in examples)
    ids = vocab.encode([e.text for e in examples], max_length)
    qids = vocab.encode([e.text_pair or "" for e in examples], max_length) if pair else None
    keep = [i for i in range(len(examples)) if ids[i] and (not pair or qids[i])]
    return EncodedSet([ids[i] for i in keep], [int(examples[i].label) for i in keep],
                      None if qids is None else [qids[i] for i in keep], keep,
                      tuple(getattr(dataset, "label_names", ()) or ()))


@dataclass
class Batch:
    """Right-padded id tensors: ids [B, T] (pad 0) with lengths [B]; query_ids/query_lengths for pairs."""

    ids: torch.Tensor
    lengths: torch.Tensor
    query_ids: torch.Tensor | None = None
    query_lengths: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        return torch.arange(self.ids.shape[1], device=self.ids.device)[None] < self.lengths[:, None]

    def __len__(self) -> int:
        return self.ids.shape[0]

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.ids), move(self.lengths), move(self.query_ids), move(self.query_lengths),
                     move(self.labels))


def pad_sequences(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.as_tensor([len(s) for s in seqs], dtype=torch.long)
    if (lengths == 0).any():
        raise RNNInputError("every sequence needs at least one token")
    ids = torch.full((len(seqs), int(lengths.max())), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return ids, lengths


def make_batch(data: EncodedSet, rows: Sequence[int] | None = None) -> Batch:
    rows = range(len(data)) if rows is None else list(rows)
    ids, lengths = pad_sequences([data.ids[r] for r in rows])
    q = ql = None
    if data.query_ids is not None:
        q, ql = pad_sequences([data.query_ids[r] for r in rows])
    labels = torch.as_tensor([data.labels[r] for r in rows], dtype=torch.long)
    return Batch(ids, lengths, q, ql, labels)


def length_batches(lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Batches of similar length (less padding): sort by length, cut, and shuffle the batch order when training."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    if shuffle:  # jitter within chunks so that batches differ between epochs
        rng = np.random.default_rng(seed)
        noisy = np.asarray(lengths) + rng.uniform(0, 2, len(lengths))
        order = np.argsort(noisy, kind="stable")
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


# ---------------------------------------------------------------- model
@dataclass(frozen=True)
class RNNConfig:
    vocab_size: int
    num_classes: int
    encoder: str = "lstm"
    attention: str = "tanh"
    embed_dim: int = 384
    hidden: int = 128  # BiLSTM hidden per direction; CNN (and the Average's "appendix" reading) m = 2·hidden
    pair: bool = False
    average_reading: str = "authors"  # Average encoder: "authors" (tanh, m = hidden) | "appendix" (ReLU, m = 2·hidden)

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise RNNInputError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.average_reading not in AVERAGE_READINGS:
            raise RNNInputError(f"average_reading must be one of {tuple(AVERAGE_READINGS)}, got "
                                f"{self.average_reading!r}")
        if self.attention not in ATTENTIONS:
            raise RNNInputError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.num_classes < 2:
            raise RNNInputError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.hidden < 2 or self.embed_dim < 1 or self.vocab_size < 3:
            raise RNNInputError(f"hidden >= 2, embed_dim >= 1 and vocab_size >= 3 required, got {self}")

    @property
    def hidden_dim(self) -> int:
        """m, the size of each h_t."""
        if self.encoder == "average":
            return AVERAGE_READINGS[self.average_reading][1] * self.hidden
        return 2 * self.hidden if self.encoder != "cnn" else len(CNN_KERNELS) * max(1, (2 * self.hidden) // 4)

    def key(self) -> dict:
        """The settings that change this model's weights (a cache key). `average_reading` enters only for the Average
        encoder's "authors" reading: keys written before the option existed (all of them "appendix") stay valid."""
        out = asdict(self)
        if self.encoder != "average" or self.average_reading == "appendix":
            out.pop("average_reading")
        return out


class LSTMEncoder(nn.Module):
    """BiLSTM; h_t = [→h_t; ←h_t], the final state = [→h_T; ←h_1]."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.rnn = nn.LSTM(d, hidden, batch_first=True, bidirectional=True)

    def forward(self, e, lengths, mask):
        packed = pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.rnn(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=e.shape[1])
        return h, torch.cat([h_n[0], h_n[1]], dim=-1)


class AverageEncoder(nn.Module):
    """h_t = act(W e_t + b), act = tanh or ReLU (no interaction between tokens); the final state is the mean of the
    h_t over the unpadded positions."""

    def __init__(self, d: int, m: int, activation: str = "tanh"):
        super().__init__()
        self.proj = nn.Linear(d, m)
        self.activation = {"tanh": torch.tanh, "relu": torch.relu}[activation]

    def forward(self, e, lengths, mask):
        h = self.activation(self.proj(e)) * mask[..., None]
        return h, h.sum(1) / lengths[:, None].to(h.dtype)


class CNNEncoder(nn.Module):
    """Convolutions of widths 1/3/5/7 (same padding) + ReLU, concatenated; the final state is a masked max."""

    def __init__(self, d: int, filters: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(d, filters, k, padding=k // 2) for k in CNN_KERNELS)

    def forward(self, e, lengths, mask):
        x = (e * mask[..., None]).transpose(1, 2)
        h = torch.cat([torch.relu(c(x)) for c in self.convs], dim=1).transpose(1, 2) * mask[..., None]
        return h, h.masked_fill(~mask[..., None], float("-inf")).amax(1)


def _encoder(cfg: RNNConfig) -> nn.Module:
    if cfg.encoder == "lstm":
        return LSTMEncoder(cfg.embed_dim, cfg.hidden)
    if cfg.encoder == "average":
        return AverageEncoder(cfg.embed_dim, cfg.hidden_dim, AVERAGE_READINGS[cfg.average_reading][0])
    return CNNEncoder(cfg.embed_dim, cfg.hidden_dim // len(CNN_KERNELS))


class AdditiveAttention(nn.Module):
    """φ(h, Q) = vᵀ tanh(W₁ h_t + W₂ Q) (Bahdanau), attention size m/2."""

    def __init__(self, m: int, pair: bool):
        super().__init__()
        self.w1 = nn.Linear(m, max(1, m // 2))
        self.w2 = nn.Linear(m, max(1, m // 2), bias=False) if pair else None
        self.v = nn.Linear(max(1, m // 2), 1, bias=False)

    def forward(self, h, query):
        s = self.w1(h)
        if query is not None:
            s = s + self.w2(query)[:, None]
        return self.v(torch.tanh(s)).squeeze(-1)


class DotAttention(nn.Module):
    """φ(h, Q) = h_t·Q / √m (Vaswani); Q is a learned vector when there is no query."""

    def __init__(self, m: int, pair: bool):
        super().__init__()
        self.scale = 1.0 / math.sqrt(m)
        self.q = None if pair else nn.Parameter(torch.randn(m) * self.scale)

    def forward(self, h, query):
        q = self.q.expand(h.shape[0], -1) if query is None else query
        return (h * q[:, None]).sum(-1) * self.scale


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


@dataclass
class Encoded:
    """Encoder output held fixed by the attention tests: h [B, T, m], mask [B, T], query [B, m] or None."""

    h: torch.Tensor
    mask: torch.Tensor
    query: torch.Tensor | None = None


@dataclass
class Output:
    logits: torch.Tensor  # [B, 1] (two classes) or [B, C]
    attention: torch.Tensor  # α̂ [B, T], 0 on padding
    encoded: Encoded


class AttentionClassifier(nn.Module):
    """Embedding → encoder → attention → decoder, with the stages exposed (see the module docstring)."""

    def __init__(self, cfg: RNNConfig, embeddings: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        if embeddings is not None:
            if tuple(embeddings.shape) != (cfg.vocab_size, cfg.embed_dim):
                raise RNNInputError(f"embeddings have shape {tuple(embeddings.shape)}, expected "
                                    f"({cfg.vocab_size}, {cfg.embed_dim})")
            with torch.no_grad():
                self.embedding.weight.copy_(embeddings)
                self.embedding.weight[PAD] = 0.0
        m = cfg.hidden_dim
        self.encoder = _encoder(cfg)
        self.query_encoder = _encoder(cfg) if cfg.pair else None
        self.attention = (AdditiveAttention if cfg.attention == "tanh" else DotAttention)(m, cfg.pair)
        n_out = 1 if cfg.num_classes == 2 else cfg.num_classes
        if cfg.pair:
            self.linear_p, self.linear_q = nn.Linear(m, m), nn.Linear(m, m)
        self.out = nn.Linear(m, n_out)

    # ---- the three stages ----
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def encode(self, batch: Batch, embeds: torch.Tensor | None = None) -> Encoded:
        """h = Enc(x_e) (and the query's final state for pairs); `embeds` replaces E[x] (for input gradients)."""
        mask = batch.mask
        e = self.embed(batch.ids) if embeds is None else embeds
        h, _ = self.encoder(e, batch.lengths, mask)
        query = None
        if self.cfg.pair:
            if batch.query_ids is None:
                raise RNNInputError("this model attends conditioned on a query: the batch needs query_ids")
            qmask = torch.arange(batch.query_ids.shape[1], device=mask.device)[None] < batch.query_lengths[:, None]
            _, query = self.query_encoder(self.embed(batch.query_ids), batch.query_lengths, qmask)
        return Encoded(h, mask, query)

    def attend(self, enc: Encoded) -> torch.Tensor:
        """α̂ = softmax(φ(h, Q)) over the unpadded positions: [B, T]."""
        return masked_softmax(self.attention(enc.h, enc.query), enc.mask)

    def decode(self, h: torch.Tensor, alpha: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        """Dec(h, α): logits from h [B, T, m] and any attention α [B, T] or [B, K, T] (K distributions per
        instance decoded in one call, h unchanged); returns [B, out] or [B, K, out]."""
        if alpha.dim() == 2:
            context = torch.einsum("bt,btm->bm", alpha.to(h.dtype), h)
        elif alpha.dim() == 3:
            context = torch.einsum("bkt,btm->bkm", alpha.to(h.dtype), h)
            if query is not None:
                query = query[:, None].expand(-1, alpha.shape[1], -1)
        else:
            raise RNNInputError(f"alpha must be [B, T] or [B, K, T], got shape {list(alpha.shape)}")
        if self.cfg.pair:
            if query is None:
                raise RNNInputError("decode: this model needs the query representation (Encoded.query)")
            context = torch.tanh(self.linear_p(context) + self.linear_q(query))
        return self.out(context)

    def forward(self, batch: Batch, embeds: torch.Tensor | None = None, detach_attention: bool = False) -> Output:
        enc = self.encode(batch, embeds)
        alpha = self.attend(enc)
        used = alpha.detach() if detach_attention else alpha  # Jain & Wallace App. B: attention as a fixed input
        return Output(self.decode(enc.h, used, enc.query), alpha, enc)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Output distribution ŷ over the classes: [1 − σ(z), σ(z)] for two classes, softmax otherwise."""
        if self.cfg.num_classes == 2:
            p = torch.sigmoid(logits[..., 0])
            return torch.stack([1 - p, p], dim=-1)
        return torch.softmax(logits, dim=-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.cfg.num_classes == 2:
            return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype))
        return F.cross_entropy(logits, labels)


# ---------------------------------------------------------------- training and evaluation
@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5  # ℓ2 on all parameters (Jain & Wallace App. A)
    seed: int = 0


@dataclass
class TrainedRNN:
    model: AttentionClassifier
    vocab: Vocab
    metrics: dict
    path: Path | None = None
    from_cache: bool = False

    @property
    def config(self) -> RNNConfig:
        return self.model.cfg


def predict_proba(model: AttentionClassifier, data: EncodedSet, batch_size: int = 128) -> np.ndarray:
    """ŷ for every example of `data` (in its order): [N, C]."""
    out = np.zeros((len(data), model.cfg.num_classes), dtype=np.float32)
    was = model.training
    model.eval()
    with torch.no_grad():
        for rows in length_batches([len(s) for s in data.ids], batch_size, shuffle=False):
            out[rows] = model.probabilities(model(make_batch(data, rows)).logits).numpy()
    model.train(was)
    return out


def classification_metrics(probs: np.ndarray, labels: Sequence[int]) -> dict:
    """accuracy and macro-F1 (Jain & Wallace Table 1 reports F1 for classification, accuracy for QA, micro-F1 for
    NLI; micro-F1 equals accuracy for single-label data)."""
    pred, gold = probs.argmax(-1), np.asarray(labels)
    f1s = []
    for c in range(probs.shape[1]):
        tp = float(((pred == c) & (gold == c)).sum())
        denom = float((pred == c).sum() + (gold == c).sum())
        if (gold == c).any() or (pred == c).any():
            f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float((pred == gold).mean()), "macro_f1": float(np.mean(f1s)), "n": int(len(gold))}


def test_metrics(model: AttentionClassifier, data: EncodedSet, paper_metric: str = "macro_f1") -> dict:
    """`classification_metrics` on `data` plus ``paper_metric`` (the value of "macro_f1" or "accuracy") and
    ``paper_metric_interval``, its 95 % bootstrap interval over the examples."""
    probs = predict_proba(model, data)
    m = classification_metrics(probs, data.labels)
    m["paper_metric"] = m[paper_metric]
    pred_gold = np.stack([probs.argmax(-1), np.asarray(data.labels)], 1)
    m["paper_metric_interval"] = stats.bootstrap(pred_gold, _macro_f1 if paper_metric == "macro_f1" else _accuracy)
    return m


def _accuracy(pred_gold: np.ndarray) -> float:
    return float(np.mean(pred_gold[:, 0] == pred_gold[:, 1]))


def _macro_f1(pred_gold: np.ndarray) -> float:
    """Macro-F1 of rows (predicted, gold), as `classification_metrics` computes it."""
    pred, gold = pred_gold[:, 0], pred_gold[:, 1]
    f1s = [2 * np.sum((pred == c) & (gold == c)) / (np.sum(pred == c) + np.sum(gold == c))
           for c in np.union1d(pred, gold)]
    return float(np.mean(f1s))


def fit(model: AttentionClassifier, train: EncodedSet, dev: EncodedSet | None, tc: TrainConfig,
        progress: bool = True, desc: str = "train") -> dict:
    """Adam + ℓ2; keeps the parameters of the epoch with the best dev accuracy (last epoch without dev)."""
    torch.manual_seed(tc.seed)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    history, best, best_state = [], -1.0, None
    start = time.perf_counter()
    lengths = [len(s) + (len(train.query_ids[i]) if train.pair else 0) for i, s in enumerate(train.ids)]
    for epoch in range(tc.epochs):
        model.train()
        total, n = 0.0, 0
        batches = length_batches(lengths, tc.batch_size, shuffle=True, seed=tc.seed + epoch)
        for rows in progress_bar(batches, f"{desc} epoch {epoch + 1}/{tc.epochs}", progress):
            batch = make_batch(train, rows)
            loss = model.loss(model(batch).logits, batch.labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * len(rows), n + len(rows)
        record = {"epoch": epoch + 1, "train_loss": total / max(n, 1)}
        if dev is not None and len(dev):
            record["dev_accuracy"] = classification_metrics(predict_proba(model, dev), dev.labels)["accuracy"]
        history.append(record)
        score = record.get("dev_accuracy", epoch)
        if score > best:
            best, best_state = score, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    best_epoch = max(history, key=lambda r: r.get("dev_accuracy", r["epoch"]))["epoch"]
    return {"history": history, "best_epoch": best_epoch, "train_seconds": round(time.perf_counter() - start, 1),
            "n_train": len(train), "n_dev": len(dev) if dev is not None else 0}


def train_cached(name: str, train: EncodedSet, dev: EncodedSet | None, vocab: Vocab, cfg: RNNConfig,
                 tc: TrainConfig, embeddings: torch.Tensor | None = None, embeddings_id: str = "random",
                 force: bool = False, progress: bool = True) -> TrainedRNN:
    """Train (or load from the cache) one model; the key covers the data, vocabulary, config and training config."""
    key = cache.cache_key(f"{name}-{cfg.encoder}-{cfg.attention}", version=RNN_VERSION, config=cfg.key(),
                          train=asdict(tc), data=train.digest(), dev=dev.digest() if dev is not None else None,
                          vocab=vocab.digest(), embeddings=embeddings_id)
    final = cache.cached_dir("rnn", key)
    if not force and cache.verify(final):
        return load_trained(final, vocab.tokenizer)
    torch.manual_seed(tc.seed)
    model = AttentionClassifier(cfg, embeddings)
    metrics = fit(model, train, dev, tc, progress=progress, desc=f"{name}/{cfg.encoder}")
    with cache.atomic_dir(final) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        cache.atomic_write_json(tmp / "config.json", {"config": asdict(cfg), "pieces": vocab.pieces})
        cache.atomic_write_json(tmp / "metrics.json", metrics)
    cache.record_checkpoint(final)
    return TrainedRNN(model, vocab, metrics, final, from_cache=False)


def load_trained(path: str | Path, tokenizer=None) -> TrainedRNN:
    """Load a model written by `train_cached` (refuses an incomplete or corrupt one: `lab.cache.verify`)."""
    path = Path(path)
    if not cache.verify(path):
        raise FileNotFoundError(f"{path} is not a complete, intact cached model; train it again")
    meta = cache.read_json(path / "config.json")
    cfg = RNNConfig(**{"average_reading": "appendix", **meta["config"]})  # older entries: the appendix reading
    model = AttentionClassifier(cfg)
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    cache.record_checkpoint(path)
    return TrainedRNN(model, Vocab(meta["pieces"], tokenizer), cache.read_json(path / "metrics.json"), path,
                      from_cache=True)


def pretrained_table(name: str = "minilm") -> torch.Tensor:
    """The word-piece embedding table of an offline encoder checkpoint (MiniLM-L6: [30522, 384]) — our stand-in for
    the paper's fastText/GloVe vectors, which are not available offline."""
    from safetensors import safe_open

    from lab.models.adapters import WORD_EMBEDDINGS_KEY
    from lab.models.loading import resolve_model_name

    root = Path(resolve_model_name(name))
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {root}; pretrained_table needs a safetensors checkpoint")
    for f in files:
        with safe_open(str(f), "pt") as sf:
            for key in sf.keys():
                if key.endswith(WORD_EMBEDDINGS_KEY):
                    return sf.get_tensor(key).float()
    raise KeyError(f"no '*{WORD_EMBEDDINGS_KEY}' tensor in {root}")


_TABLES: dict[str, torch.Tensor] = {}


def pretrained_embeddings(vocab: Vocab, dim: int, std: float | None = None, name: str = "minilm"
                          ) -> tuple[torch.Tensor, str]:
    """`name`'s word-piece rows for `vocab` (`pretrained_table`, read once), rescaled to an entry std of `std` (None:
    as stored), and the id naming them in `train_cached`'s key."""
    if name not in _TABLES:
        _TABLES[name] = pretrained_table(name)
    table = _TABLES[name]
    if table.shape[1] != dim:
        raise RNNInputError(f"{name} embeddings are {table.shape[1]}-d but the model wants {dim}")
    if std is not None:
        table = table * (std / float(table.std()))
    return vocab.embedding_matrix(table), f"{name}-word-embeddings-std{std}"


def load_splits(data: str, splits: tuple[str, str | None, str], sizes: Sequence[int | None], tokenizer,
                max_length: int | None = None, seed: int = 0) -> tuple[Vocab, dict[str, EncodedSet], tuple]:
    """(vocabulary, {"train", "dev", "test": EncodedSet}, label names) of the `lab.data` dataset `data`: `splits`
    names its (train, dev, test) splits (dev None: 10 % of the training split held out), each subsampled to `sizes`
    (None: all) with `seed`; the vocabulary is the word pieces seen in the training texts (and text pairs)."""
    train_split, dev_split, test_split = splits
    train = load(data, train_split)
    if dev_split:
        dev = load(data, dev_split)
    else:  # hold out 10 % of the training split
        rows = np.random.default_rng(seed).permutation(len(train))
        n_dev = max(1, len(train) // 10)
        part = lambda name, idx: train.__class__(train.name, name, train.label_names,  # noqa: E731
                                                 [train[i] for i in sorted(idx)], train.source)
        train, dev = part(train_split, rows[n_dev:]), part(f"{train_split}[dev]", rows[:n_dev])
    sets = {"train": train.subset(sizes[0], seed=seed), "dev": dev.subset(sizes[1], seed=seed),
            "test": load(data, test_split).subset(sizes[2], seed=seed)}
    texts = [e.text for e in sets["train"]] + [e.text_pair for e in sets["train"] if e.text_pair]
    vocab = Vocab.build(tokenizer, texts)
    return vocab, {k: encode_examples(vocab, d, max_length) for k, d in sets.items()}, tuple(train.label_names)
