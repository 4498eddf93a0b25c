"""One encoder for BERT, Google ALBERT and brightmart ALBERT.

The three architectures differ in three places only, and each is a plain branch below:

1. how token embeddings reach width H: BERT looks them up at H; Google ALBERT adds positions/types at E,
   normalises, then maps E→H with ``mapping_in``; brightmart projects E→H with a bias-free ``word_proj``
   first and adds positions/types at H;
2. which layer parameters are shared: ``ModelConfig.layer_schedule()`` names the parameter set run at each
   step (BERT: a set per layer; Google ALBERT: groups × inner sets; brightmart: one set);
3. where LayerNorm sits: post-LN (BERT, both ALBERTs) or brightmart's pre-LN, which has no final LayerNorm.

Module and parameter names are zoo's canonical names (docs/architecture.md), so a converted
``model.safetensors`` loads with ``load_state_dict`` and nothing else. Attention masks follow the TF code:
``-10000`` is added to the scores of padded keys. In training mode the config's dropout applies where the TF
code applies it (embedding output, attention probabilities, each sub-block's output); passing ``labels`` and
``seq_relationship_labels`` adds the pretraining losses (:mod:`zoo.models.losses`).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.config import CLASSIFIER_DROPOUT, HEADS, ModelConfig
from zoo.errors import UsageError
from zoo.models.activations import ACTIVATION_FUNCTIONS
from zoo.models.heads import Classifier, MaskedLMHead
from zoo.models.losses import IGNORE, nll_sum

#: The TF code adds this to the attention scores of masked keys.
MASK_VALUE = -10000.0


@dataclasses.dataclass
class ModelOutput:
    """What :class:`Encoder` returns. Head outputs are ``None`` unless that head is loaded.

    With ``labels``, the MLM head runs only at the predicted positions: ``masked_lm_logits`` is ``[N, V]`` for
    the ``N`` positions where ``labels != -100`` (row-major order) and ``mlm_logits`` stays ``None``.
    ``loss`` = ``mlm_loss`` + ``seq_relationship_loss`` (means; sums with ``loss_reduction="sum"``, with the
    counts in ``mlm_count`` / ``seq_relationship_count``).
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    mlm_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    masked_lm_logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    seq_relationship_loss: torch.Tensor | None = None
    mlm_count: torch.Tensor | None = None
    seq_relationship_count: torch.Tensor | None = None


def _embedding(num: int, dim: int, std: float) -> nn.Embedding:
    """``nn.Embedding`` drawn from normal(0, std) like the TF initializer, and left uninitialised on the meta
    device (``zoo.load`` builds there; nn.Embedding's own init on meta costs a second of imports)."""
    weight = torch.empty(num, dim)
    if not weight.is_meta:
        nn.init.normal_(weight, std=std)
    table: nn.Embedding = nn.Embedding.from_pretrained(weight, freeze=False)  # type: ignore[no-untyped-call]
    return table


