"""The README and docs/ say what the code does: every Python snippet runs; the command-line walk-through runs
as written, offline, in a scratch directory; every other shell command parses with the real CLI, names
scripts, profiles and configs that exist, and is run by a named test (or by CI itself); every relative link
resolves inside the repository, and no page links outside it or speaks of the project's own bookkeeping."""
import importlib.util
import os
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


def _coar_only(code: str) -> bool:
    commands = list(_commands(code))
    return bool(commands) and all(shlex.split(c)[0] == "coar" for c in commands)


CLI_WALKTHROUGHS = [p for p in _blocks("bash") if _coar_only(p.values[0])]


@pytest.mark.parametrize("code", CLI_WALKTHROUGHS)
def test_cli_walkthrough_runs_as_written(code, tmp_path):
    """The chain of `coar` commands, verbatim, in a scratch directory on Fashion-MNIST: every file a step writes
    exists, and the evaluation it ends with shows COAR predicting the ablations' outcomes."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    outs = [w[i + 1] for w in map(shlex.split, _commands(code)) for i in range(len(w) - 1) if w[i] == "--out"]
    assert outs and all((tmp_path / out).exists() for out in outs), [o for o in outs if not (tmp_path / o).exists()]
    if "results/corr.csv" in outs:
        import pandas as pd

        means = pd.read_csv(tmp_path / "results/corr.csv").groupby("method").correlation.mean()
        assert means["coar-ols"] >= 0.5, means


def test_there_is_a_cli_walkthrough():
    assert len(CLI_WALKTHROUGHS) >= 1


# Shell commands that cannot run inside a test as written (a whole preset, a cluster, a remote, a GPU): the
# tests that run each of them, at a smaller scale where they must. A regex over the command -> test ids.
RUN_BY = {
    r"^bash install\.sh$": [".ci/run"],
    r"^\.venv/bin/python -m pytest -q$": [".ci/run"],
    r"snakemake --cores all figures/fig2\.pdf$": ["tests/test_workflow.py::test_ci_preset_end_to_end"],
    r"^export SBATCH_ACCOUNT": ["tests/test_slurm.py::test_slurm_profile_runs_fig2_through_sbatch"],
    r"^snakemake --workflow-profile workflow/profiles/slurm": [
        "tests/test_slurm.py::test_slurm_profile_runs_fig2_through_sbatch"],
    # docs/sharing.md's DVC round trip, command by command (build and push, clone and pull; paper preset alike)
    r"^(dvc repro default|git add dvc\.lock|git commit -m \"(paper )?results\"|dvc push( paper)?|git clone <repo>"
    r"|cd <repo>|dvc pull (default|paper)|dvc commit paper)$": ["tests/test_dvc.py::test_dvc_round_trip"],
    r"^bash workflow/dvc-sync\.sh": ["tests/test_dvc.py::test_dvc_round_trip"],
    r"^snakemake -n$": ["tests/test_dvc.py::test_dvc_round_trip"],
    r"^bash benchmarks/gpu\.sh": ["tests/test_gpu_script.py::test_gpu_script_tiny_runs_every_section",
                                   "tests/test_cuda.py"],
    r"^python benchmarks/efficiency\.py": ["tests/test_workflow.py::test_ci_preset_end_to_end"],
    r"^python benchmarks/wheelhouse\.py wheelhouse$|^python -m pip install --no-index --no-deps wheelhouse": [
        "tests/test_wheelhouse.py::test_a_wheelhouse_is_downloaded_here_and_installs_without_an_index"],
    r"^snakemake --cores 1 figures/efficiency\.pdf": ["tests/test_workflow.py::test_ci_preset_end_to_end"],
    r"^snakemake --cores 1 fetch --configfile=config/paper\.yaml$": [
        "tests/test_rehearsal.py::test_every_download_went_through_the_real_fetch_code_into_empty_caches"],
    r"^coar preflight --configfile config/paper\.yaml --login-node --profile workflow/profiles/slurm$": [
        "tests/test_preflight.py::test_login_node_defers_the_gpu_check_to_the_partition",
        "tests/test_rehearsal.py::test_every_download_went_through_the_real_fetch_code_into_empty_caches"],
    r"^python workflow/rehearsal/rehearse\.py": [
        "tests/test_rehearsal.py::test_every_rule_of_the_paper_preset_runs_and_every_figure_is_built"],
}


# Study overlays whose runs take minutes to hours of sampling: a test plans each (every job, its inputs and
# params, on a dry run); the measured runs are in docs/benchmarks.md with their commands.
PLANNED_BY = {
    r"--configfile config/config\.yaml config/efficiency-edit\.yaml$": [
        "tests/test_workflow.py::test_efficiency_edit_study_plans_on_the_default_preset"],
    r"--configfile config/config\.yaml config/mask-designs\.yaml$": [
        "tests/test_workflow.py::test_mask_design_study_plans_on_the_default_preset"],
}


def _test_exists(node: str) -> bool:
    path, _, name = node.partition("::")
    file = ROOT / path
    return file.is_file() and (not name or re.search(rf"^def {re.escape(name)}\(", file.read_text(), re.M))


@pytest.mark.parametrize("code", [p for p in _blocks("bash") if not _coar_only(p.values[0])])
def test_every_other_shell_command_is_run_or_planned_by_a_named_test(code):
    for cmd in _commands(code):
        nodes = [n for table in (RUN_BY, PLANNED_BY) for pattern, ns in table.items() if re.search(pattern, cmd)
                 for n in ns]
        assert nodes, f"`{cmd}` is run by no test: run it in one and name the test in RUN_BY"
        missing = [n for n in nodes if not _test_exists(n)]
        assert not missing, f"`{cmd}`: {missing} do not exist"


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
