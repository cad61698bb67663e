"""The docs say what the code does: the README's first lines, the names and numbers the docs quote, and links."""

import dataclasses
import re
import textwrap
from pathlib import Path

import yaml

from components import kopia_node, openlist, render
from components.config import Dump

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def test_readme_starts_with_the_two_commands_for_a_fresh_machine():
    lines = README.read_text().splitlines()
    assert lines[2] == "```sh"
    assert lines[3].startswith("./scripts/setup.sh && ./scripts/demo.sh   # as root on a fresh Debian machine")
    assert lines[4].startswith("./scripts/test.sh                         # the tests:")
    assert lines[5] == "```"


def test_container_env_is_documented_in_the_architecture():
    # The e2e suite checks the same against the running containers (test_container_env_is_documented_...).
    text = (DOCS / "architecture.md").read_text()
    names = [*kopia_node.container_env("UTC"), *openlist.container_env("UTC", 5246)]
    assert [n for n in names if f"`{n}`" not in text] == []


def test_the_runbook_explains_the_start_scripts_failures():
    text = (DOCS / "operations.md").read_text()
    for phrase in ("invalid repository password", "only shelken@sakamoto creates it", "refusing to create"):
        assert phrase in text
    assert "kopia-start: FATAL" in text


def test_the_waiting_hosts_retry_is_the_start_scripts():
    """A host that may not create the repository tries again every `repository_wait_seconds` (issue 20: the docs
    gave 30 s twice and 'within a minute' once)."""
    wait = {f.name: f.default for f in dataclasses.fields(render.StartScriptParams)}["repository_wait_seconds"]
    readme = README.read_text()
    assert f"(next try in {wait}s)" in readme
    assert f"within {wait} s" in readme
    assert f"every {wait} s" in (DOCS / "architecture.md").read_text()
    for path in (README, *DOCS.glob("*.md")):
        assert "within a minute" not in path.read_text(), path


def _dumps_in(value: object) -> list[dict]:
    """Every `dumps` list's entries in a parsed YAML document."""
    if isinstance(value, dict):
        found = list(value.get("dumps", []))
        return found + [d for v in value.values() for d in _dumps_in(v)]
    if isinstance(value, list):
        return [d for v in value for d in _dumps_in(v)]
    return []


def test_the_database_dump_examples_are_valid_config_and_the_same_dump():
    """The README's worked example and operations.md's are `kopia.sources[].dumps` the program accepts (a secret
    reference for the password), and declare the same dump."""
    examples = {}
    for path, heading in (
        (README, "## A database in a source"),
        (DOCS / "operations.md", "### A PostgreSQL-backed compose app under `/backup/compose`"),
    ):
        section = path.read_text().split(heading + "\n", 1)[1]
        block = re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
        assert block is not None, f"{path.name}: no yaml block under {heading!r}"
        (dump,) = _dumps_in(yaml.safe_load(textwrap.dedent(block.group(1))))
        examples[path.name] = Dump.model_validate(dump)
    readme, runbook = examples["README.md"], examples["operations.md"]
    assert readme == runbook
    assert readme.postgres is not None  # and its password a secret reference: the model refuses a plain one
    assert readme.file_name in README.read_text()


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower-cased, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _markdown_files() -> list[Path]:
    return [README, ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]


def test_relative_links_point_at_files_and_headings_that_exist():
    broken = []
    for path in _markdown_files():
        text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{path.name}: {target}")
    assert broken == []
