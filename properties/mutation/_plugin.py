"""pytest plugin loaded into every mutation run (``-p properties.mutation._plugin``).

- Sanity: refuses to run (usage error) unless ``gpt`` is imported from the copy named by
  $GPT_MUTATION_ROOT, so an installed or editable ``gpt`` can never shadow the mutated one.
- Speed: with $GPT_MUTATION_NO_SHRINK=1 the loaded Hypothesis profile runs without its shrink and explain
  phases and without an example database. The same examples are generated, so what fails is unchanged;
  only the time spent minimising the failing example is saved.
"""
from __future__ import annotations

import os

import pytest


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    root = os.environ.get("GPT_MUTATION_ROOT")
    if root:
        import gpt

        where = os.path.realpath(gpt.__file__)
        if not where.startswith(os.path.realpath(root) + os.sep):
            raise pytest.UsageError(f"gpt was imported from {where}, not from the mutation copy {root}")
    if os.environ.get("GPT_MUTATION_NO_SHRINK") == "1":
        from hypothesis import Phase, settings

        name = f"{settings.get_current_profile_name()}-no-shrink"
        phases = tuple(p for p in settings.default.phases if p not in (Phase.shrink, Phase.explain))
        settings.register_profile(name, phases=phases, database=None)
        settings.load_profile(name)


def pytest_report_header(config):
    import gpt

    return [f"mutation run: gpt imported from {os.path.dirname(os.path.realpath(gpt.__file__))}"]
