"""Hypothesis profiles, the --subject option and the GPU marker group."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

_common = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
# dev: a quick local loop. ci: derandomised, so a red run is reproduced by rerunning it.
# nightly: 20x ci's examples, random, with the example database replaying past failures first.
settings.register_profile("dev", max_examples=8, **_common)
settings.register_profile("ci", max_examples=20, derandomize=True, **_common)
settings.register_profile("nightly", max_examples=400, **_common)
settings.register_profile("replay", max_examples=1, phases=[Phase.explicit, Phase.reuse], **_common)
settings.load_profile("ci" if os.environ.get("CI") else "dev")  # --hypothesis-profile overrides this


def pytest_addoption(parser):
    parser.addoption("--subject", default=None,
                     help="implementation under test: gpt, gpt-math, gpt-sdpa, hf-gpt2, hf-neox, hf-llama, "
                          "or package.module:factory (default: $GPT_PROPERTIES_SUBJECT or gpt)")


@pytest.fixture(scope="session")
def subject(request):
    from properties.subject import load_subject

    return load_subject(request.config.getoption("--subject"))


def pytest_report_header(config):
    spec = config.getoption("--subject") or os.environ.get("GPT_PROPERTIES_SUBJECT") or "gpt"
    return [f"gpt-properties subject: {spec}; hypothesis profile: {settings._current_profile}"]


def pytest_configure(config):
    # one GPU per xdist worker: worker gwN takes device N mod the GPU count, before any CUDA use
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and "CUDA_VISIBLE_DEVICES" not in os.environ:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.set_device(int(worker[2:]) % torch.cuda.device_count())
        except ImportError:
            pass


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; the gpu group runs with `pytest -m gpu` on a GPU host")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
