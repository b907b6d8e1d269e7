"""Mutation testing of the property suite: ``python -m properties.mutation``.

Each catalogued mutant (``catalog.py``) is a realistic bug of ``gpt/``; the runner (``runner.py``)
applies it to an isolated copy of the project, runs the suite there and reports which property killed
it, as a markdown kill matrix and JSON. See ``python -m properties.mutation --help``.
"""
