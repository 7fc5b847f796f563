"""The README runs as written: its Python blocks, in order and in one namespace (as a reader would paste them),
against a tiny finished run at runs/demo; its test command is the one CI runs; and the docs pages and the
README's generated parts are what docs/generate.py makes from benchmarks/results/."""
import json
import re
import sys
from pathlib import Path

import pytest

from pipelines.cli import main

from conftest import TINY_PRIORS, folder_overrides, make_image_folder

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "docs"))
import generate


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.S | re.M)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A directory holding runs/demo: the demo preset shrunk to a tiny image folder, trained up to its priors."""
    root = tmp_path_factory.mktemp("readme")
    argv = ["run", "--preset", "demo", "--run-dir", str(root / "runs" / "demo"), "--until", "priors"]
    for o in [*folder_overrides(make_image_folder(root / "images", n_per_class=12)), *TINY_PRIORS]:
        argv += ["--set", o]
    assert main(argv) == 0
    return root


def test_the_readme_python_blocks_run(demo_dir, monkeypatch):
    python = blocks("python")
    assert len(python) >= 2, "the README's Python section lost its examples"
    monkeypatch.chdir(demo_dir)
    namespace = {"__name__": "__readme__"}
    for i, block in enumerate(python, 1):
        exec(compile(block, f"README.md, python block {i}", "exec"), namespace)
    assert len(list(demo_dir.glob("sample-*.png"))) == 16  # what the first block says it writes


def test_the_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line.strip() for block in blocks("bash") for line in block.splitlines() if "pytest" in line]
    assert commands, "the README shows no test command"
    for command in commands:
        assert command.split("  #")[0].strip() in ci, f"README's {command!r} is not a line of .ci/run"


def test_the_docs_are_generated_from_the_results():
    assert generate.main(["--check"]) == 0  # else: run `python docs/generate.py`


def test_the_generator_names_a_missing_key_and_an_unsourced_file():
    R = {"stage1": generate.Record({"mse": 0.0035}, "stage1.json")}
    with pytest.raises(SystemExit, match="no key 'msee'"):
        generate.render_template(R, "page", "{{ stage1.msee }}")
    with pytest.raises(SystemExit, match=r'source\("stage1"\)'):
        generate.render_template(R, "page", "MSE {{ stage1.mse | .4f }}")


def test_the_generator_renders_values_and_readme_parts():
    data = json.loads((generate.RESULTS / "stage1.json").read_text())
    R = {"stage1": generate.Record(data, "stage1.json")}
    text = "{{ stage1.mse | .5f }}; {{ source('stage1') }}"
    assert generate.render_template(R, "page", text).startswith(f"{data['mse']:.5f}; `benchmarks/results/stage1.json`")
    part = ("a <!-- generated: stage1.steps | , -->old<!-- /generated --> "
            "b <!-- generated: source('stage1') --><!-- /generated -->")
    assert f"-->{data['steps']:,}<!--" in generate.render_readme(R, part)


def test_every_link_and_picture_of_the_readme_and_docs_exists():
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which is missing"
