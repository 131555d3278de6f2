"""Kim et al. (2020) target classifiers trained here: a Kim-CNN and a 2-layer BiLSTM over the BERT word-piece vocabulary.

Both read the tokenizer's output directly (input_ids incl. [CLS]/[SEP], attention_mask, token_type_ids for pairs), so
the same ids go to the classifier and to the masked LM of input marginalisation:

    clf = TextCNN(TextConfig(vocab_size=30522, num_classes=2))           # embedding 100, filters 3/4/5 × 100
    trained = train_text_classifier("sst2-cnn", clf_cfg, train, test, FitConfig(epochs=3))   # cached
    probs = trained.model.probabilities(input_ids, attention_mask)        # [B, C]

Paper settings (REPRODUCTION_SPEC 004.3): embedding 100, ReLU, CNN with 100 filters of widths 3/4/5 + FC (dropout
0.5); LSTM: 2-layer BiLSTM hidden 200 + FC (dropout 0.3 embedding / 0.5); SNLI: premise and hypothesis through the
same encoder, concatenated before the FC layers (here [u; v; |u − v|; u ⊙ v] → FC 300 → ReLU → FC 3, our choice;
the paper's extra projection and 4 FC layers are not reproduced). Training: Adam, cross entropy, fixed epochs
(no model selection: the SST-2 test set is the GLUE dev set); fewer epochs and a higher learning rate than the
paper's 30 epochs at 1e-4, which a 2-core CPU cannot afford. Cached atomically in cache_dir()/textclf/<key>.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from lab import cache
from lab.config import torch_threads
from lab.progress import progress as progress_bar

ARCHS = ("cnn", "lstm")
CNN_WIDTHS = (3, 4, 5)
TEXTCLF_VERSION = 1


class TextModelError(ValueError):
    """Bad input to the CNN/BiLSTM classifiers; the message says what to change."""


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    num_classes: int
    arch: str = "cnn"
    embed_dim: int = 100
    filters: int = 100  # CNN: per width
    hidden: int = 200  # BiLSTM: per direction
    layers: int = 2  # BiLSTM layers
    dropout: float = 0.5
    embed_dropout: float = 0.3
    pair: bool = False  # premise/hypothesis (token_type_ids 0/1) through one shared encoder
    pad_id: int = 0

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise TextModelError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.num_classes < 2 or self.vocab_size < 2:
            raise TextModelError(f"num_classes >= 2 and vocab_size >= 2 required, got {self}")


def split_segments(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                   segment: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens of one segment (0 premise, 1 hypothesis) moved to the left: (ids [B, T], mask [B, T])."""
    sel = attention_mask.bool() & (token_type_ids == segment)
    order = torch.argsort((~sel).int(), dim=1, stable=True)
    lengths = sel.sum(1)
    mask = torch.arange(input_ids.shape[1], device=input_ids.device)[None] < lengths[:, None]
    ids = input_ids.gather(1, order).masked_fill(~mask, 0)
    keep = max(int(lengths.max()), 1)
    return ids[:, :keep], mask[:, :keep]


