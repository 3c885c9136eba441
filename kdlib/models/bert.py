"""BERT for sequence classification, written once against a :class:`kdlib.backend.Backend`.

Attribute names equal HuggingFace checkpoint keys (``encoder.layer.3.attention.self.query.weight``),
so a HF ``model.safetensors`` loads by an explicit, shape-checked key map, and layer export, PKD,
TinyBERT mappings and Theseus replacement all speak the same names.

One encoder layer, for hidden states x (N, T, H), nh heads of size hs = H / nh and the additive mask
M (N, 1, 1, T) = (1 - attention_mask) * MASK_VALUE::

    S   = (x Wq^T + bq)(x Wk^T + bk)^T / sqrt(hs) + M        # (N, nh, T, T) returned as the scores
    ctx = softmax(S) (x Wv^T + bv)                            # (N, nh, T, hs) -> (N, T, H)
    a   = LayerNorm(ctx Wo^T + bo + x)                        # attention.output
    y   = LayerNorm(gelu(a Wi^T + bi) Wo2^T + bo2 + a)        # intermediate, output; gelu is exact (erf)

The forward returns the TextBrewer-style dict ``{"logits", "hidden", "attention"}``: ``hidden`` holds
the L + 1 hidden states (embeddings output first) and ``attention`` the L pre-softmax score tensors S.
"""
from __future__ import annotations

import functools
import math
from dataclasses import MISSING, asdict, dataclass, fields

from ..errors import ConfigError

MASK_VALUE = -10000.0   # added to the scores of masked key positions
INIT_STD = 0.02         # HF BERT initializer_range


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    num_labels: int = 2            # 1: regression
    pad_token_id: int = 0
    position_offset: int = 0       # RoBERTa and XLM-R number positions from pad_token_id + 1 (2)

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act != "gelu":
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported (only 'gelu')")
        if self.num_labels < 1:
            raise ConfigError(f"num_labels must be >= 1, got {self.num_labels}")

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """Build from our own ``to_dict()`` or a HuggingFace ``config.json`` (other keys ignored)."""
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"position_embedding_type {d['position_embedding_type']!r} is not "
                              "supported (only 'absolute')")
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "num_labels" not in kwargs and isinstance(d.get("id2label"), dict):
            kwargs["num_labels"] = len(d["id2label"])
        missing = [f.name for f in fields(cls) if f.name not in kwargs and f.default is MISSING]
        if missing:
            raise ConfigError(f"BERT config lacks {', '.join(missing)}")
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


def extended_mask(attention_mask):
    """(N, T) 1/0 mask -> (N, 1, 1, T) additive mask: 0 for real keys, MASK_VALUE for padding."""
    return (1.0 - attention_mask.float()).unsqueeze(1).unsqueeze(2) * MASK_VALUE


