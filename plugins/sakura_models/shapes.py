"""Llama-family decoder shapes from a model's ``config.json``: parameter counts and weight sizes.

Pure functions over config dicts (no torch, no I/O), for ``sakura plan``'s estimates: the model sources'
footprints, the merge, train and publish stages' sizes. What is modelled (and so what is not): Llama-style
decoders (``llama``, ``mistral``, ``qwen2``, ``qwen3``: embeddings, GQA attention, gated MLP, RMSNorms, an LM
head unless tied). Any other architecture, or a missing config, has no estimate rather than a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sakura_core.estimate import dtype_bytes, dtype_of

ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
LAYER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    """A Llama-style decoder's dimensions, read from its config."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool

    @property
    def q_out(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_out(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """``{name: (in features, out features)}`` of one decoder layer's linear layers."""
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, self.q_out), "k_proj": (h, self.kv_out), "v_proj": (h, self.kv_out), "o_proj": (self.q_out, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
        }

    def biases(self) -> dict[str, int]:
        """``{name: bias size}`` of one decoder layer's linear layers that have a bias."""
        out: dict[str, int] = {}
        for name, (_, n_out) in self.linears().items():
            if (name in ("q_proj", "k_proj", "v_proj") and self.qkv_bias) or (name == "o_proj" and self.o_bias) or (
                name in ("gate_proj", "up_proj", "down_proj") and self.mlp_bias
            ):
                out[name] = n_out
        return out


def shape_of(config: dict[str, Any] | None) -> Shape | None:
    """The decoder's shape, or None for an architecture these formulas do not describe."""
    if not isinstance(config, dict) or config.get("model_type") not in ARCHITECTURES:
        return None
    try:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        model_type = config["model_type"]
        bias = bool(config.get("attention_bias", False))
        return Shape(
            vocab=int(config["vocab_size"]),
            hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            # Llama, Mistral and Qwen configs default to untied embeddings.
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bias or model_type == "qwen2",  # Qwen2's q, k and v projections always have a bias
            o_bias=bias and model_type in ("llama", "qwen3"),
            mlp_bias=bool(config.get("mlp_bias", False)) and model_type == "llama",
            qk_norm=model_type == "qwen3",
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def layer_params(shape: Shape) -> int:
    """One decoder layer: attention (GQA) and MLP weights and biases, two RMSNorms (and Qwen3's q/k norms)."""
    weights = sum(n_in * n_out for n_in, n_out in shape.linears().values())
    norms = 2 * shape.hidden + (2 * shape.head_dim if shape.qk_norm else 0)
    return weights + sum(shape.biases().values()) + norms


def param_count(config: dict[str, Any] | None) -> int | None:
    """Every parameter: embeddings, the decoder layers, the final norm and the LM head unless tied."""
    shape = shape_of(config)
    if shape is None:
        return None
    embeddings = shape.vocab * shape.hidden
    head = 0 if shape.tied else shape.vocab * shape.hidden
    return embeddings + shape.layers * layer_params(shape) + shape.hidden + head


def model_bytes(config: dict[str, Any] | None) -> int | None:
    """Size of the weights in safetensors, in the config's dtype."""
    params = param_count(config)
    return None if params is None else params * dtype_bytes(dtype_of(config), 4)


def footprint(config: dict[str, Any]) -> dict[str, int] | None:
    """``ModelSource.footprint`` of the built-in sources: the parameters and the weights' size."""
    params = param_count(config)
    return None if params is None else {"params": params, "bytes": model_bytes(config)}