class Embeddings(nn.Module):
    """Token + position + token-type embeddings, LayerNorm (then dropout), and the E→H step of the ALBERTs."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        e, d, h = config.word_embedding_size, config.embedding_width, config.hidden_size
        std = config.initializer_range
        self.word = _embedding(config.vocab_size, e, std)
        if config.architecture == "albert-brightmart":
            self.word_proj = nn.Linear(e, h, bias=False)  # applied before positions/types are added
        self.position = _embedding(config.max_position_embeddings, d, std)
        self.token_type = _embedding(config.type_vocab_size, d, std)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        if config.has_mapping_in:
            self.mapping_in = nn.Linear(e, h)  # Google ALBERT, applied after the LayerNorm

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        x = self.word(input_ids)
        if hasattr(self, "word_proj"):
            x = self.word_proj(x)
        x = x + self.position(position_ids) + self.token_type(token_type_ids)
        x = self.dropout(self.norm(x))
        if hasattr(self, "mapping_in"):
            x = self.mapping_in(x)
        out: torch.Tensor = x
        return out

    def decoder_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The tied MLM decoder: the word table, and brightmart's projection (``None`` elsewhere)."""
        return self.word.weight, self.word_proj.weight if hasattr(self, "word_proj") else None


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.dropout_p = config.attention_dropout
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.output = nn.Linear(h, h)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, h = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:  # [B, T, H] -> [B, N, T, H/N]
            return y.view(b, t, self.num_heads, h // self.num_heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
                                           attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        out: torch.Tensor = self.output(y.transpose(1, 2).reshape(b, t, h))
        return out


class Layer(nn.Module):
    """One transformer block: attention and feed-forward, each with dropout, a residual and a LayerNorm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.attention = Attention(config)
        self.attention_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(h, i)
        self.output = nn.Linear(i, h)
        self.output_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.act = ACTIVATION_FUNCTIONS[config.hidden_act]
        self.pre_ln = config.ln_type == "preln"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor
        if self.pre_ln:  # brightmart's prelln_transformer_model: normalise the input of each sub-block
            x = x + self.dropout(self.attention(self.attention_norm(x), mask))
            out = x + self.dropout(self.output(self.act(self.intermediate(self.output_norm(x)))))
            return out
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
        out = self.output_norm(x + self.dropout(self.output(self.act(self.intermediate(x)))))
        return out


class Encoder(nn.Module):
    """The whole model: embeddings, shared-or-not layers, pooler, and the optional heads.

    ``heads`` is ``None`` (encoder and pooler only), ``"mlm"``, ``"pretraining"`` (MLM + SOP/NSP) or a task
    head: ``"sequence-classification"``, ``"token-classification"`` (``num_labels`` outputs, or those
    ``config.labels`` names; dropout ``config.classifier_dropout_prob``, 0.1 when unset), ``"question-answering"``.
    Set ``gradient_checkpointing = True`` to recompute each layer in the backward pass instead of keeping its
    activations (large models, long sequences).
    """

    def __init__(self, config: ModelConfig, heads: str | None = None, num_labels: int = 2) -> None:
        super().__init__()
        if heads not in HEADS:
            raise UsageError(f"unknown heads {heads!r}",
                             hint=f"use one of: {', '.join(str(h) for h in HEADS)}")
        self.config = config
        self.heads = heads
        self.gradient_checkpointing = False
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layer_sets))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.schedule = config.layer_schedule()
        if heads in ("mlm", "pretraining"):
            self.mlm = MaskedLMHead(config)
        if heads == "pretraining":
            self.seq_relationship = nn.Linear(config.hidden_size, 2)
        if heads in ("sequence-classification", "token-classification"):
            dropout = config.classifier_dropout_prob
            self.classifier = Classifier(config.hidden_size, len(config.labels) if config.labels else num_labels,
                                         CLASSIFIER_DROPOUT if dropout is None else dropout)
        if heads == "question-answering":
            self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.eval()

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None, only: set[str] | None = None) -> None:
        """Initialise every parameter as the upstream TF code does (``modeling.create_initializer`` in
        google-research/bert and /albert, brightmart's albert_zh): weight matrices and embedding tables from a
        normal(0, ``initializer_range``) truncated at two standard deviations (``tf.truncated_normal_initializer``
        draws again beyond them), biases zero (``mlm.bias`` too), LayerNorm weight 1 and bias 0. Parameters are
        drawn in ``named_parameters`` order from ``generator``, so a seeded generator gives the same model.
        ``only``: the names of the parameters to initialise (the others are left as they are)."""
        std = self.config.initializer_range
        norms = {name for name, module in self.named_modules() if isinstance(module, nn.LayerNorm)}
        for name, param in self.named_parameters():
            if only is not None and name not in only:
                continue
            owner, _, kind = name.rpartition(".")
            if owner in norms:
                param.fill_(1.0 if kind == "weight" else 0.0)
            elif kind == "bias":
                param.zero_()
            else:
                nn.init.trunc_normal_(param, std=std, a=-2 * std, b=2 * std, generator=generator)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """MLM logits for hidden states of any leading shape (needs the MLM head)."""
        word, proj = self.embeddings.decoder_weights()
        logits: torch.Tensor = self.mlm(hidden, word, proj)
        return logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, labels: torch.Tensor | None = None,
                seq_relationship_labels: torch.Tensor | None = None,
                loss_reduction: str = "mean") -> ModelOutput:
        b, t = input_ids.shape
        if t > self.config.max_position_embeddings and position_ids is None:
            raise UsageError(
                f"input has {t} tokens but the model has {self.config.max_position_embeddings} positions",
                hint="truncate the input (tokenizer(..., truncation=True)) or load with a larger "
                     "max_position_embeddings")
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device).expand(b, t)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)

        x = self.embeddings(input_ids, token_type_ids, position_ids)
        mask = None
        if attention_mask is not None:  # [B, T] of 1/0 -> additive [B, 1, 1, T], as in the TF code
            mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * MASK_VALUE

        # hidden_states: the embedding output (at H), then the output of every step of the schedule (as the
        # TF code's all_layer_outputs: an ALBERT layer contributes one state per inner-group set).
        hidden_states = [x]
        for k in self.schedule:
            layer = self.layers[k]
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
            hidden_states.append(x)

        pooled = torch.tanh(self.pooler(x[:, 0]))
        out = ModelOutput(last_hidden_state=x, pooler_output=pooled,
                          hidden_states=tuple(hidden_states) if output_hidden_states else None)
        if hasattr(self, "mlm"):
            if labels is None:
                out.mlm_logits = self.mlm_logits(x)
            else:  # gather first, as upstream does: the vocab projection runs only where there is a target
                picked = labels != IGNORE
                out.masked_lm_logits = self.mlm_logits(x[picked])
                out.mlm_loss, out.mlm_count = nll_sum(out.masked_lm_logits, labels[picked])
        if hasattr(self, "seq_relationship"):
            out.seq_relationship_logits = self.seq_relationship(pooled)
            if seq_relationship_labels is not None:
                out.seq_relationship_loss, out.seq_relationship_count = nll_sum(out.seq_relationship_logits,
                                                                               seq_relationship_labels)
        if labels is not None and not hasattr(self, "mlm"):
            raise UsageError("labels given, but the model has no MLM head", hint='build it with heads="mlm" or '
                                                                                  '"pretraining"')
        if seq_relationship_labels is not None and not hasattr(self, "seq_relationship"):
            raise UsageError("seq_relationship_labels given, but the model has no SOP/NSP head",
                             hint='build it with heads="pretraining"')
        _reduce(out, loss_reduction)
        if hasattr(self, "classifier"):
            out.logits = self.classifier(pooled if self.heads == "sequence-classification" else x)
        if hasattr(self, "qa_outputs"):
            start, end = self.qa_outputs(x).unbind(-1)
            out.start_logits, out.end_logits = start, end
        return out


def _reduce(out: ModelOutput, reduction: str) -> None:
    """Turn the loss sums into means (``"mean"``) or leave them (``"sum"``), and add them up into ``loss``."""
    if reduction not in ("mean", "sum"):
        raise UsageError(f"loss_reduction={reduction!r}", hint='use "mean" or "sum"')
    parts = []
    for loss, count in (("mlm_loss", "mlm_count"), ("seq_relationship_loss", "seq_relationship_count")):
        value = getattr(out, loss)
        if value is None:
            continue
        if reduction == "mean":
            value = value / getattr(out, count).clamp_min(1)
            setattr(out, loss, value)
        parts.append(value)
    if parts:
        out.loss = parts[0] if len(parts) == 1 else parts[0] + parts[1]


__all__ = ["Attention", "Embeddings", "Encoder", "Layer", "ModelOutput"]
