"""The conformance tool itself (plain tests of this repository): subject validation messages, the default
space of a bare factory, what conformance mode leaves out, and the report."""
import pytest
import torch
from hypothesis import given, settings
from torch import nn

from properties.conformance import check_subject, deselect, describe_deselection, validate
from properties.report import render
from properties.subject import CONVENTIONAL_SPACE, ModuleSubject, load_subject
from strategies import ConfigSpace, configs

pytestmark = pytest.mark.repo


class _Logits(nn.Module):
    def __init__(self, c, scale=1.0, vocab=None):
        super().__init__()
        self.scale, self.emb = scale, nn.Embedding(c.vocab_size, vocab or c.vocab_size)

    def forward(self, idx):
        return self.emb(idx) * self.scale


def test_validation_names_each_unusable_subject():
    """A missing module, a factory returning a function, NaN logits and a wrong shape each give one
    message naming the problem; a usable factory gives none."""
    assert "cannot import the subject 'nosuchmod:make'" in check_subject("nosuchmod:make", lambda: load_subject("nosuchmod:make"))
    fn = ModuleSubject(lambda c: (lambda idx: idx), "mod:plain")
    assert "returned function, not a torch.nn.Module" in validate(fn)
    nan = ModuleSubject(lambda c: _Logits(c, float("nan")), "mod:nan")
    assert "non-finite logits on a tiny model: nan at (0, 0, 0)" in validate(nan)
    wide = ModuleSubject(lambda c: _Logits(c, vocab=c.vocab_size + 1), "mod:wide")
    assert "expected (2, 5, 11) = (B, T, vocab_size)" in validate(wide)
    assert validate(ModuleSubject(_Logits, "mod:ok")) is None


@settings(max_examples=20, derandomize=True, database=None)
@given(config=configs(CONVENTIONAL_SPACE))
def test_bare_factory_draws_conventional_configs(config):
    """A bare factory's space: n_embd = n_head * head_size, RoPE over all of an even head, one backend."""
    assert config.n_embd == config.n_head * config.head_size
    if config.position_embedding == "rope":
        assert config.rope_n_elem == config.head_size and config.head_size % 2 == 0
    assert config.attn_backend == "sdpa"


def test_factory_attributes_widen_the_space():
    def make(config):
        return _Logits(config)

    assert ModuleSubject(make, "m").space == CONVENTIONAL_SPACE
    make.space, make.capabilities, make.float32_islands = ConfigSpace(backends=("sdpa",)), {"kv_cache"}, {"rope"}
    subject = ModuleSubject(make, "m")
    assert subject.space.free_head_size and subject.capabilities == {"kv_cache"}
    assert subject.working_dtype == torch.float32


class _Item:
    def __init__(self, markers=(), fixtures=("subject",)):
        self.markers, self.fixturenames = set(markers), fixtures

    def get_closest_marker(self, name):
        return name if name in self.markers else None


def test_conformance_mode_leaves_out_what_does_not_exercise_the_subject():
    prop, repo, internal, plain = _Item(), _Item({"repo"}), _Item({"gpt_internal"}), _Item(fixtures=())
    kept, dropped = deselect([prop, repo, internal, plain], conformance=True, repository=True)
    assert kept == [prop] and [why for _, why in dropped] == ["repo", "gpt_internal", "no subject"]
    assert "3 tests not collected" in describe_deselection(dropped, "mine", True)
    kept, dropped = deselect([prop, repo, internal, plain], conformance=False, repository=True)
    assert kept == [prop, repo, internal, plain]
    kept, dropped = deselect([prop, repo, internal, plain], conformance=False, repository=False)
    assert kept == [prop, internal, plain]  # an installed package has no repository to check


def test_report_rows_and_failure_reproducer():
    data = {"spec": "mymodel:make", "profile": "ci", "seconds": 1.0, "deselected": "", "command": "",
            "versions": {k: "1" for k in ("gpt-properties", "torch", "hypothesis", "pytest", "pytest-xdist",
                                          "transformers", "python")},
            "subject": {"name": "mymodel:make", "space": "ConfigSpace()", "capabilities": [], "precision": "x"},
            "tests": [{"nodeid": "a", "property": "properties.test_causality::test_future", "test_name": "test_future",
                       "invariant": "past ignores future", "outcome": "failed", "reason": "AssertionError: big",
                       "duration": 0.5, "examples": {"passed": 3, "failed": 1, "invalid": 0},
                       "rebuild": "subject.build(Config(n_layer=1), seed=0, dtype=torch.float64)"},
                      {"nodeid": "b", "property": "properties.test_kv_cache::test_kv", "test_name": "test_kv",
                       "invariant": "cache", "outcome": "skipped", "duration": 0.0,
                       "reason": "test_kv: subject mymodel:make lacks capability kv_cache"}]}
    text = render(data)
    assert ": FAIL" in text.splitlines()[0]
    assert "| `test_causality::test_future` | past ignores future | **failed**: AssertionError: big | 4 (1 failing)" in text
    assert "skipped: subject mymodel:make lacks capability kv_cache" in text
    assert "python -m pytest --pyargs properties.test_causality -k test_future --subject mymodel:make" in text
    assert "rebuild: subject.build(Config(n_layer=1), seed=0" in text


