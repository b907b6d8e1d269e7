"""The smoke commands run end to end as a user runs them (subprocesses, tiny settings) and write
well-formed JSON: keys present, numbers finite. Nothing here is timed: wall times on shared CI machines
are noise, so throughput is reported by the commands, never asserted."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt import data
from gpt.overfit import main as overfit_main

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
needs_corpus = pytest.mark.skipif(not CORPUS.is_file(), reason=f"shared tiny-shakespeare copy not found at {CORPUS}")
# a 1-layer, 32-wide model and three 1x16 steps: seconds, yet every code path of the command
TINY = ["model.overrides.n_layer=1", "model.overrides.n_embd=32", "model.overrides.n_head=2",
        "data.seq_len=16", "optim.max_iters=3"]
METRIC_KEYS = {"passed", "final_loss", "max_final_loss", "initial_loss", "losses", "lrs", "iters", "train_time_s",
               "wall_time_s", "tokens_per_s", "peak_memory_mib", "memory_kind", "device", "dtype", "model",
               "batch", "data", "config", "versions"}


def clean_env(tmp_path):
    """No user corpus variable, and a private cache: tests never read the user's cache or the network."""
    env = {k: v for k, v in os.environ.items() if k != data.DATA_ENV}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


def run(args, tmp_path):
    env = clean_env(tmp_path)
    # one thread: the suite runs one pytest worker per core, and oversubscribed torch threads spin for seconds
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_finite(value, where):
    if isinstance(value, dict):
        for k, v in value.items():
            assert_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            assert_finite(v, f"{where}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{where} is {value}"


def check_overfit_outputs(out, iters):
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics), f"missing keys {METRIC_KEYS - set(metrics)}"
    assert metrics["iters"] == iters and len(metrics["losses"]) == len(metrics["lrs"]) == iters
    assert_finite({k: metrics[k] for k in ("final_loss", "initial_loss", "losses", "lrs", "train_time_s",
                                           "wall_time_s", "tokens_per_s", "peak_memory_mib")}, "metrics")
    assert metrics["tokens_per_s"] > 0 and metrics["versions"]["torch"]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return metrics


@pytest.mark.slow
def test_overfit_synthetic_fails_plainly_on_missed_threshold(tmp_path):
    """--synthetic needs no corpus; an unreachable threshold exits 1 with a plain message, outputs still written."""
    out = tmp_path / "synthetic"
    proc = run(["gpt.overfit", "--config", "configs/tiny_shakespeare.yaml", "--synthetic", *TINY, "threads=1",
                "max_final_loss=0.0", f"out_dir={out}"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "FAILED: final loss" in proc.stderr and "max_final_loss=0.0" in proc.stderr
    assert "iter    3/3: loss" in proc.stdout  # the per-iteration log
    metrics = check_overfit_outputs(out, 3)
    assert metrics["data"]["source"] == "synthetic" and metrics["passed"] is False


@pytest.mark.slow
@needs_corpus
def test_overfit_shared_corpus(tmp_path):
    out = tmp_path / "corpus"
    proc = run(["gpt.overfit", "--config", "configs/tiny_shakespeare.yaml", *TINY, "threads=1", "max_final_loss=100",
                f"data.path={CORPUS}", "data.download=false", f"out_dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = check_overfit_outputs(out, 3)
    assert metrics["passed"] is True
    assert metrics["data"]["sha256"] == data.TINY_SHAKESPEARE_SHA256 and metrics["data"]["vocab_size"] == 65


@pytest.mark.slow
def test_bench_with_hf_baseline(tmp_path):
    path = tmp_path / "bench.json"
    # --peak-tflops skips the peak-matmul measurement, which this test does not need
    proc = run(["gpt.bench", "--preset", "shakespeare-char", "--batch", "1", "--seq-len", "16", "--steps", "2",
                "--warmup", "1", "--threads", "1", "--peak-tflops", "1", "--json", str(path)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(path.read_text())
    stdout_json = json.loads(proc.stdout[proc.stdout.index("\n{") + 1:])  # the table, then the same JSON
    assert stdout_json["results"].keys() == report["results"].keys() == {"gpt", "hf_gpt2"}
    assert "tokens/s" in proc.stdout and "ours / GPT2LMHeadModel" in proc.stdout
    for key in ("settings", "flops_per_token", "peak_tflops", "peak_source", "memory_kind", "ratios_ours_over_baseline",
                "versions"):
        assert key in report, key
    for r in report["results"].values():
        for key in ("params", "step_ms_median", "tokens_per_s", "mfu", "peak_memory_mib", "last_loss"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (r["impl"], key, r[key])
        assert r["tokens_per_s"] > 0
    assert_finite(report, "report")
    assert report["ratios_ours_over_baseline"]["hf_gpt2"]["tokens_per_s"] > 0


def test_missing_corpus_error_says_how_to_provide_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    code = overfit_main(["--config", str(ROOT / "configs" / "tiny_shakespeare.yaml"), *TINY,
                         f"data.path={tmp_path / 'nope.txt'}", "data.download=false",
                         f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2
    for hint in ("nope.txt", "data.path=", data.DATA_ENV, "--synthetic", data.TINY_SHAKESPEARE_URL):
        assert hint in err, f"{hint!r} missing from: {err}"
    assert not (tmp_path / "out").exists()


def test_data_env_pointing_nowhere_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "missing.txt"))
    with pytest.raises(data.CorpusNotFoundError, match=data.DATA_ENV):
        data.resolve_corpus(None, cache_dir=tmp_path, download=False)


@needs_corpus
def test_download_verifies_sha256(tmp_path, monkeypatch):
    """The download path, offline: a file:// URL stands in for the public one."""
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    url = CORPUS.as_uri()
    with pytest.raises(data.CorpusNotFoundError, match="sha256 mismatch"):
        data.resolve_corpus(None, cache_dir=tmp_path / "bad", url=url, sha256="0" * 64)
    assert not list((tmp_path / "bad").rglob("*.txt")) and not list((tmp_path / "bad").rglob("*.part"))
    got = data.resolve_corpus(None, cache_dir=tmp_path / "good", url=url)
    assert got == tmp_path / "good" / data.CACHE_SUBPATH and data.sha256_of(got) == data.TINY_SHAKESPEARE_SHA256
    assert data.resolve_corpus(None, cache_dir=tmp_path / "good", download=False) == got  # cached now


def test_char_tokenizer_round_trip():
    tok = data.CharTokenizer.from_text("hello world")
    assert tok.vocab_size == 8 and tok.decode(tok.encode("world hello")) == "world hello"
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("z")
