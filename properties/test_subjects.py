"""The --subject forms load_subject accepts (plain tests; they do not depend on the subject under test)."""
import pytest
import torch

from properties.subject import BUILTIN, GPTSubject, ModuleSubject, Subject, load_subject

pytestmark = pytest.mark.repo

_instance = GPTSubject(("math",), "an instance")


def _zero_arg():
    return GPTSubject(("sdpa",), "from a function")


def _not_a_subject():
    return torch.nn.Linear(2, 2)


def test_every_builtin_loads():
    for name in BUILTIN:
        subject = load_subject(name)
        assert isinstance(subject, Subject) and subject.space.backends


def test_spec_forms(monkeypatch):
    here = "properties.test_subjects"
    assert load_subject(f"{here}:_instance") is _instance
    assert load_subject(f"{here}:_zero_arg").name == "from a function"
    assert isinstance(load_subject("examples.own_model:OwnSubject"), Subject)
    made = load_subject("examples.own_model:make")
    assert isinstance(made, ModuleSubject) and made.capabilities == frozenset()
    assert isinstance(load_subject("examples.own_model:OwnGPT"), ModuleSubject)  # an nn.Module class
    monkeypatch.setenv("GPT_PROPERTIES_SUBJECT", "gpt-math")
    assert load_subject().name == "gpt-math"


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="unknown subject"):
        load_subject("no-such-subject")
    with pytest.raises(TypeError, match="not a Subject"):
        load_subject("properties.test_subjects:_not_a_subject")
