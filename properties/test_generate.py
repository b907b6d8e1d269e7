"""Property 15.3: generation is reproducible and is greedy decoding of the model's own forward.

g(x, n) = generate(x, n) at temperature 0 satisfies g(x, n)_{T+t} = argmax f(g(x, n)_{<T+t})_{last} for
every step t (f the full forward, no cache), and g(g(x, n), m) == g(x, n + m) (resuming). A step whose top
two logits are within twice the float64 reordering bound of each other is a near-tie that cache and full
forward may legitimately break differently: the comparison stops there (the prefix before it must match).
Seeded sampling is reproducible: generate(..., seed=s) twice gives the same tokens. With stop tokens, each
row up to its first stop token equals the unstopped generation, and the output ends as soon as every row
has stopped.
"""
import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import draw_case, float64_tol, gpt_only
from strategies import seeds


def greedy_reference(subject, model, idx, n, config):
    """(tokens (B, T + n) by full forwards, first step index that is a near-tie or n)."""
    x, first_tie = idx, n
    for t in range(n):
        logits = subject.logits(model, x)[:, -1].double()  # (B, V)
        top2 = logits.topk(min(2, logits.size(-1)), dim=-1).values
        if top2.size(-1) == 2 and first_tie == n and \
                ((top2[:, 0] - top2[:, 1]) <= 2 * float64_tol(config, logits)).any():
            first_tie = t
        x = torch.cat([x, logits.argmax(-1, keepdim=True)], dim=1)
    return x, first_tie


def _draw(data, subject, min_new=0):
    config, model, idx = draw_case(data, subject, max_len=None)
    if idx.size(1) + min_new > config.block_size:
        idx = idx[:, : config.block_size - min_new]
    n = data.draw(st.integers(min_new, config.block_size - idx.size(1)), label="max_new_tokens")
    return config, model, idx, n


@pytest.mark.needs("generate")
@given(data=st.data())
def test_greedy_generation_is_argmax_of_full_forwards(subject, data):
    """g(x, n)[:, T + t] == argmax f(g(x, n)[:, :T + t])[:, -1] for t before the first near-tie."""
    config, model, idx, n = _draw(data, subject)
    with torch.no_grad():
        out = subject.generate(model, idx, n, temperature=0.0)
        ref, tie = greedy_reference(subject, model, idx, n, config)
    T = idx.size(1)
    assert out.shape == (idx.size(0), T + n), f"generate returned shape {tuple(out.shape)}"
    assert torch.equal(out[:, :T], idx), "generate changed the prompt"
    assert torch.equal(out[:, : T + tie + 1 if tie < n else T + n], ref[:, : T + tie + 1 if tie < n else T + n]), (
        f"greedy generation {out.tolist()} != argmax of full forwards {ref.tolist()} (first near-tie at step {tie})")


@pytest.mark.needs("generate")
@given(data=st.data())
def test_generating_n_then_m_equals_n_plus_m(subject, data):
    """g(g(x, n), m) == g(x, n + m) at temperature 0 (up to the first near-tie)."""
    config, model, idx, total = _draw(data, subject)
    n = data.draw(st.integers(0, total), label="n")
    with torch.no_grad():
        whole = subject.generate(model, idx, total, temperature=0.0)
        resumed = subject.generate(model, subject.generate(model, idx, n, temperature=0.0), total - n, temperature=0.0)
        _, tie = greedy_reference(subject, model, idx, total, config)
    end = idx.size(1) + (tie + 1 if tie < total else total)
    assert torch.equal(resumed[:, :end], whole[:, :end]), f"n={n} then m={total - n}: {resumed.tolist()} != {whole.tolist()}"


@pytest.mark.needs("generate")
@given(data=st.data())
def test_seeded_sampling_is_reproducible(subject, data):
    """generate(x, n, T, k, p, seed=s) == generate(x, n, T, k, p, seed=s)."""
    config, model, idx, n = _draw(data, subject)
    temperature = data.draw(st.floats(0.1, 3.0), label="temperature")
    top_k = data.draw(st.one_of(st.none(), st.integers(1, config.vocab_size)), label="top_k")
    top_p = data.draw(st.one_of(st.none(), st.floats(0.05, 1.0)), label="top_p")
    seed = data.draw(seeds(), label="sampling seed")
    with torch.no_grad():
        a = subject.generate(model, idx, n, temperature, top_k, top_p, seed=seed)
        b = subject.generate(model, idx, n, temperature, top_k, top_p, seed=seed)
    assert a.shape == (idx.size(0), idx.size(1) + n)
    assert torch.equal(a, b), "the same seed generated different tokens"
    assert ((a >= 0) & (a < config.vocab_size)).all(), "generated ids outside [0, vocab_size)"


@pytest.mark.needs("generate")
@given(data=st.data())
def test_stop_tokens_end_rows_and_generation(subject, data):
    """s = a token of the unstopped greedy output: each row equals it up to and including its first s, and the
    output has length T + min(n, max over rows of (first s index + 1))."""
    config, model, idx, n = _draw(data, subject, min_new=1)
    T = idx.size(1)
    with torch.no_grad():
        free = subject.generate(model, idx, n, temperature=0.0)
        stop = int(free[data.draw(st.integers(0, idx.size(0) - 1), label="row"),
                        T + data.draw(st.integers(0, n - 1), label="step")])
        out = subject.generate(model, idx, n, temperature=0.0, stop_tokens=[stop])
    firsts = []
    for row in free[:, T:].tolist():
        firsts.append(row.index(stop) + 1 if stop in row else n)
    assert out.size(1) == T + max(firsts), f"stop token {stop}: length {out.size(1) - T}, expected {max(firsts)}"
    for b, f in enumerate(firsts):
        assert torch.equal(out[b, : T + f], free[b, : T + f]), f"row {b} differs before its stop token {stop}"


@given(data=st.data())
def test_gpt_generate_feeds_each_token_once_and_resumes_sampling(subject, data):
    """gpt: generate runs T + n - 1 token positions through the model (prefill, then one per step: the KV cache
    is used), and sampled generation with one generator resumes exactly: g(g(x, n, G), m, G) == g(x, n + m, G')
    for G, G' seeded alike."""
    gpt_only(subject)
    from gpt.generate import generate

    config, model, idx, total = _draw(data, subject, min_new=1)
    n = data.draw(st.integers(0, total), label="n")
    seen = []
    hook = model.wte.register_forward_hook(lambda m, i, o: seen.append(i[0].size(1)))
    try:
        generate(model, idx, total, temperature=0.0)
    finally:
        hook.remove()
    assert sum(seen) == idx.size(1) + total - 1, f"generate fed {sum(seen)} positions, expected T + n - 1"
    s = data.draw(seeds(), label="sampling seed")
    whole = generate(model, idx, total, 1.0, generator=torch.Generator().manual_seed(s))
    gen = torch.Generator().manual_seed(s)
    resumed = generate(model, generate(model, idx, n, 1.0, generator=gen), total - n, 1.0, generator=gen)
    assert torch.equal(resumed, whole), "sampling n then m tokens with one generator != n + m tokens"