@functools.lru_cache(maxsize=None)
def _classes(B):
    """The BERT module classes for backend ``B`` (defined once per backend)."""
    nn, F, lib = B.nn, B.F, B.lib
    # Fused attention (PyTorch's scaled_dot_product_attention: a fused CPU kernel, flash or
    # memory-efficient attention on a GPU) wherever nobody needs the scores; OneFlow 0.9 has none.
    FUSED = hasattr(F, "scaled_dot_product_attention")

    class Embeddings(nn.Module):
        def __init__(self, cfg: BertConfig):
            super().__init__()
            self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                                padding_idx=cfg.pad_token_id)
            self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
            self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
            self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
            self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
            self.offset = cfg.position_offset

        def forward(self, input_ids, token_type_ids):
            T = input_ids.shape[1]
            positions = lib.arange(self.offset, self.offset + T, device=input_ids.device).unsqueeze(0)  # (1, T)
            x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
                 + self.token_type_embeddings(token_type_ids))               # (N, T, H)
            return self.dropout(self.LayerNorm(x))

    class SelfAttention(nn.Module):
        def __init__(self, cfg: BertConfig):
            super().__init__()
            self.nh, self.hs = cfg.num_attention_heads, cfg.head_size
            self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
            self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
            self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
            self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

        def _heads(self, x):  # (N, T, H) -> (N, nh, T, hs)
            N, T, _ = x.shape
            return x.reshape(N, T, self.nh, self.hs).permute(0, 2, 1, 3)

        def forward(self, x, ext_mask, need_scores: bool = False):
            N, T, H = x.shape
            q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
            if FUSED and not need_scores:      # the library's fused kernel; the scores stay inside
                ctx = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=ext_mask.to(q.dtype),
                    dropout_p=self.dropout.p if self.training else 0.0)  # (N, nh, T, hs)
                scores = None
            else:
                scores = lib.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hs) + ext_mask  # (N, nh, T, T)
                probs = self.dropout(F.softmax(scores, dim=-1))
                ctx = lib.matmul(probs, v)                              # (N, nh, T, hs)
            ctx = ctx.permute(0, 2, 1, 3).reshape(N, T, H)            # (N, T, H)
            return ctx, scores

    class AddNorm(nn.Module):
        """LayerNorm(dropout(dense(h)) + residual): HF's BertSelfOutput and BertOutput."""

        def __init__(self, cfg: BertConfig, d_in: int):
            super().__init__()
            self.dense = nn.Linear(d_in, cfg.hidden_size)
            self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
            self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

        def forward(self, h, residual):
            return self.LayerNorm(self.dropout(self.dense(h)) + residual)

    class Attention(nn.Module):
        def __init__(self, cfg: BertConfig):
            super().__init__()
            self.self = SelfAttention(cfg)
            self.output = AddNorm(cfg, cfg.hidden_size)

        def forward(self, x, ext_mask, need_scores: bool = False):
            ctx, scores = self.self(x, ext_mask, need_scores)
            return self.output(ctx, x), scores

    class Intermediate(nn.Module):
        def __init__(self, cfg: BertConfig):
            super().__init__()
            self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

        def forward(self, x):
            return F.gelu(self.dense(x))  # exact erf GELU in both libraries

    class Layer(nn.Module):
        """One encoder layer: ``layer(hidden (B,T,H), ext_mask (B,1,1,T)) -> (hidden, scores)``;
        ``scores`` (N, nh, T, T) only with ``need_scores`` (else None, and attention may be fused)."""

        def __init__(self, cfg: BertConfig):
            super().__init__()
            self.attention = Attention(cfg)
            self.intermediate = Intermediate(cfg)
            self.output = AddNorm(cfg, cfg.intermediate_size)

        def forward(self, hidden, ext_mask, need_scores: bool = False):
            a, scores = self.attention(hidden, ext_mask, need_scores)
            return self.output(self.intermediate(a), a), scores

    class Encoder(nn.Module):
        def __init__(self, cfg: BertConfig):
            super().__init__()
            self.layer = nn.ModuleList([Layer(cfg) for _ in range(cfg.num_hidden_layers)])

    class Pooler(nn.Module):
        def __init__(self, cfg: BertConfig):
            super().__init__()
            self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

        def forward(self, hidden):  # (N, T, H) -> (N, H), tanh of the [CLS] state
            return lib.tanh(self.dense(hidden[:, 0]))

    class Bert(nn.Module):
        """BERT encoder + pooler + classifier; ``forward`` returns the output dict."""

        model_type = "bert"

        def __init__(self, cfg: BertConfig):
            super().__init__()
            self.config = cfg
            self.embeddings = Embeddings(cfg)
            self.encoder = Encoder(cfg)
            self.pooler = Pooler(cfg)
            self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
            self.classifier = nn.Linear(cfg.hidden_size, cfg.num_labels)
            self.apply(_init_weights)

        def embed(self, input_ids, token_type_ids=None):
            """(N, T) ids -> (N, T, H) embeddings output (hidden state 0)."""
            if token_type_ids is None:
                token_type_ids = lib.zeros_like(input_ids)
            return self.embeddings(input_ids, token_type_ids)

        def head(self, last_hidden):
            """(N, T, H) last hidden states -> (N, num_labels) logits via pooler, dropout, classifier."""
            return self.classifier(self.dropout(self.pooler(last_hidden)))

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_all: bool = False,
                    output_hidden: bool = False):
            """``output_all``: also the hidden states and the attention scores (which need the
            explicit attention path); ``output_hidden``: the hidden states alone (attention may be
            fused)."""
            if attention_mask is None:
                attention_mask = lib.ones_like(input_ids)
            ext = extended_mask(attention_mask)          # (N, 1, 1, T)
            h = self.embed(input_ids, token_type_ids)   # (N, T, H)
            hidden, attention = [h], []
            for layer in self.encoder.layer:
                h, scores = layer(h, ext, need_scores=output_all)
                hidden.append(h)
                attention.append(scores)
            out = {"logits": self.head(h)}
            if output_all or output_hidden:
                out["hidden"] = hidden
            if output_all:
                out["attention"] = attention
            return out

    def _init_weights(m):
        """HF BERT initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=INIT_STD)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=INIT_STD)
            if m.padding_idx is not None:
                with lib.no_grad():
                    m.weight[m.padding_idx].fill_(0.0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    return {"Bert": Bert, "Layer": Layer, "Pooler": Pooler, "init": _init_weights}


def build_bert(B, cfg: BertConfig):
    """A freshly initialised BERT classifier for ``cfg`` on backend ``B`` (moved to ``B.device``)."""
    return _classes(B)["Bert"](cfg).to(B.device)


def build_layer(B, cfg: BertConfig):
    """One freshly initialised encoder layer (e.g. a Theseus successor module)."""
    layer = _classes(B)["Layer"](cfg)
    layer.apply(_classes(B)["init"])
    return layer.to(B.device)
