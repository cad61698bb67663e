"""docs/configuration.md is what scripts/config_docs.py writes from the config models, and it shows every key."""

from components.config import HOST_KEYS, PROJECT_KEYS, SourceTarget, StackConfig
from scripts.config_docs import DOCS, REGENERATE, render_docs, undocumented_leaves


def test_committed_configuration_reference_is_current():
    assert DOCS.read_text() == render_docs(), (
        f"docs/configuration.md differs from what the config models give: run `{REGENERATE}` and commit it"
    )


def test_every_key_the_models_accept_is_in_the_reference():
    text = render_docs()
    missing = []

    def walk(model: type, prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{field.alias or name}"
            if f"| `{key}` |" not in text:
                missing.append(key)
            inner = _model_inside(field.annotation)
            if inner is not None and inner is not SourceTarget:  # a source is written as one string
                many = "list" in str(field.annotation)
                walk(inner, f"{key}[]." if many else f"{key}.")

    walk(StackConfig, "")
    assert not missing, f"keys missing from docs/configuration.md: {missing}"
    for top_key in PROJECT_KEYS + HOST_KEYS:
        assert f"### `{top_key}`" in text


def test_every_settable_key_has_an_example_or_a_default():
    assert undocumented_leaves() == [], "give these fields examples=[...] in components/config/"


def test_host_timezone_default_is_documented():
    # The default came from the code alone before (issue 20): the reference shows it, from the model.
    line = next(line for line in render_docs().splitlines() if line.startswith("| `host.timezone` |"))
    assert f"`{StackConfig.model_fields['host'].annotation.model_fields['timezone'].default}`" in line


def _model_inside(annotation: object) -> type | None:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (found := _model_inside(arg)) is not None:
            return found
    return None
