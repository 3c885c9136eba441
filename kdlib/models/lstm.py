"""The BiLSTM student (Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple
Neural Networks"), written once against a :class:`kdlib.backend.Backend`.

    e = Embedding(ids)                          # (N, T, E), the pad row is zero
    h_f, h_b = BiLSTM(e, lengths)               # final forward / backward states, (N, Hl) each
    z = dropout(relu(W_fc [h_f; h_b] + b_fc))   # (N, F)
    logits = W_c z + b_c                        # (N, num_labels)

Padding is respected by packing the batch: the forward state stops at each sequence's last real
token and the backward direction starts there, so appended padding never changes the output.
Both libraries' ``nn.LSTM`` accept a packed batch; OneFlow 0.9 only packs length-sorted batches,
so the batch is sorted by length and the final states are put back in the caller's order.
Parameter names are the libraries' own (``lstm.weight_ih_l0``, ``lstm.weight_hh_l0_reverse`` ...),
identical in both, so checkpoints cross.
"""
from __future__ import annotations

import functools
from dataclasses import MISSING, asdict, dataclass, fields

from ..errors import ConfigError


@dataclass
class LstmConfig:
    vocab_size: int
    embedding_dim: int = 300
    hidden_size: int = 300      # per direction
    fc_size: int = 400
    dropout: float = 0.1
    num_labels: int = 2         # 1: regression
    pad_id: int = 0

    def __post_init__(self):
        if self.num_labels < 1:
            raise ConfigError(f"num_labels must be >= 1, got {self.num_labels}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(f"pad_id {self.pad_id} is outside the vocabulary of {self.vocab_size}")

    @classmethod
    def from_dict(cls, d: dict) -> "LstmConfig":
        """Build from ``to_dict()`` output; unrelated keys (``model_type``, metadata) are ignored."""
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in d and f.default is MISSING]
        if missing:
            raise ConfigError(f"LSTM config lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=None)
def _classes(B):
    nn, F, lib = B.nn, B.F, B.lib

    class BiLstm(nn.Module):
        model_type = "bilstm"

        def __init__(self, cfg: LstmConfig):
            super().__init__()
            self.config = cfg
            self.embedding = nn.Embedding(cfg.vocab_size, cfg.embedding_dim, padding_idx=cfg.pad_id)
            self.lstm = nn.LSTM(cfg.embedding_dim, cfg.hidden_size, num_layers=1,
                                batch_first=True, bidirectional=True)
            self.fc = nn.Linear(2 * cfg.hidden_size, cfg.fc_size)
            self.dropout = nn.Dropout(cfg.dropout)
            self.classifier = nn.Linear(cfg.fc_size, cfg.num_labels)

        def encode(self, input_ids, attention_mask):
            """(N, T) right-padded ids -> (N, 2 Hl) concatenated final forward/backward states."""
            lengths = attention_mask.long().sum(dim=1).clamp(min=1)       # (N,), empty rows read one pad
            lengths, order = lib.sort(lengths, descending=True)           # OneFlow packs sorted only
            order = order.long()
            x = self.embedding(input_ids.index_select(0, order))         # (N, T, E) sorted
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                       enforce_sorted=True)
            _, (h_n, _) = self.lstm(packed)                              # (2, B, Hl)
            final = lib.cat([h_n[0], h_n[1]], dim=1)                     # (N, 2 Hl) sorted
            return final.index_select(0, lib.argsort(order).long())      # caller's order

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_all: bool = False,
                    output_hidden: bool = False):
            """Same call as BERT's forward; ``token_type_ids`` and the ``output_*`` flags are ignored."""
            if attention_mask is None:
                attention_mask = lib.ones_like(input_ids)
            z = self.dropout(F.relu(self.fc(self.encode(input_ids, attention_mask))))  # (N, F)
            return {"logits": self.classifier(z)}

    return {"BiLstm": BiLstm}


def build_bilstm(B, cfg: LstmConfig):
    """A freshly initialised BiLSTM classifier on ``B.device`` (the libraries' default init)."""
    return _classes(B)["BiLstm"](cfg).to(B.device)
