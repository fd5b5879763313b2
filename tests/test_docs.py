"""The README and docs/ say what the code does: links resolve, the README stays a guide, and its
tables (``run`` flags, subcommands, configuration keys) match the parsers and the dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from vae_search import cli
from vae_search.config.schema import StudyConfig

ROOT = Path(REPO)
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 350  # the hard limit (aim: about 300)

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"`[^`]*`")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (``#`` in a bash block is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in _prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def links(path: Path) -> list[str]:
    """Every link target in the file's prose (inline code is not a link)."""
    targets = []
    for line in _prose_lines(path.read_text()):
        line = CODE_SPAN.sub("code", line)
        targets += [target for _, target in LINK.findall(line)]
    return targets


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_point_to_existing_files_and_headings(path):
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{path.name}: " + "; ".join(broken)


def test_the_docs_exist_and_the_readme_links_each_one():
    names = {p.name for p in DOCS}
    assert {"findings.md", "science.md", "performance.md", "deployment.md",
            "architecture.md"} <= names
    readme_links = {t.partition("#")[0] for t in links(README)}
    assert {f"docs/{name}" for name in names} <= readme_links


def test_every_figure_in_docs_is_shown_somewhere():
    shown = {(p.parent / t.partition("#")[0]).resolve()
             for p in (README, *DOCS) for t in links(p)}
    for png in (ROOT / "docs").glob("*.png"):
        assert png.resolve() in shown, f"{png.name} is linked from no page"


def test_readme_is_a_guide_not_a_notebook():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (limit {MAX_README_LINES})"


# -- the README's tables against the code -------------------------------------------------------


def cells(line: str) -> list[str]:
    """A table row's cells; ``\\|`` (also needed inside code spans) stays inside a cell."""
    line = line.strip().strip("|")
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_every_table_row_has_its_headers_cells(path):
    """An unescaped ``|`` (e.g. in ``p(x|z)``) splits a cell on GitHub and shifts the row."""
    lines = _prose_lines(path.read_text())
    bad, width = [], None
    for line in lines:
        if not line.startswith("|"):
            width = None
        elif width is None:
            width = len(cells(line))
        elif len(cells(line)) != width:
            bad.append(line[:60])
    assert not bad, f"{path.name}: rows with a different number of cells: {bad}"


def table(path: Path, header: list[str]) -> list[list[str]]:
    """The body rows of the first table in ``path`` whose header row is ``header``."""
    lines = _prose_lines(path.read_text())
    for i, line in enumerate(lines):
        if line.startswith("|") and cells(line) == header:
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            return rows
    raise AssertionError(f"{path.name}: no table with header {header}")


def code_spans(cell: str) -> list[str]:
    return [span.strip("`") for span in CODE_SPAN.findall(cell)]


def _visible_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Long option -> action, without --help and hidden (internal) options."""
    return {
        option: action
        for action in parser._actions
        if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        for option in action.option_strings if option.startswith("--")
    }


@pytest.fixture
def run_parser(monkeypatch) -> argparse.ArgumentParser:
    # Defaults as a fresh shell sees them (the environment variables would override them).
    monkeypatch.delenv(cli.STORAGE_ENV, raising=False)
    monkeypatch.delenv(cli.ARTIFACTS_ENV, raising=False)
    return cli.build_run_parser()


def _readme_run_flags() -> dict[str, str]:
    """Flag -> its default cell, from the README's ``run`` flag table."""
    flags: dict[str, str] = {}
    for flag_cell, _meaning, default in table(README, ["flag", "meaning", "default"]):
        for flag in re.findall(r"--[a-z][a-z0-9-]*", flag_cell):
            assert flag not in flags, f"{flag} is listed twice"
            flags[flag] = default
    return flags


def test_run_flag_table_lists_exactly_the_parsers_flags(run_parser):
    assert set(_readme_run_flags()) == set(_visible_options(run_parser))


def test_run_flag_table_defaults_match_the_parser(run_parser):
    """A default cell states the literal default in its first code span (environment variables
    and other flags aside); ``off`` for a switch, ``none`` for an empty list, and no literal
    where the parser's default is None (the value then comes from the config or TensorFlow)."""
    options = _visible_options(run_parser)
    for flag, cell in _readme_run_flags().items():
        default = options[flag].default
        literals = [s for s in code_spans(cell) if not s.startswith(("$", "-"))]
        if default is False:
            assert cell == "off", (flag, cell)
        elif default == []:
            assert cell == "none", (flag, cell)
        elif default is None:
            assert not literals, f"{flag}: README states {literals[0]!r}, the parser None"
        else:
            assert literals, f"{flag}: README states no default, the parser {default!r}"
            assert literals[0] == str(default), f"{flag}: README {literals[0]!r}, parser " \
                f"{default!r}"


def test_readme_lists_exactly_the_subcommands():
    rows = table(README, ["command", "what it gives"])
    listed = [re.fullmatch(r"`vae-search ([a-z-]+)`", row[0]) for row in rows]
    assert all(listed), [row[0] for row in rows]
    assert [m.group(1) for m in listed if m] == list(cli.COMMANDS)


def _config_fields(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> default value, for every leaf field of the configuration."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_config_fields(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


def test_configuration_table_matches_the_dataclasses():
    rows = table(README, ["key", "default", "meaning"])
    listed = {code_spans(row[0])[0]: row[1] for row in rows}
    assert len(listed) == len(rows), "a key is listed twice"
    fields = _config_fields(StudyConfig())
    assert set(listed) - set(fields) == set(), "keys in the README that the config lacks"
    assert set(fields) - set(listed) == set(), "config keys the README does not list"
    for key, cell in listed.items():
        default = fields[key]
        if default is None:
            assert cell == "absent", (key, cell)
            continue
        literal = code_spans(cell)
        assert literal, f"{key}: no default in the README"
        stated = tomllib.loads(f"v = {literal[0]}")["v"]  # written as the TOML would hold it
        assert stated == _plain(default) and type(stated) is type(_plain(default)), \
            f"{key}: README {literal[0]}, config {default!r}"


# -- the quick start ----------------------------------------------------------------------------


def _quick_start_commands() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_the_second_is_what_ci_runs():
    main_job, tests = _quick_start_commands()
    assert main_job == "pip install -e . && python -m vae_search.run --trials 200"
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert tests == ci[-1], "the README's test command and the last line of .ci/run differ"
    for script in ("install-test-deps", "check"):
        assert os.access(ROOT / "scripts" / script, os.X_OK), script
