"""Valid configs across every architecture axis, and invalid configs with one broken constraint."""
from __future__ import annotations

from hypothesis import strategies as st

from gpt.config import Config

from .space import ConfigSpace

# name -> (max layers, max heads, max head size, max vocab, max block size); "tiny" costs milliseconds
SIZES = {
    "tiny": dict(layers=2, heads=4, head_size=8, vocab=48, block=12),
    "small": dict(layers=3, heads=6, head_size=16, vocab=256, block=48),
    "medium": dict(layers=4, heads=8, head_size=32, vocab=1024, block=128),
}


@st.composite
def configs(draw, space: ConfigSpace = ConfigSpace(), size: str = "tiny", dropout: bool = False,
            **fixed) -> Config:
    """A valid ``Config`` drawn from ``space``; ``fixed`` pins fields (e.g. attn_backend="math").

    ``dropout`` draws non-zero dropout probabilities; by default they are 0, which most invariants need.
    """
    s = SIZES[size]

    def pick(name, strategy):
        return fixed[name] if name in fixed else draw(strategy, label=name)

    n_head = pick("n_head", st.integers(1, s["heads"]))
    divisors = [g for g in range(1, n_head + 1) if n_head % g == 0]
    n_query_groups = pick("n_query_groups", st.sampled_from(divisors) if space.gqa else st.just(n_head))
    position = pick("position_embedding", st.sampled_from(space.positions))
    # rope rotates pairs; and n_embd >= 2 always, since a LayerNorm over one feature outputs its bias alone
    min_head = 2 if position == "rope" or n_head == 1 else 1
    head_size = pick("head_size", st.integers(min_head, s["head_size"]))
    if position == "rope" and not (space.partial_rotary or space.odd_rotary) and head_size % 2 \
            and "head_size" not in fixed:
        head_size -= 1  # full rotary over an even number of features is the only choice left
    n_embd = n_head * head_size
    if space.free_head_size and draw(st.booleans(), label="free n_embd"):
        if space.divisible_n_embd:
            per_head = st.integers(-(-2 // n_head), s["heads"] * s["head_size"] // n_head)  # n_embd >= 2
            n_embd = n_head * draw(per_head, label="n_embd / n_head")
        else:
            n_embd = draw(st.integers(2, s["heads"] * s["head_size"]), label="n_embd")
    n_embd = fixed.get("n_embd", n_embd)

    kw = dict(n_layer=pick("n_layer", st.integers(1, s["layers"])), n_head=n_head, n_embd=n_embd,
              head_size=head_size, n_query_groups=n_query_groups, position_embedding=position,
              vocab_size=pick("vocab_size", st.integers(2, s["vocab"])),
              block_size=pick("block_size", st.integers(2, s["block"])))
    kw["padding_multiple"] = pick("padding_multiple", st.sampled_from([1, 8, 64] if space.vocab_padding else [1]))
    if space.intermediate_sizes:
        kw["intermediate_size"] = pick("intermediate_size", st.integers(1, 4 * n_embd))
    else:
        kw["intermediate_size"] = 4 * n_embd
    if position == "rope":
        n_elem = head_size
        if space.partial_rotary:
            n_elem = draw(st.integers(2, head_size), label="rotated features")
        if not space.odd_rotary and n_elem % 2:
            n_elem -= 1
        # (n + 0.5) / hs so that int(percentage * hs) == n despite float rounding
        kw["rotary_percentage"] = 1.0 if n_elem == head_size else (n_elem + 0.5) / head_size
        kw["rope_base"] = pick("rope_base", st.sampled_from([10000.0, 100.0, 500000.0]))
        kw["rope_scaling"] = pick("rope_scaling", rope_scalings(space.rope_scalings))
    kw["qk_norm"] = pick("qk_norm", st.sampled_from(space.qk_norms))
    kw["scale_embeddings"] = pick("scale_embeddings", st.sampled_from(space.scale_embeddings))
    kw["norm_class_name"] = pick("norm_class_name", st.sampled_from(space.norms))
    kw["norm_eps"] = pick("norm_eps", st.sampled_from(space.norm_eps))
    kw["mlp_class_name"] = pick("mlp_class_name", st.sampled_from(space.mlps))
    kw["gelu_approximate"] = pick("gelu_approximate", st.sampled_from(space.gelu_approximations))
    for flag in ("bias", "attn_bias", "parallel_residual", "tie_embeddings"):
        kw[flag] = pick(flag, st.sampled_from(getattr(space, flag)))
    placements = [p for p in space.norm_placements if p == "pre" or not kw["parallel_residual"]]
    if not placements:  # a space of sandwich/post norms only: those blocks are sequential
        kw["parallel_residual"] = False
        placements = list(space.norm_placements)
    kw["norm_placement"] = pick("norm_placement", st.sampled_from(placements))
    shared = [v for v in space.shared_attention_norm if kw["parallel_residual"] or not v]
    kw["shared_attention_norm"] = pick("shared_attention_norm", st.sampled_from(shared))
    kw["attn_backend"] = pick("attn_backend", st.sampled_from(space.backends))
    kw.update(_attention_variants(draw, space, fixed, kw["n_layer"], kw["block_size"]))
    if kw["mlp_class_name"] == "MoE":
        kw.update(_moe_fields(draw, pick, space, n_embd))
    if dropout:
        # >= 0.3 so that two train-mode forwards differ with overwhelming probability even on tiny draws
        p = st.sampled_from([0.3, 0.5])
        for group in space.dropout_groups:
            value = draw(p, label=group[0])
            kw.update({name: value for name in group})
    kw.update({k: v for k, v in fixed.items() if k not in kw})
    for name in space.ignored:  # the subject does not honour these: left at their defaults
        if name not in fixed:
            kw.pop(name, None)
    if not kw.get("parallel_residual", False):
        kw.pop("shared_attention_norm", None)  # requires parallel_residual, which may just have been dropped
    return Config(**kw)


# soft-capping values: 0.5 actually bends the small scores of tiny random models, 50 is Gemma 2's attention cap
SOFTCAPS = (0.5, 2.0, 50.0)


def _attention_variants(draw, space: ConfigSpace, fixed: dict, n_layer: int, block_size: int) -> dict:
    """Sliding window (and per-layer pattern), soft-capping and sinks, each only where ``space`` allows it."""
    def pick(name, allowed, strategy, off):
        if name in fixed:
            return fixed[name]
        return draw(strategy, label=name) if allowed else off

    kw = {}
    window = pick("sliding_window", space.sliding_window,
                  st.one_of(st.none(), st.integers(space.min_sliding_window,
                                                   max(space.min_sliding_window, block_size - 1))), None)
    kw["sliding_window"] = window
    if window is not None and space.layer_types and "layer_types" not in fixed:
        types = st.sampled_from(("full_attention", "sliding_attention"))
        kw["layer_types"] = draw(st.one_of(st.none(), st.tuples(*[types] * n_layer)), label="layer_types")
    for name in ("attn_logit_softcap", "final_logit_softcap"):
        kw[name] = pick(name, getattr(space, name), st.one_of(st.none(), st.sampled_from(SOFTCAPS)), None)
    kw["attention_sinks"] = pick("attention_sinks", space.attention_sinks, st.booleans(), False)
    return kw


def _moe_fields(draw, pick, space: ConfigSpace, n_embd: int) -> dict:
    """Experts, top-k, routing, expert kind and width, shared experts. Ties in the top-k need equal router
    scores, which random float64 router weights reach with probability 0: properties that depend on the
    tie rule build them on purpose."""
    n_experts = pick("n_experts", st.integers(1, space.max_experts))
    kw = dict(n_experts=n_experts, n_experts_per_token=pick("n_experts_per_token", st.integers(1, n_experts)),
              moe_routing=pick("moe_routing", st.sampled_from(space.moe_routings)),
              moe_expert_mlp=pick("moe_expert_mlp", st.sampled_from(space.moe_expert_mlps)),
              moe_intermediate_size=pick("moe_intermediate_size", st.integers(1, 2 * n_embd)))
    n_shared = pick("n_shared_experts", st.sampled_from(space.n_shared_experts))
    kw["n_shared_experts"] = n_shared
    if n_shared:
        kw["shared_expert_gate"] = pick("shared_expert_gate", st.sampled_from(space.shared_expert_gate))
        if space.free_shared_expert_size:
            kw["shared_expert_intermediate_size"] = pick("shared_expert_intermediate_size",
                                                         st.integers(1, 2 * n_embd))
    return kw
# original contexts spanning tiny to real ones, so that every frequency band is populated at some base
_ORIGINAL_CONTEXTS = [4, 16, 64, 512, 8192]


def rope_scalings(kinds=("none", "linear", "llama3", "yarn")):
    """``Config.rope_scaling`` values: None or a dict of one of ``kinds`` with drawn parameters."""
    factor = st.sampled_from([1.0, 2.0, 2.5, 4.0, 8.0, 32.0])
    context = st.sampled_from(_ORIGINAL_CONTEXTS)
    by_kind = {
        "none": st.none(),
        "linear": st.fixed_dictionaries({"type": st.just("linear"), "factor": factor}),
        "llama3": st.tuples(factor, st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from([1.0, 3.0, 7.0]),
                            context).map(lambda t: dict(type="llama3", factor=t[0], low_freq_factor=t[1],
                                                        high_freq_factor=t[1] + t[2],
                                                        original_max_position_embeddings=t[3])),
        "yarn": st.fixed_dictionaries({
            "type": st.just("yarn"), "factor": factor, "original_max_position_embeddings": context,
            "beta_fast": st.sampled_from([32.0, 8.0]), "beta_slow": st.sampled_from([1.0, 0.5]),
            "attention_factor": st.sampled_from([None, 0.8, 1.3]), "truncate": st.booleans()}),
    }
    return st.one_of(*(by_kind[k] for k in kinds))


# field -> list of (override, note) that each break exactly one constraint of a valid base config
_BREAKERS = {
    "vocab_size": [dict(vocab_size=0), dict(vocab_size=-3), dict(vocab_size=2.5)],
    "padding_multiple": [dict(padding_multiple=0)],
    "padded_vocab_size": [dict(padded_vocab_size=7)],
    "block_size": [dict(block_size=0)],
    "n_layer": [dict(n_layer=0), dict(n_layer=2.0)],
    "n_embd": [dict(n_embd=0), dict(n_embd=30)],  # 30 is not divisible by n_head=4
    "n_head": [dict(n_head=0), dict(n_head=5)],
    "head_size": [dict(head_size=0)],
    "n_query_groups": [dict(n_query_groups=3), dict(n_query_groups=8), dict(n_query_groups=0)],
    "intermediate_size": [dict(intermediate_size=0)],
    "position_embedding": [dict(position_embedding="alibi")],
    "rope_base": [dict(position_embedding="rope", rope_base=1.0), dict(position_embedding="rope", rope_base=float("nan"))],
    "rotary_percentage": [dict(position_embedding="rope", rotary_percentage=0.0),
                          dict(position_embedding="rope", rotary_percentage=1.5),
                          dict(position_embedding="rope", rotary_percentage=0.1)],  # rotates < 2 features
    "norm_class_name": [dict(norm_class_name="BatchNorm")],
    "norm_eps": [dict(norm_eps=0.0), dict(norm_eps=-1e-5)],
    "mlp_class_name": [dict(mlp_class_name="MoD")],
    "n_experts": [dict(mlp_class_name="MoE", n_experts=0)],
    "n_experts_per_token": [dict(mlp_class_name="MoE", n_experts=2, n_experts_per_token=3)],
    "moe_routing": [dict(mlp_class_name="MoE", moe_routing="sigmoid")],
    "moe_expert_mlp": [dict(mlp_class_name="MoE", moe_expert_mlp="MoE")],
    "n_shared_experts": [dict(n_shared_experts=-1)],
    "shared_expert_gate": [dict(shared_expert_gate=True, n_shared_experts=0)],
    "gelu_approximate": [dict(gelu_approximate="sigmoid")],
    "bias": [dict(bias="yes")],
    "shared_attention_norm": [dict(shared_attention_norm=True, parallel_residual=False)],
    "embd_dropout": [dict(embd_dropout=1.0)],
    "attn_dropout": [dict(attn_dropout=-0.1)],
    "resid_dropout": [dict(resid_dropout=1.5)],
    "attn_backend": [dict(attn_backend="xformers")],
    "sliding_window": [dict(sliding_window=0), dict(sliding_window=2.5)],
    "layer_types": [dict(layer_types=("sliding_attention",), sliding_window=None),  # sliding without W
                    dict(layer_types=("full_attention", "full_attention"), sliding_window=4),  # n_layer=1
                    dict(layer_types=("global",), sliding_window=4), dict(layer_types="sliding_attention")],
    "attn_logit_softcap": [dict(attn_logit_softcap=0.0), dict(attn_logit_softcap=float("inf"))],
    "final_logit_softcap": [dict(final_logit_softcap=-30.0), dict(final_logit_softcap="30")],
    "attention_sinks": [dict(attention_sinks=1)],
    "qk_norm": [dict(qk_norm="layer"), dict(qk_norm=True)],
    "norm_placement": [dict(norm_placement="after"), dict(norm_placement="post", parallel_residual=True)],
    "scale_embeddings": [dict(scale_embeddings=1)],
    "rope_scaling": [dict(rope_scaling=dict(type="linear", factor=2.0)),  # needs rope positions
                     dict(position_embedding="rope", rope_scaling="linear"),
                     dict(position_embedding="rope", rope_scaling=dict(type="ntk", factor=2.0)),
                     dict(position_embedding="rope", rope_scaling=dict(type="linear", factor=0.5)),
                     dict(position_embedding="rope", rope_scaling=dict(type="linear", factor=2.0, beta=1.0)),
                     dict(position_embedding="rope", rope_scaling=dict(type="llama3", factor=8.0, low_freq_factor=4.0,
                                                                      high_freq_factor=1.0,
                                                                      original_max_position_embeddings=64)),
                     dict(position_embedding="rope", rope_scaling=dict(type="yarn", factor=4.0,
                                                                      original_max_position_embeddings=0))],
}
INVALID_BASE = dict(vocab_size=16, padding_multiple=8, block_size=8, n_layer=1, n_embd=32, n_head=4)


@st.composite
def invalid_configs(draw):
    """(kwargs, field): Config(**kwargs) must raise ValueError/TypeError naming ``field``."""
    field = draw(st.sampled_from(sorted(_BREAKERS)), label="broken field")
    override = draw(st.sampled_from(_BREAKERS[field]), label="override")
    return {**INVALID_BASE, **override}, field
