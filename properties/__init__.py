"""gpt-properties: invariants every correct GPT implementation satisfies, checked with Hypothesis."""

__version__ = "0.2.0"  # the single source: pyproject.toml reads it, CHANGELOG.md lists the changes