def test_items_run_cheapest_first_under_maxfail_and_longest_first_under_xdist():
    """order(items): ascending measured cost for -x (time to first failure) when no item kills a catalogued
    mutant, descending under xdist (balance); shards cost their share, unknown items the median, and ties
    keep the collection order."""
    from types import SimpleNamespace

    from properties import ordering
    from properties.sharding import Shard

    known = {"t.py::cheap": 1.0, "t.py::mid": 5.0, "t.py::dear": 40.0}
    items = [SimpleNamespace(nodeid=n) for n in ("t.py::dear", "t.py::new", "t.py::cheap", "t.py::mid")]
    items.append(SimpleNamespace(nodeid="t.py::dear[shard0of16]",
                                 callspec=SimpleNamespace(params={"shard": Shard(0, 16, 2, 32)})))
    saved, ordering._table, ordering._fallback = (ordering._table, ordering._fallback), {"seconds": known}, None
    saved_kills, ordering._kills = ordering._kills, {}
    try:
        ordering.order(items, longest_first=False)
        assert [i.nodeid for i in items] == ["t.py::cheap", "t.py::dear[shard0of16]", "t.py::new", "t.py::mid",
                                             "t.py::dear"]
        ordering.order(items, longest_first=True)
        assert [i.nodeid for i in items] == ["t.py::dear", "t.py::new", "t.py::mid", "t.py::dear[shard0of16]",
                                             "t.py::cheap"]
        slow = SimpleNamespace(nodeid="t.py::unmeasured_slow", get_closest_marker=lambda name: name == "slow" or None)
        assert ordering.cost(slow) == 40.0  # an unmeasured slow item costs the dearest measured one
        # a checkout's node ids and an installed suite's (relative to site-packages/properties) share costs
        assert ordering.seconds("properties/t.py::mid") == ordering.seconds("t.py::mid") == 5.0
    finally:
        ordering._table, ordering._fallback = saved
        ordering._kills = saved_kills


def test_fail_fast_order_is_greedy_in_kills_per_second():
    """by_kill_power: item i next iff it maximises (|K_i minus killed| + PRIOR) / max(c_i, FLOOR); items whose
    mutants are all killed fall back to PRIOR / c_i, i.e. cheapest first."""
    from types import SimpleNamespace

    from properties import ordering

    saved, ordering._table, ordering._fallback = (ordering._table, ordering._fallback), \
        {"seconds": {"t.py::a": 1.0, "t.py::b": 0.1, "t.py::c": 2.0, "t.py::d": 0.5, "t.py::e": 1.0}}, None
    try:
        items = [SimpleNamespace(nodeid=f"t.py::{n}") for n in "abcde"]
        # c: (10 + .3) / 2 = 5.15 first; then b: .3 / .1 = 3; e keeps 2 live kills: 2.3 / 1; d: .6; a (its
        # one mutant killed by c): .3
        kills = {"t.py::c": frozenset("xyz1234567"), "t.py::a": frozenset("x"), "t.py::e": frozenset("pq")}
        assert [i.nodeid[-1] for i in ordering.by_kill_power(items, kills)] == list("cbeda")
        assert [i.nodeid[-1] for i in ordering.by_kill_power(items, {})] == list("bdaec")
    finally:
        ordering._table, ordering._fallback = saved
    assert ordering.base_id("a.py::f[x-shard3of16]") == "a.py::f[x]" and ordering.base_id("a.py::f[shard1of4]") == "a.py::f"


def test_xdist_runs_the_distributed_group_on_one_worker_unless_told_otherwise():
    """balance_xdist: under longest first, --dist load (implied by -n) becomes loadgroup and refills are one
    item; an explicit --dist and --maxschedchunk are kept; -x keeps xdist's defaults. plain_id drops
    loadgroup's '@group' suffix (xdist's rule: an '@' after the last ']') so seeds and costs do not change."""
    from types import SimpleNamespace

    from properties import ordering

    def config(args, maxfail=0, dist="load", chunk=None):
        option = SimpleNamespace(numprocesses=2, dist=dist, maxschedchunk=chunk)
        return SimpleNamespace(option=option, invocation_params=SimpleNamespace(args=tuple(args)),
                               getoption=lambda name, default=None: maxfail if name == "maxfail" else default)

    for args, maxfail, chunk, expected in [(["-n", "2"], 0, None, ("loadgroup", 1)),
                                           (["-n", "2", "--dist", "load"], 0, None, ("load", 1)),
                                           (["-n", "2", "--maxschedchunk", "8"], 0, 8, ("loadgroup", 8)),
                                           (["-n", "2", "-x"], 1, None, ("load", None))]:
        c = config(args, maxfail, chunk=chunk)
        ordering.balance_xdist(c)
        assert (c.option.dist, c.option.maxschedchunk) == expected, args
    worker = SimpleNamespace(workerinput={ordering.LOADGROUP_KEY: True}, option=SimpleNamespace(loadgroup=False))
    ordering.balance_xdist(worker)
    assert worker.option.loadgroup
    assert ordering.plain_id("t.py::f[cpu-gloo]@distributed") == "t.py::f[cpu-gloo]"
    assert ordering.plain_id("t.py::f[a@b]") == "t.py::f[a@b]" and ordering.plain_id("t.py::g@grp") == "t.py::g"
    assert ordering.key("properties/t.py::f[x-shard2of4]@distributed") == "t.py::f[x]"
