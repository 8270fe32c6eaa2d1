"""The commands the documentation shows exist as written: every ``lgp-edge`` command in a shell block of
README.md, docs/, benchmarks/ and scripts/ parses with the CLI's own parser, every inline one names real
subcommands and options, and every ``python benchmarks/NAME.py`` flag is one the script accepts."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
from helpers import load_benchmark

from lgp_edge.cli import build_parser, subparsers

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md"))]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
BENCHMARK_SOURCES = sorted((ROOT / "benchmarks").glob("*.py"))
SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell|console)?\n(.*?)```", re.S)
# a command starts a line or follows a shell separator; it ends at a comment, a pipe or a separator
LGP_COMMAND = re.compile(r"(?:^|&&|;|\||\$\()\s*(lgp-edge(?:\s[^#|;&)]*)?)")
TORCHRUN_MODULE = re.compile(r"(?:^|\s)-m lgp_edge(?:\.cli)?(?=\s|$)")
ASSIGNMENT = re.compile(r'^([A-Z_][A-Z0-9_]*)="([^"]*)"$')
REDIRECT = re.compile(r"\s[12]?>>?\s*\S+")
# what an inline mention may leave out: it names a command and some of its options, not all it needs
PARTIAL = ("the following arguments are required", "is required", "expected one argument")


def _parse(argv: list[str]) -> str | None:
    """The parser's error line for ``argv``, None when it parses (``--help`` and ``--version`` included)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            return err.getvalue().strip() or f"exit {e.code}"
    return None


def _unknown_options(argv: list[str]) -> list[str]:
    """The ``--opt`` tokens of ``argv`` that the parser in force where each stands (the top level, then each
    subcommand as its name is met) does not take, by name or, where that parser allows abbreviations, by a
    unique prefix. argparse reports missing required arguments before unknown options, so a misspelt flag of
    a command that needs arguments would otherwise pass as a partial mention."""
    parser: argparse.ArgumentParser = build_parser()
    unknown = []
    for token in argv:
        if token == "--":
            break
        children = subparsers(parser)
        if token in children:
            parser = children[token]
            continue
        if not token.startswith("--"):
            continue
        name = token.split("=", 1)[0]
        options = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
        if name in options:
            continue
        if parser.allow_abbrev and len([o for o in options if o.startswith(name)]) == 1:
            continue
        unknown.append(name)
    return unknown


def _block_commands(block: str) -> list[str]:
    """The ``lgp-edge`` command lines of one shell block, continuations joined, ``$NAME`` expanded from the
    block's own ``NAME="..."`` assignments; lines with a placeholder (``...``) are left out."""
    text = re.sub(r"\\\n\s*", " ", block)
    env: dict[str, str] = {}
    out = []
    for line in text.splitlines():
        line = line.strip().removeprefix("$ ")
        line = TORCHRUN_MODULE.sub(" ; lgp-edge", line)  # torchrun ... -m lgp_edge.cli ARGS runs lgp-edge ARGS
        if m := ASSIGNMENT.match(line):
            env[m.group(1)] = m.group(2)
            continue
        for m in LGP_COMMAND.finditer(line):
            command = re.sub(r"\$([A-Z_][A-Z0-9_]*)", lambda v: env.get(v.group(1), v.group(0)), m.group(1))
            if "..." not in command and "…" not in command:
                out.append(REDIRECT.sub("", command).strip())
    return out


