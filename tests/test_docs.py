"""The docs are tested: every Python example in them runs, and every hex dump is checked.

- Each ```python block of README.md and docs/**/*.md runs, in order, in one
  namespace per file, so a block can use what an earlier block defined. A
  block that defines ``test_*`` functions (a pytest file shown in a how-to)
  has them called right after it runs.
- Each docs/examples/*.py runs as a script and must exit 0.
- Hex dumps in ```text blocks (runs of two or more bytes like ``00 00 00 0c``)
  must appear in a ``bytes.fromhex("...")`` literal of a ```python block of the
  same page; those blocks compare the literals with what the code produces, so
  a diagram cannot drift from the code.
- The API reference names every public name of ``framework`` and
  ``framework.testing``.
- Relative links between pages point at files that exist, and their
  ``#anchors`` at headings that exist (GitHub's heading slugs).
- The command-line reference names every flag of every ``wirekit`` command,
  and the config reference (and the limits how-to) every key a config file
  accepts.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import hypothesis
import pytest

import framework
import framework.testing
from framework.cli.commands import _parser as cli_parser
from framework.cli.config import _TOP_KEYS as CONFIG_KEYS
from framework.core.limits import Limits
from framework.runtime.tls import TlsOptions

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))

# An opening or closing fence: indentation, the fence itself, the info string.
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
# Two or more hex bytes separated by single spaces: "00 00 00 0c".
HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{2}(?: [0-9a-f]{2})+(?![0-9A-Za-z])")
# Info strings that look like Python but would be skipped: say ```python instead.
NOT_QUITE_PYTHON = {"py", "python3", "pycon", "py3"}
SAVED_PROFILE = "wirekit-docs-saved"


class Block(NamedTuple):
    language: str
    line: int  # 1-based line of the first line of code
    source: str


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, dedented to their fence."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent = len(opening["indent"])
        fence = opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower()
        start = index
        body: list[str] = []
        while index < len(lines):
            closing = FENCE.match(lines[index])
            index += 1
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            raw = lines[index - 1]
            body.append(raw[indent:] if not raw[:indent].strip() else raw)
        else:
            pytest.fail(f"{relative(path)}:{start}: code block is never closed")
        found.append(Block(language, start + 1, "\n".join(body) + "\n"))
    return found


def python_blocks(path: Path) -> list[Block]:
    return [block for block in blocks(path) if block.language == "python"]


def run_tests_defined(namespace: dict[str, Any], before: dict[str, Any], where: str) -> None:
    """Call every ``test_*`` function a block defined (or redefined)."""
    for name, value in list(namespace.items()):
        if not name.startswith("test_") or not inspect.isfunction(value):
            continue
        if before.get(name) is value:
            continue
        required = [
            parameter
            for parameter in inspect.signature(value).parameters.values()
            if parameter.default is inspect.Parameter.empty
        ]
        assert not required, f"{where}: {name} needs arguments (fixtures are not supported)"
        value()


@pytest.mark.parametrize("path", PAGES, ids=relative)
def test_python_blocks_run(path: Path) -> None:
    code_blocks = python_blocks(path)
    if not code_blocks:
        pytest.skip("no python blocks")
    # A real module, so attrs, cattrs and typing can resolve names in it.
    name = "wirekit_docs_" + re.sub(r"\W", "_", relative(path))
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    # A page may show a conftest that loads a Hypothesis profile: restore ours after it.
    hypothesis.settings.register_profile(SAVED_PROFILE, parent=hypothesis.settings.default)
    try:
        namespace = module.__dict__
        for block in code_blocks:
            where = f"{relative(path)}:{block.line}"
            # Pad with blank lines so tracebacks give the line in the .md file.
            code = compile("\n" * (block.line - 1) + block.source, str(path), "exec")
            before = dict(namespace)
            exec(code, namespace)
            run_tests_defined(namespace, before, where)
    finally:
        del sys.modules[name]
        hypothesis.settings.load_profile(SAVED_PROFILE)


@pytest.mark.parametrize("path", PAGES, ids=relative)
def test_code_blocks_are_labelled(path: Path) -> None:
    for block in blocks(path):
        assert block.language, f"{relative(path)}:{block.line}: label the block (python, text...)"
        assert block.language not in NOT_QUITE_PYTHON, (
            f"{relative(path)}:{block.line}: use ```python so the block runs"
        )


def fromhex_literals(path: Path) -> list[str]:
    """The hex digits of every ``bytes.fromhex("...")`` literal in the page's Python."""
    found: list[str] = []
    for block in python_blocks(path):
        for node in ast.walk(ast.parse(block.source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "fromhex"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append("".join(node.args[0].value.split()).lower())
    return found


def contains_bytes(haystack: str, needle: str) -> bool:
    """Whether hex string ``needle`` occurs in ``haystack`` on a byte boundary."""
    start = haystack.find(needle)
    while start >= 0:
        if start % 2 == 0:
            return True
        start = haystack.find(needle, start + 1)
    return False


@pytest.mark.parametrize("path", PAGES, ids=relative)
def test_hex_dumps_match_the_code(path: Path) -> None:
    runs = [
        (block.line + offset, match.group())
        for block in blocks(path)
        if block.language == "text"
        for offset, line in enumerate(block.source.splitlines())
        for match in HEX_RUN.finditer(line)
    ]
    if not runs:
        pytest.skip("no hex dumps")
    literals = fromhex_literals(path)
    for line, run in runs:
        needle = run.replace(" ", "")
        assert any(contains_bytes(literal, needle) for literal in literals), (
            f"{relative(path)}:{line}: the hex {run!r} is in a diagram but in no "
            "bytes.fromhex(...) that a python block checks"
        )


@pytest.mark.parametrize("script", EXAMPLES, ids=relative)
def test_example_runs(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{relative(script)} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{relative(script)} printed nothing"


@pytest.mark.parametrize(
    ("module", "page"),
    [(framework, "reference/api.md"), (framework.testing, "reference/api.md")],
    ids=["framework", "framework.testing"],
)
def test_api_reference_names_every_public_name(module: types.ModuleType, page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    missing = [name for name in module.__all__ if not re.search(rf"`{name}[`(\[ ]", text)]
    assert not missing, f"docs/{page} does not describe {missing}"


# A Markdown link or image target: [text](target), outside code.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$")


def prose_lines(path: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines: list[str] = []
    fence: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        opening = FENCE.match(line)
        if opening is not None:
            if fence is None:
                fence = opening["fence"]
            elif opening["fence"][0] == fence[0] and len(opening["fence"]) >= len(fence):
                fence = None
            continue
        if fence is None:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in prose_lines(path):
        match = HEADING.match(line)
        if match is None:
            continue
        base = candidate = slug(match.group(1))
        number = 0
        while candidate in found:  # repeated headings get -1, -2, ...
            number += 1
            candidate = f"{base}-{number}"
        found.add(candidate)
    return found


@pytest.mark.parametrize("path", PAGES, ids=relative)
def test_relative_links_resolve(path: Path) -> None:
    for line in prose_lines(path):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            assert linked.exists(), f"{relative(path)}: link to a missing file: {target}"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), (
                    f"{relative(path)}: link to a missing heading: {target}"
                )


def cli_flags() -> dict[str, list[str]]:
    """Every option string of every wirekit command, by command."""
    parser = cli_parser()
    [commands] = [
        action
        for action in parser._actions  # argparse keeps its sub-parsers there
        if isinstance(action.choices, dict)
    ]
    flags = {
        "": [o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")]
    }
    for name, sub in commands.choices.items():
        flags[name] = [
            o for a in sub._actions for o in a.option_strings if o not in ("-h", "--help")
        ]
    return flags


def test_cli_reference_names_every_command_and_flag() -> None:
    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    missing = [
        f"{command} {flag}".strip()
        for command, flags in cli_flags().items()
        for flag in flags
        if not re.search(rf"`{re.escape(flag)}[` ]", text)
    ]
    missing += [command for command in cli_flags() if command and f"`wirekit {command}" not in text]
    assert not missing, f"docs/reference/cli.md does not describe {missing}"


@pytest.mark.parametrize("page", ["reference/config.md", "howto/limits.md"])
def test_config_pages_name_every_limit(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    keys = [field.name for field in attrs.fields(Limits)] + ["max_frame_size"]
    missing = [key for key in keys if f"`{key}`" not in text]
    assert not missing, f"docs/{page} does not describe {missing}"


def test_config_reference_names_every_key() -> None:
    text = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    keys = sorted(CONFIG_KEYS) + [field.name for field in attrs.fields(TlsOptions)]
    missing = [key for key in keys if f"`{key}`" not in text]
    assert not missing, f"docs/reference/config.md does not describe {missing}"


def test_readme_quick_start_is_two_commands() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    shell = [line for line in section.splitlines() if line.startswith("make")]
    assert shell == ["make demo", "make test"], f"README.md Quick start runs {shell}"
