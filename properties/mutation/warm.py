"""Mutant runs forked from a warm process: torch, Hypothesis and pytest are imported once, not per mutant.

A fresh interpreter spends 4-6 s importing torch and the test stack before the first property runs; for a
mutant that the first property kills, that is most of its time to kill. Here a multiprocessing forkserver
imports the heavy third-party modules once (``PRELOAD``), and each mutant's pytest run is a fork of it.
The fork drops every module of this project from ``sys.modules`` and puts the mutant's copy first on
``sys.path``, so ``gpt``, ``properties`` and ``strategies`` are imported fresh from the copy, exactly as
in a new interpreter; the mutation plugin still refuses to run unless ``gpt`` comes from the copy. What is
preloaded is third-party code only (the correctness condition: a preloaded module holding a reference to
the unmutated ``gpt`` would shadow the mutant), which ``test_mutation_catalog`` checks.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path
from typing import Optional

# third-party modules only (a missing one is skipped); the transformers model modules are what the HF
# differential imports lazily, at about a second each
PRELOAD = ["torch", "hypothesis", "hypothesis.extra.pytestplugin", "pytest", "xdist", "safetensors", "numpy",
           "transformers", "transformers.models.gpt2.modeling_gpt2",
           "transformers.models.gpt_neox.modeling_gpt_neox", "transformers.models.llama.modeling_llama"]
PROJECT_PACKAGES = ("gpt", "properties", "strategies", "examples", "conftest")

_context: Optional[mp.context.BaseContext] = None


def context() -> mp.context.BaseContext:
    """The forkserver context, started on first use with ``PRELOAD`` imported in the server."""
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def available() -> bool:
    return "forkserver" in mp.get_all_start_methods()


def _child(copy: str, argv: list, env: dict, log_path: str, threads: int) -> None:
    """Body of one forked pytest run: a fresh view of the project from ``copy``, output to ``log_path``."""
    os.setsid()  # its own process group: a timeout kills the run and anything it started (DDP ranks)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(copy)
    os.environ.clear()
    os.environ.update(env)
    for name in list(sys.modules):
        if name.partition(".")[0] in PROJECT_PACKAGES:
            del sys.modules[name]
    sys.path[:] = [copy] + [p for p in sys.path if p not in ("", ".") and not _inside_project(p)]
    import torch

    torch.set_num_threads(threads)  # OMP_NUM_THREADS was read when the server imported torch
    import pytest

    code = pytest.main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def _inside_project(path: str) -> bool:
    """Entries of the server's sys.path that would resolve the project's packages outside the copy."""
    p = Path(path or ".").resolve()
    return any((p / pkg).is_dir() for pkg in ("gpt", "properties", "strategies"))


def run(copy: Path, argv: list, env: dict, log_path: Path, threads: int, timeout: float) -> tuple[Optional[int], bool]:
    """(exit code, timed out) of ``pytest argv`` run in ``copy`` in a fork of the warm server."""
    proc = context().Process(target=_child, args=(str(copy), argv, env, str(log_path), threads), daemon=False)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.join()
        return proc.exitcode, True
    return proc.exitcode, False
