"""Property 15.4: speculative decoding is the target's own sampler.

Greedy: speculative(target, draft, x, n, k) at temperature 0 == greedy decoding of the target by full
forwards, for any draft and k (up to the first near-tie, as in test_generate).
Sampling: the committed tokens (x_1, x_2) after a prompt are distributed as
P(x_1, x_2) = P_t(x_1 | prompt) P_t(x_2 | prompt, x_1), P_t the target's sampling distribution (temperature,
top-k, top-p): checked over N lockstep rows against the exact joint with Bernstein thresholds at false-alarm
rate 1e-6 (properties.stats), for a draft identical to the target (every draft accepted) and a random draft
(most rejected). Both models' weights are scaled by a drawn factor so their distributions are far from
uniform and from each other: at initialisation a tiny model's next-token distribution is nearly uniform,
which would make a wrong acceptance rule indistinguishable from a right one.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from properties.harness import build, draw_case, draw_config, gpt_only
from properties.stats import FALSE_ALARM, assert_counts_follow, draw_counts
from properties.test_generate import greedy_reference
from strategies import seeds, token_batches


def _draft_for(data, subject, config):
    """A draft model of another drawn architecture with the target's vocabulary and block size."""
    dconfig = draw_config(data, subject, vocab_size=config.vocab_size, block_size=config.block_size)
    return build(subject, dconfig, data.draw(seeds(), label="draft seed"))


def _scale(model, factor: float):
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


@pytest.mark.needs("speculative")
@settings(max_examples=max(2, settings.default.max_examples // 2))
@given(data=st.data())
def test_greedy_speculative_is_greedy_target(subject, data):
    """speculative(target, draft, x, n, k, T=0) == argmax decoding of the target by full forwards."""
    config, target, idx = draw_case(data, subject)
    idx = idx[:, : config.block_size - 1]
    n = data.draw(st.integers(1, config.block_size - idx.size(1)), label="max_new_tokens")
    k = data.draw(st.integers(1, 5), label="k")
    draft = _draft_for(data, subject, config)
    _scale(target, data.draw(st.floats(1, 8), label="target scale"))
    with torch.no_grad():
        out = subject.speculative(target, draft, idx, n, k, temperature=0.0)
        ref, tie = greedy_reference(subject, target, idx, n, config)
    end = idx.size(1) + (tie + 1 if tie < n else n)
    assert out.shape == ref.shape, f"speculative returned shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
    assert torch.equal(out[:, :end], ref[:, :end]), f"greedy speculative {out.tolist()} != greedy target {ref.tolist()}"


N_ROWS = 2000


@pytest.mark.needs("speculative", "sampler")
@settings(max_examples=max(3, settings.default.max_examples // 5))  # ~0.25 s an example: depth in nightly
@given(data=st.data())
def test_speculative_samples_follow_the_target(subject, data):
    """counts of the first two of 3 new tokens (x_1, x_2) over N = 2000 rows ~ P_t(x_1) P_t(x_2 | x_1) (Bernstein), for a draft with the
    target's weights and for a random draft in every example: 5e-7 per check, 1e-6 for the example."""
    V = data.draw(st.integers(2, 5), label="vocab_size")
    config = draw_config(data, subject, vocab_size=V)
    if config.block_size < 4:
        config = config.replace(block_size=4)
    target = _scale(build(subject, config, data.draw(seeds(), label="seed")), data.draw(st.floats(2, 8), label="scale"))
    twin = build(subject, config, 0)  # the same weights, another module: every draft is accepted
    twin.load_state_dict(target.state_dict())
    other = _scale(_draft_for(data, subject, config), data.draw(st.floats(2, 8), label="draft scale"))
    prompt = data.draw(token_batches(config, max_batch=1, max_len=config.block_size - 3), label="prompt")
    k = data.draw(st.integers(1, 4), label="k")
    temperature = data.draw(st.floats(0.3, 2.0), label="temperature")
    top_k = data.draw(st.one_of(st.none(), st.integers(1, V)), label="top_k")
    top_p = data.draw(st.one_of(st.none(), st.floats(0.3, 1.0)), label="top_p")
    seed = data.draw(seeds(), label="sampling seed")
    T = prompt.size(1)
    with torch.no_grad():
        p1 = subject.sampling_probs(subject.logits(target, prompt)[:, -1], temperature, top_k, top_p)[0]  # (V,)
        ext = torch.cat([prompt.expand(V, -1), torch.arange(V).unsqueeze(1)], dim=1)  # (V, T + 1)
        p2 = subject.sampling_probs(subject.logits(target, ext)[:, -1], temperature, top_k, top_p)  # (V, V)
        joint = (p1.unsqueeze(1) * p2).flatten()  # (V * V,)
        for name, draft in (("random draft", other), ("draft == target", twin)):
            # 3 new tokens, so the first round drafts min(k, 2) tokens and the accepted run's length matters
            out = subject.speculative(target, draft, prompt.expand(N_ROWS, -1), 3, k, temperature, top_k, top_p,
                                      seed=seed)
            assert out.shape == (N_ROWS, T + 3)
            pairs = out[:, T] * V + out[:, T + 1]
            assert_counts_follow(draw_counts(pairs, V * V), joint, f"speculative (x_1, x_2), {name}, k={k}, "
                                 f"T={temperature}, top_k={top_k}, top_p={top_p}", FALSE_ALARM / 2)


@given(data=st.data())
def test_gpt_accept_reject_step_commits_target_samples(subject, data):
    """gpt.speculative's accept/reject on explicit distributions: for p (B, r+1, V), q (B, r, V) and drafts
    d_j ~ q_j, the first committed token is distributed as p_1 (N = 20000 rows, Bernstein, 1e-6), and the
    residual norm(max(0, p - q)) sums to 1."""
    gpt_only(subject)
    from gpt.speculative import accepted_counts, commit_next, residual

    V = data.draw(st.integers(2, 6), label="V")
    r = data.draw(st.integers(1, 3), label="r")
    gen = torch.Generator().manual_seed(data.draw(seeds(), label="seed"))
    sharp = data.draw(st.floats(0.5, 4.0), label="sharpness")
    p = torch.softmax(sharp * torch.randn(r + 1, V, generator=gen, dtype=torch.float64), -1)
    q = torch.softmax(sharp * torch.randn(r, V, generator=gen, dtype=torch.float64), -1)
    if data.draw(st.booleans(), label="zeros"):  # tokens the target never draws
        p[:, 0] = 0
        p = p / p.sum(-1, keepdim=True)
    N = 20_000
    P, Q = p.expand(N, -1, -1), q.expand(N, -1, -1)
    drafts = torch.multinomial(Q.reshape(-1, V), 1, generator=gen).view(N, r)
    n = accepted_counts(P, Q, drafts, gen)
    m, token = commit_next(P, Q, drafts, n, gen)
    first = torch.where(n > 0, drafts[:, 0], token) if m == 0 else drafts[:, 0]
    assert_counts_follow(draw_counts(first, V), p[0], f"first committed token, r={r}", FALSE_ALARM)
    res = residual(p[:r], q)
    assert ((res.sum(-1) - 1).abs() <= 1e-12).all() and (res >= 0).all(), "residual is not a distribution"
