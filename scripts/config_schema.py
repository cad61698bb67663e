"""Write schema/stack-config.schema.json: the JSON Schema of a stack's config, for editors.

Generated from the pydantic models in components/config/; tests/unit/test_schema.py fails when it is stale.
docs/configuration.md is written from the same schema (scripts/config_docs.py).
Run: venv/bin/python -m scripts.config_schema
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.config import StackConfig

SCHEMA = Path(__file__).resolve().parent.parent / "schema" / "stack-config.schema.json"


def stack_schema() -> dict[str, Any]:
    """The JSON Schema of the `homelab-backup:*` keys, as the models define them."""
    schema = StackConfig.model_json_schema(by_alias=True)
    schema["description"] = "homelab-backup: the `homelab-backup:*` keys of Pulumi.yaml and Pulumi.<stack>.yaml"
    return schema


def render_schema() -> str:
    return json.dumps(stack_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SCHEMA.parent.mkdir(exist_ok=True)
    SCHEMA.write_text(render_schema())
    print(f"wrote {SCHEMA}")
