"""Property 15.1-2: the sampler draws from softmax(logits / T) restricted to the kept set.

Kept set K (declared conventions, ``gpt.sampling``): temperature 0 is argmax (lowest index on ties);
otherwise top-k keeps {i : z_i >= z_(k)} (z = logits / T, z_(k) the k-th largest, ties all kept), and
top-p keeps, of the top-k renormalised distribution r, the smallest descending prefix with mass >= p.
Which tokens *tied* with that prefix's last one are kept is an implementation's tie rule, so generically
{r > b} <= K <= {r >= b} with mass(K) >= p; gpt's rule (all tied tokens kept) is checked exactly.
"""
import math

import pytest
import torch
from hypothesis import assume, given, strategies as st

from properties.harness import gpt_only
from properties.sampling_reference import near_boundary, reference_row, sampler_args
from properties.stats import FALSE_ALARM, assert_counts_follow, draw_counts
from strategies import seeds

PROB_TOL = 1e-12  # float64 softmax of O(10) logits over <= 12 tokens: a few ulps per term


def _check_row(P, logits, temperature, top_k, top_p, exact_ties: bool):
    V = len(logits)
    support = {i for i in range(V) if P[i] > 0}
    if temperature == 0:
        greedy = max(range(V), key=lambda i: (logits[i], -i))  # first maximum
        assert support == {greedy} and P[greedy] == 1, f"temperature 0: support {support}, argmax is {greedy}"
        return
    r, must, may = reference_row(logits, temperature, top_k, top_p)
    assert must <= support <= may, f"kept set {sorted(support)} not within [{sorted(must)}, {sorted(may)}]"
    if exact_ties:
        assert support == may, f"kept set {sorted(support)}, declared tie-inclusive set {sorted(may)}"
    mass = sum(r[i] for i in support)
    if top_p is not None:
        assert mass >= top_p - 1e-12, f"kept mass {mass} < top_p {top_p}"
    if top_k is not None and top_k < V and top_p is None:
        kth = sorted(logits, reverse=True)[top_k - 1]
        assert support == {i for i in range(V) if logits[i] >= kth}, "top-k support is not the k largest logits"
    for i in support:
        expected = r[i] / mass
        assert abs(P[i] - expected) <= PROB_TOL, f"token {i}: probability {P[i]} != softmax(z / T) on K = {expected}"


@pytest.mark.needs("sampler")
@given(args=sampler_args())
def test_sampling_distribution_is_the_restricted_softmax(subject, args):
    """P = sampling_probs(logits, T, k, p): T = 0 -> onehot(argmax); top_k = 1 -> the tied maxima;
    supp(P) = K within the bounds above; P_i = softmax(z)_i / sum_{j in K} softmax(z)_j on K."""
    logits, temperature, top_k, top_p = args
    for row in logits.tolist():
        if top_p is not None and temperature > 0:
            assume(not near_boundary(reference_row(row, temperature, top_k, None)[0], top_p))
    P = subject.sampling_probs(logits, temperature, top_k, top_p)
    assert P.shape == logits.shape
    for b, row in enumerate(logits.tolist()):
        _check_row(P[b].tolist(), row, temperature, top_k, top_p, exact_ties=False)
    greedy = subject.sample(logits, 0.0, top_k, top_p)
    assert torch.equal(greedy.flatten(), logits.argmax(-1)), "temperature 0 did not return the argmax"


@given(args=sampler_args())
def test_gpt_top_p_keeps_every_tied_token(subject, args):
    """gpt's declared tie rule: K = {r >= b} exactly (the kept set never depends on sort order)."""
    gpt_only(subject)
    logits, temperature, top_k, top_p = args
    for row in logits.tolist():
        if top_p is not None and temperature > 0:
            assume(not near_boundary(reference_row(row, temperature, top_k, None)[0], top_p))
    P = subject.sampling_probs(logits, temperature, top_k, top_p)
    for b, row in enumerate(logits.tolist()):
        _check_row(P[b].tolist(), row, temperature, top_k, top_p, exact_ties=True)


N_DRAWS = 20_000


@pytest.mark.needs("sampler")
@given(args=sampler_args(), data=st.data())
def test_draws_follow_the_sampling_distribution(subject, args, data):
    """N = 20000 draws of one logits row: every draw in K, and each count within its Bernstein threshold of
    N * softmax(z)_i restricted to K (K from the reference; false-alarm rate 1e-6 over all categories,
    see properties.stats)."""
    logits, temperature, top_k, top_p = args
    row = logits[data.draw(st.integers(0, logits.size(0) - 1), label="row")].tolist()
    V = len(row)
    if temperature == 0:
        expected = [0.0] * V
        expected[max(range(V), key=lambda i: (row[i], -i))] = 1.0
    else:
        r, must, may = reference_row(row, temperature, top_k, top_p)
        assume(top_p is None or not near_boundary(reference_row(row, temperature, top_k, None)[0], top_p))
        # the tied tokens' membership is checked above; here the subject's own K (between must and may)
        kept = {i for i, x in enumerate(subject.sampling_probs(torch.tensor([row], dtype=torch.float64),
                                                               temperature, top_k, top_p)[0].tolist()) if x > 0}
        assert must <= kept <= may
        mass = sum(r[i] for i in kept)
        expected = [r[i] / mass if i in kept else 0.0 for i in range(V)]
    gen = torch.Generator().manual_seed(data.draw(seeds(), label="sampling seed"))
    draws = subject.sample(torch.tensor([row], dtype=torch.float64).expand(N_DRAWS, V), temperature, top_k, top_p, gen)
    assert draws.shape == (N_DRAWS, 1)
    assert_counts_follow(draw_counts(draws, V), torch.tensor(expected), f"T={temperature}, top_k={top_k}, "
                         f"top_p={top_p}", FALSE_ALARM)
    assert math.isclose(sum(expected), 1.0, rel_tol=1e-9)
