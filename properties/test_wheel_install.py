"""The package as a user gets it: build the wheel, install it (non-editable) into a fresh venv, and run
``gpt-properties check`` on a 40-line model in an empty directory outside the repository. A correct model
passes; the same model with its causal mask off by one fails, and the report names the causality property
and a reproducer.

The venv is made with ``--system-site-packages`` so that it reuses this interpreter's torch, hypothesis,
pytest and transformers instead of downloading them (no network needed); the wheel itself is installed
with ``--ignore-installed --no-deps``, so the suite, the plugin and the command come from the wheel, not
from this checkout (checked below).

It takes ~2 minutes on 2 cores, so beyond `slow` it runs only where asked: under the `nightly` profile
(the nightly workflow runs the whole suite, slow tests included, with it) or with
GPT_PROPERTIES_WHEEL_TEST=1."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.repo, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]

MODEL = textwrap.dedent('''
    """A nanoGPT-style model: learned positions, LayerNorm, GELU MLP, n_embd = n_head * head_size."""
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F

    MASK_OFFSET = 0  # 1 plants the bug: each position also sees the next token


    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c, self.ln1, self.ln2 = c, nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
            self.qkv, self.proj = nn.Linear(c.n_embd, 3 * c.n_embd), nn.Linear(c.n_embd, c.n_embd)
            self.mlp = nn.Sequential(nn.Linear(c.n_embd, 4 * c.n_embd), nn.GELU(), nn.Linear(4 * c.n_embd, c.n_embd))

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.c.n_head, C // self.c.n_head).permute(2, 0, 3, 1, 4)
            att = q @ k.transpose(-1, -2) / math.sqrt(k.size(-1))
            att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1 + MASK_OFFSET), float("-inf"))
            x = x + self.proj((att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C))
            return x + self.mlp(self.ln2(x))


    class GPT(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
            self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
            self.ln_f, self.head = nn.LayerNorm(c.n_embd), nn.Linear(c.n_embd, c.vocab_size, bias=False)

        def forward(self, idx):
            x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x))


    def make(config):
        return GPT(config)
''')


def run(cmd, cwd, env, timeout=900):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_in_fresh_venv_checks_a_model(tmp_path):
    from hypothesis import settings

    if settings.get_current_profile_name() != "nightly" and os.environ.get("GPT_PROPERTIES_WHEEL_TEST") != "1":
        pytest.skip("builds a wheel and a venv (~2 min): runs in the nightly profile or with GPT_PROPERTIES_WHEEL_TEST=1")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPT_PROPERTIES_SUBJECT", "CI")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(dist)],
                tmp_path, env)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("gpt_properties-*.whl"))
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env).returncode == 0
    pip = run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--ignore-installed", str(wheel)],
              tmp_path, env)
    assert pip.returncode == 0, pip.stderr[-3000:]

    work = tmp_path / "empty"
    work.mkdir()
    (work / "mymodel.py").write_text(MODEL)
    (work / "mybug.py").write_text(MODEL.replace("MASK_OFFSET = 0", "MASK_OFFSET = 1"))
    where = run([str(venv / "bin" / "python"), "-c", "import properties, properties.plugin; print(properties.__file__)"],
                work, env)
    assert str(venv) in where.stdout, f"properties imported from {where.stdout}{where.stderr}, not from the wheel"

    command = str(venv / "bin" / "gpt-properties")
    good = run([command, "check", "mymodel:make", "--profile", "dev", "--report", "report.md"], work, env)
    assert good.returncode == 0, good.stdout[-4000:] + good.stderr[-4000:]
    assert ": PASS" in good.stdout.splitlines()[0] and (work / "report.md").is_file()
    assert "test_causality::test_future_tokens_do_not_change_past_logits` | logits(x)" in good.stdout

    bad = run([command, "check", "mybug:make", "--profile", "dev", "-x"], work, env)
    assert bad.returncode == 1, bad.stdout[-4000:] + bad.stderr[-4000:]
    assert ": FAIL" in bad.stdout.splitlines()[0]
    failed = [line for line in bad.stdout.splitlines() if "**failed**" in line]
    assert failed and ("test_causality" in failed[0] or "test_prefix_consistency" in failed[0]), bad.stdout
    assert "reproduce: `python -m pytest --pyargs properties." in bad.stdout and "rebuild: subject.build(" in bad.stdout