class TextClassifier(nn.Module):
    """Shared pieces: embedding, encoder(e, mask) -> [B, m], the (pair) head, probabilities."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.embed_drop = nn.Dropout(cfg.embed_dropout)
        self.drop = nn.Dropout(cfg.dropout)
        m = self.feature_dim
        if cfg.pair:
            self.head = nn.Sequential(nn.Linear(4 * m, 300), nn.ReLU(), nn.Dropout(cfg.dropout),
                                      nn.Linear(300, cfg.num_classes))
        else:
            self.head = nn.Linear(m, cfg.num_classes)

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Logits [B, C] from tokenizer ids (pad = cfg.pad_id where attention_mask is 0)."""
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() != 2:
            raise TextModelError(f"input_ids must be [batch, seq], got shape {list(input_ids.shape)}")
        mask = (input_ids != self.cfg.pad_id) if attention_mask is None else torch.as_tensor(attention_mask).bool()
        if self.cfg.pair:
            if token_type_ids is None:
                raise TextModelError("this SNLI model needs token_type_ids (tokenize premise and hypothesis as a pair)")
            u = self.encode(*split_segments(input_ids, mask, token_type_ids, 0))
            v = self.encode(*split_segments(input_ids, mask, token_type_ids, 1))
            return self.head(torch.cat([u, v, (u - v).abs(), u * v], -1))
        return self.head(self.drop(self.encode(input_ids, mask)))

    def probabilities(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        return self.forward(input_ids, attention_mask, token_type_ids).softmax(-1)


class TextCNN(TextClassifier):
    """Kim (2014) CNN: convolutions of widths 3/4/5 × `filters`, ReLU, max over time (valid positions), FC."""

    def __init__(self, cfg: TextConfig):
        super().__init__(cfg)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.embed_dim, cfg.filters, w, padding=w - 1) for w in CNN_WIDTHS)

    @property
    def feature_dim(self) -> int:
        return self.cfg.filters * len(CNN_WIDTHS)

    def encode(self, ids, mask):
        e = self.embed_drop(self.embedding(ids)) * mask[..., None]
        x = e.transpose(1, 2)
        pooled = []
        for w, conv in zip(CNN_WIDTHS, self.convs):
            h = torch.relu(conv(x))[:, :, : ids.shape[1] + w - 1]  # "full" convolution: windows touching a token
            # a window is valid when it overlaps a real token: positions 0 .. len + w - 2
            valid = torch.arange(h.shape[2], device=ids.device)[None] < (mask.sum(1) + w - 1)[:, None]
            pooled.append(h.masked_fill(~valid[:, None], float("-inf")).amax(2))
        return torch.cat(pooled, 1)


class TextBiLSTM(TextClassifier):
    """`layers`-layer BiLSTM (hidden per direction); features = [→h_T; ←h_1] of the top layer."""

    def __init__(self, cfg: TextConfig):
        super().__init__(cfg)
        self.rnn = nn.LSTM(cfg.embed_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True, bidirectional=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)

    @property
    def feature_dim(self) -> int:
        return 2 * self.cfg.hidden

    def encode(self, ids, mask):
        lengths = mask.sum(1).clamp_min(1)
        e = self.embed_drop(self.embedding(ids))
        packed = pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.rnn(packed)
        return torch.cat([h_n[-2], h_n[-1]], -1)


@functools.lru_cache(maxsize=1)
def word_pieces():
    """The tokenizer (bert-base-uncased word pieces, the MiniLM's) whose ids the targets, the masked LM and the
    MiniLM classifier of notebook 06 share."""
    from lab.models.loading import load_tokenizer

    return load_tokenizer("minilm")


def tokenize(texts, text_pairs=None, max_length: int = 64) -> dict:
    """Padded input_ids, attention_mask and token_type_ids [B, S] of `texts` (with `text_pairs`: sentence pairs)."""
    enc = word_pieces()(list(texts), list(text_pairs) if text_pairs is not None else None, padding=True,
                        truncation=True, max_length=max_length, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def special_mask(inputs: dict) -> torch.Tensor:
    """[B, S] True at [PAD]/[CLS]/[SEP] and padding: the positions no attribution scores."""
    tok = word_pieces()
    specials = torch.tensor([tok.pad_token_id, tok.cls_token_id, tok.sep_token_id])
    return torch.isin(inputs["input_ids"], specials) | ~inputs["attention_mask"].bool()


def build_text_classifier(cfg: TextConfig) -> TextClassifier:
    return (TextCNN if cfg.arch == "cnn" else TextBiLSTM)(cfg)


def predict_fn(model: TextClassifier):
    """`predict_fn(input_ids, attention_mask) -> probabilities` for lab.metrics (single-sequence models)."""

    def predict(input_ids, attention_mask):
        with torch.no_grad():
            return model.eval().probabilities(input_ids, attention_mask)

    return predict


# ---------------------------------------------------------------- data and training
@dataclass
class EncodedTexts:
    """Tokenizer ids per example (with [CLS]/[SEP]), token types (pairs) and labels."""

    ids: list[list[int]]
    types: list[list[int]] | None
    labels: list[int]

    def __len__(self):
        return len(self.ids)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.ids, self.types, self.labels]).encode()).hexdigest()[:16]

    def batch(self, rows: Sequence[int], pad_id: int = 0) -> dict:
        n = max(len(self.ids[r]) for r in rows)
        ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
        types = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(self.ids[r])] = torch.as_tensor(self.ids[r])
            if self.types is not None:
                types[i, :len(self.types[r])] = torch.as_tensor(self.types[r])
        out = {"input_ids": ids, "attention_mask": (torch.arange(n)[None] < torch.as_tensor(
            [len(self.ids[r]) for r in rows])[:, None]).long()}
        if self.types is not None:
            out["token_type_ids"] = types
        return out