def _documented() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(where, command) pairs: whole commands (shell blocks, scripts) and inline mentions."""
    whole, inline = [], []
    for path in DOCS:
        text = path.read_text()
        for block in SHELL_BLOCK.findall(text):
            whole += [(path.name, c) for c in _block_commands(block)]
        inline += [(path.name, m.strip()) for m in re.findall(r"`(lgp-edge(?:\s[^`]*)?)`", text)]
    for path in SCRIPTS:
        whole += [(path.name, c) for c in _block_commands(path.read_text())]
    return whole, inline


WHOLE, INLINE = _documented()


def test_the_documentation_shows_commands() -> None:
    # the extraction itself works: the README's pipeline, the quickstart's flagship command, inline mentions
    assert len(WHOLE) >= 40 and len(INLINE) >= 30
    assert ("quickstart.sh", "lgp-edge export --target jetson-nano --out out/jetson-nano --force") in WHOLE
    assert any(c.startswith("lgp-edge pool distill --ancestry lgp_vit_fmnist") for _, c in WHOLE)  # $A expanded
    assert sum(w == "DISTRIBUTED.md" and "--save-every 500" in c for w, c in WHOLE) == 4  # under torchrun


def test_placeholders_and_unknown_flags_are_caught() -> None:
    assert _parse(["pool", "info", "--no-such-flag"]) is not None
    assert _parse(["export", "--target", "jetson-nano", "--out", "x"]) is None
    # a misspelt flag of a command with required arguments: argparse names the missing ones first
    assert "are required" in _parse(["pool", "build", "--no-such-flag"])
    assert _unknown_options(["pool", "build", "--no-such-flag", "--widths=ti"]) == ["--no-such-flag"]
    assert _unknown_options(["export", "--targte", "jetson-nano", "--formt", "onnx"]) == ["--targte", "--formt"]
    assert _unknown_options(["-v", "export", "--target", "cpu", "--switch", "-q"]) == ["--switch"]  # no prefixes
    assert _unknown_options(["select", "--target", "cpu", "--out", "x"]) == ["--out"]  # export's, not select's
    assert _block_commands('A="--data d"\nlgp-edge pool eval p $A  # c\nlgp-edge select ...\n') == [
        "lgp-edge pool eval p --data d"]


@pytest.mark.parametrize("where,command", WHOLE, ids=[f"{w}:{c[9:60]}" for w, c in WHOLE])
def test_documented_command_parses(where: str, command: str) -> None:
    assert _parse(shlex.split(command)[1:]) is None, f"{where}: {command}"


@pytest.mark.parametrize("where,command", INLINE, ids=[f"{w}:{c[9:60]}" for w, c in INLINE])
def test_inline_mention_names_real_options(where: str, command: str) -> None:
    argv = [a for a in shlex.split(REDIRECT.sub("", command.split("|")[0]))[1:]
            if not (a.isupper() and len(a) > 1) and "..." not in a]  # FILE, NAME: placeholders
    error = _parse(argv)
    assert error is None or any(p in error for p in PARTIAL), f"{where}: `{command}`: {error}"
    assert not _unknown_options(argv), f"{where}: `{command}`: unknown options {_unknown_options(argv)}"


def test_benchmark_flags_in_the_documentation_exist() -> None:
    """Each flag written after ``python benchmarks/NAME.py`` (docs, benchmark docstrings) is in its --help."""
    uses: dict[str, set[str]] = {}
    for path in DOCS + BENCHMARK_SOURCES:
        text = re.sub(r"\\\n\s*", " ", path.read_text())
        for m in re.finditer(r"python3? (benchmarks/[a-z_0-9]+\.py)([^`\n#|;&)]*)", text):
            uses.setdefault(m.group(1), set()).update(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", m.group(2)))
    assert len(uses) >= 10

    def help_text(script: str) -> str:
        """The script's ``--help``, from its own parser in this process (its imports are this test's)."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
            load_benchmark(Path(script).stem, f"help_{Path(script).stem}", register=True).main(["--help"])
        assert e.value.code == 0, f"{script} --help exited {e.value.code}"
        return out.getvalue()

    helps = {script: help_text(script) for script in uses}
    missing = {s: sorted(f for f in flags if not re.search(re.escape(f) + r"(?![\w-])", helps[s]))
               for s, flags in uses.items()}
    assert not {s: m for s, m in missing.items() if m}
