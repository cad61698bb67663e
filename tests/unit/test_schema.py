"""The committed JSON Schema (for editors) matches the config models."""

from scripts.config_schema import SCHEMA, render_schema


def test_committed_schema_is_current():
    assert SCHEMA.read_text() == render_schema(), "run: venv/bin/python -m scripts.config_schema"
