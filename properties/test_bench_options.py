"""The benchmark's compile settings and its whole-step CUDA graph (``python -m gpt.bench``).

Tooling, not a model property: these check that ``--inductor`` and ``--graph-step`` measure the step they
claim to. Throughput itself is never asserted (it is reported by the command)."""
import pytest
import torch

from gpt import Config, GPT
from gpt.bench import parse_args, settings_from
from gpt.step_compile import captured, compile_options, parse_inductor, uses_cudagraphs

pytestmark = pytest.mark.gpt_internal


def test_inductor_settings_are_parsed_and_merged_over_the_mode():
    """--inductor KEY=VALUE: VALUE a Python literal; the mode's own settings kept unless overridden."""
    got = parse_inductor(["max_autotune=True", "triton.enable_persistent_tma_matmul=True",
                          "coordinate_descent_search_radius=2", "max_autotune_gemm_backends=ATEN,TRITON"])
    assert got == {"max_autotune": True, "triton.enable_persistent_tma_matmul": True,
                   "coordinate_descent_search_radius": 2, "max_autotune_gemm_backends": "ATEN,TRITON"}
    assert parse_inductor(None) == parse_inductor([]) == {}
    assert compile_options("default", None) == {"mode": None}
    assert compile_options("reduce-overhead", {}) == {"mode": "reduce-overhead"}
    assert compile_options("reduce-overhead", {"max_autotune": True}) == {
        "options": {"triton.cudagraphs": True, "max_autotune": True}}
    assert compile_options("max-autotune-no-cudagraphs", {"coordinate_descent_tuning": False}) == {
        "options": {"max_autotune": True, "coordinate_descent_tuning": False}}
    assert [uses_cudagraphs(m) for m in ("default", "max-autotune-no-cudagraphs", "reduce-overhead",
                                         "max-autotune")] == [False, False, True, True]
    assert uses_cudagraphs("default", {"triton.cudagraphs": True})
    assert not uses_cudagraphs("reduce-overhead", {"triton.cudagraphs": False})


@pytest.mark.parametrize("item", ["max_autotune", "no_such_setting=1", "=True"])
def test_unknown_or_malformed_inductor_setting_is_refused(item):
    with pytest.raises(SystemExit, match="--inductor takes KEY=VALUE"):
        parse_inductor([item])


@pytest.mark.parametrize("extra", [["--device", "cpu"], ["--device", "cuda", "--dtype", "float16"],
                                   ["--device", "cuda", "--compile-mode", "reduce-overhead"],
                                   ["--device", "cuda", "--warmup", "0"],
                                   ["--device", "cuda", "--inductor", "triton.cudagraphs=True"]])
def test_graph_step_refuses_what_it_cannot_capture(extra):
    if "cuda" in extra and not torch.cuda.is_available():
        pytest.skip("needs CUDA (the CUDA checks come after the device is resolved)")
    with pytest.raises(SystemExit, match="--graph-step needs a CUDA device"):
        settings_from(parse_args(["--graph-step", "--compile", *extra]))


@pytest.mark.gpu
def test_captured_step_replays_the_eager_step():
    """k replays of the captured step == k eager steps (forward, backward, capturable AdamW), bitwise:
    replay launches the recorded kernels on the same buffers, so every parameter and the loss match exactly.
    (The capture itself runs one step first, on a side stream; the eager model takes that step too.)"""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    dev = torch.device("cuda")
    config = Config(block_size=32, vocab_size=96, n_layer=2, n_head=2, n_embd=32)
    x, y = (torch.randint(0, 96, (2, 32), generator=torch.Generator().manual_seed(s)).to(dev) for s in (1, 2))
    models, steps = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = GPT(config).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True, capturable=True)

        def step(model=model, opt=opt):
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        models.append(model)
        steps.append(step)
    eager, replay = steps[0], captured(steps[1], dev)
    eager()  # the step captured() runs before recording
    for k in range(3):
        want, got = eager(), replay()
        assert torch.equal(want, got), (k, want.item(), got.item())
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.equal(a, b), name
