"""The README and docs/ say what the code does: every Python snippet runs, every `coar` command line parses
with the real CLI, every script a snippet runs exists, every relative link resolves inside the repository,
and no page links outside it or speaks of the project's own bookkeeping."""
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from coar.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str):
    for page in PAGES:
        for m in FENCE.finditer(page.read_text()):
            if m.group(1) == lang:
                line = page.read_text()[:m.start()].count("\n") + 1
                yield pytest.param(m.group(2), id=f"{page.relative_to(ROOT)}:{line}")


def _commands(block: str):
    """Shell commands of a snippet: comments dropped, continuations joined, `&&` chains split."""
    text = re.sub(r"\\\n\s*", " ", block)
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for cmd in re.split(r"&&|;", line):
            if cmd.strip():
                yield cmd.strip()


def test_every_page_has_snippets_and_the_readme_fits_a_front_page():
    assert len(list(_blocks("python"))) >= 1 and len(list(_blocks("bash"))) >= 5
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024


@pytest.mark.parametrize("code", list(_blocks("python")))
def test_python_snippet_runs(code, tmp_path):
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("code", list(_blocks("bash")))
def test_bash_snippet_names_real_commands_scripts_and_options(code):
    parser = build_parser()
    for cmd in _commands(code):
        words = shlex.split(cmd.replace("<", "").replace(">", ""))
        while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
            words = words[1:]
        if not words:
            continue
        prog = Path(words[0]).name
        if prog == "coar" and "..." not in words:
            try:
                parser.parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"`{cmd}` is not a valid coar command line")
        elif prog in ("python", "bash") and words[1:2] == ["-m"]:
            assert importlib.util.find_spec(words[2]) is not None, f"`{cmd}`: no module {words[2]}"
        elif prog in ("python", "bash"):
            script = next(w for w in words[1:] if not w.startswith("-"))
            assert (ROOT / script).is_file(), f"`{cmd}`: {script} does not exist"
        elif prog == "snakemake":
            profile = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--workflow-profile"]
            configs = [w.split("=", 1)[1] for w in words if w.startswith("--configfile=")]
            for path in profile + configs:
                assert (ROOT / path).exists(), f"`{cmd}`: {path} does not exist"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository_and_pages_speak_of_the_project(page):
    text = page.read_text()
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "#")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
        assert path.exists(), f"{page.name} links to a missing file: {target}"
    assert "../shared" not in text
    for pattern in (r"\bissue \d+", r"\bstop \d+", r"this machine"):
        assert not re.search(pattern, text, re.I), f"{page.name} speaks of {pattern!r}"
