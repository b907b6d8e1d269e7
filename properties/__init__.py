"""gpt-properties: invariants every correct GPT implementation satisfies, checked with Hypothesis."""