def random_subset(examples: Sequence, size: int | None, seed: int = 0) -> list:
    """`size` examples drawn at random (seeded) without replacement, in their original order (None: all)."""
    examples = list(examples)
    if size and size < len(examples):
        rows = np.random.default_rng(seed).permutation(len(examples))[:size]
        examples = [examples[i] for i in sorted(rows)]
    return examples


def encode_texts(tokenizer, dataset, max_length: int = 64, size: int | None = None, seed: int = 0) -> EncodedTexts:
    """Tokenise a `lab.data.TextDataset` (pairs when it has text_pair); `size` keeps a random subset."""
    examples = random_subset(dataset, size, seed)
    pair = any(e.text_pair is not None for e in examples)
    enc = tokenizer([e.text for e in examples], [e.text_pair or "" for e in examples] if pair else None,
                    truncation=True, max_length=max_length, verbose=False)
    return EncodedTexts(enc["input_ids"], enc["token_type_ids"] if pair else None, [int(e.label) for e in examples])


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1


@dataclass
class TrainedText:
    model: TextClassifier
    metrics: dict
    path: Path | None = None
    from_cache: bool = False


def text_accuracy(model: TextClassifier, data: EncodedTexts, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    order = np.argsort([len(s) for s in data.ids])
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            rows = order[start:start + batch_size].tolist()
            pred = model(**data.batch(rows)).argmax(-1)
            correct += int((pred == torch.as_tensor([data.labels[r] for r in rows])).sum())
    return correct / max(len(data), 1)


def fit_text(model: TextClassifier, train: EncodedTexts, fc: FitConfig, progress: bool = True,
             desc: str = "train") -> dict:
    """Adam + cross entropy for `fc.epochs` epochs over length-bucketed shuffled batches."""
    torch.manual_seed(fc.seed)
    rng = np.random.default_rng(fc.seed)
    opt = torch.optim.Adam(model.parameters(), lr=fc.lr)
    lengths = np.asarray([len(s) for s in train.ids]) + rng.uniform(0, 2, len(train))
    history, start = [], time.perf_counter()
    for epoch in range(fc.epochs):
        model.train()
        order = np.argsort(lengths + rng.uniform(0, 2, len(train)), kind="stable")
        batches = [order[i:i + fc.batch_size].tolist() for i in range(0, len(order), fc.batch_size)]
        rng.shuffle(batches)
        total = 0.0
        for rows in progress_bar(batches, f"{desc} epoch {epoch + 1}/{fc.epochs}", progress):
            batch = train.batch(rows)
            loss = F.cross_entropy(model(**batch), torch.as_tensor([train.labels[r] for r in rows]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        history.append({"epoch": epoch + 1, "train_loss": round(total / len(train), 4)})
    model.eval()
    return {"history": history, "train_seconds": round(time.perf_counter() - start, 1), "n_train": len(train)}


def train_text_classifier(name: str, cfg: TextConfig, train: EncodedTexts, test: EncodedTexts, fc: FitConfig,
                          force: bool = False, progress: bool = True) -> TrainedText:
    """Train (or load from the cache) one classifier; reports test accuracy. The key covers data and configs."""
    key = cache.cache_key(f"{name}-{cfg.arch}", version=TEXTCLF_VERSION, config=asdict(cfg), fit=asdict(fc),
                          train=train.digest(), test=test.digest())
    final = cache.cached_dir("textclf", key)
    if not force and cache.verify(final):
        return load_text_classifier(final)
    with torch_threads(fc.threads):
        torch.manual_seed(fc.seed)
        model = build_text_classifier(cfg)
        metrics = fit_text(model, train, fc, progress=progress, desc=name)
        metrics["test_accuracy"] = text_accuracy(model, test)
        metrics["n_test"] = len(test)
    metrics["n_parameters"] = sum(p.numel() for p in model.parameters())
    with cache.atomic_dir(final) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        cache.atomic_write_json(tmp / "config.json", asdict(cfg))
        cache.atomic_write_json(tmp / "metrics.json", metrics)
    cache.record_checkpoint(final)
    return TrainedText(model, metrics, final, from_cache=False)


def load_text_classifier(path: str | Path) -> TrainedText:
    path = Path(path)
    if not cache.verify(path):
        raise FileNotFoundError(f"{path} is not a complete, intact cached classifier; train it again")
    cfg = TextConfig(**cache.read_json(path / "config.json"))
    model = build_text_classifier(cfg)
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    cache.record_checkpoint(path)
    return TrainedText(model.eval(), cache.read_json(path / "metrics.json"), path, from_cache=True)


def kim_targets(sizes: Mapping, progress: bool = True) -> dict[str, TrainedText]:
    """Kim et al.'s three targets, trained here (cached): "cnn" and "lstm" on SST-2 (the BiLSTM on at most
    `lstm_train_cap` phrases), "snli_lstm" on SNLI validation (no train split offline), each tested on its test
    split (SST-2: the GLUE dev set). `sizes` reads sst_train_size, lstm_train_cap, snli_train_size, n_test (None:
    all), cnn_epochs, lstm_epochs, snli_epochs, max_length and seed."""
    from lab.data import load

    tokenizer, seed, ml, cap = word_pieces(), sizes["seed"], sizes["max_length"], sizes["lstm_train_cap"]
    sst_train = encode_texts(tokenizer, load("sst2", "train"), ml, sizes["sst_train_size"], seed)
    lstm_train = encode_texts(tokenizer, load("sst2", "train"), ml, min(sizes["sst_train_size"] or cap, cap), seed)
    sst_test = encode_texts(tokenizer, load("sst2", "dev"), ml, sizes["n_test"], seed)
    snli_train = encode_texts(tokenizer, load("snli", "validation"), ml, sizes["snli_train_size"], seed)
    snli_test = encode_texts(tokenizer, load("snli", "test"), ml, sizes["n_test"], seed)
    vocab = tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else len(tokenizer)
    return {
        "cnn": train_text_classifier("sst2", TextConfig(vocab, 2, "cnn"), sst_train, sst_test,
                                     FitConfig(epochs=sizes["cnn_epochs"], seed=seed), progress=progress),
        "lstm": train_text_classifier("sst2", TextConfig(vocab, 2, "lstm"), lstm_train, sst_test,
                                      FitConfig(epochs=sizes["lstm_epochs"], seed=seed), progress=progress),
        "snli_lstm": train_text_classifier("snli", TextConfig(vocab, 3, "lstm", layers=1, hidden=300, pair=True),
                                           snli_train, snli_test,
                                           FitConfig(epochs=sizes["snli_epochs"], seed=seed, batch_size=128),
                                           progress=progress),
    }
