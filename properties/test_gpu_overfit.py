"""GPU smoke: the overfit command converges on CUDA. Gradient flow is broken if one fixed batch cannot be
driven below the configured loss; the wall time is printed (speed is a benchmark, never a test assertion)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from properties.gpu import device

pytestmark = [pytest.mark.gpu, pytest.mark.gpt_internal]
ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def test_overfit_converges_on_cuda(tmp_path):
    """python -m gpt.overfit on CUDA exits 0 with final loss <= max_final_loss, on the corpus if present."""
    device()
    for module in ("omegaconf", "matplotlib", "tqdm"):
        pytest.importorskip(module, reason=f"gpt.overfit needs {module}: install the `train` extra "
                                           "(pip install 'gpt-properties[train]')")
    args = [sys.executable, "-m", "gpt.overfit", "--config", str(ROOT / "configs" / "tiny_shakespeare.yaml"),
            "device=cuda", f"out_dir={tmp_path}"]
    if not CORPUS.exists():
        args.append("data.synthetic=true")
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    print(f"GPU overfit: final loss {metrics['final_loss']:.4f} in {metrics['wall_time_s']:.1f} s "
          f"({metrics['tokens_per_s']:.0f} tokens/s)")
    assert metrics["final_loss"] <= metrics["max_final_loss"]
    assert (tmp_path / "loss_curve.png").stat().st_size > 0
