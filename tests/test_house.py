"""The code base's own rules, checked on its source: the layering of the packages, files of the models package
short enough to read in one sitting, functions short enough to see whole."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vqvae2", "pipelines", "eval")


def _sources(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imports_run_one_way():
    """pipelines -> eval -> vqvae2: the models never import the stages or the evaluation, eval never the stages."""
    for package, forbidden in (("vqvae2", {"pipelines", "eval"}), ("eval", {"pipelines"})):
        for path in _sources(package):
            assert not _imports(ast.parse(path.read_text())) & forbidden, path


def test_no_file_of_the_models_package_is_over_350_lines():
    long = {str(p.relative_to(ROOT)): n for p in _sources("vqvae2") if (n := p.read_text().count("\n")) > 350}
    assert not long


def test_no_function_is_over_80_lines():
    long = []
    for package in PACKAGES:
        for path in _sources(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long


def test_one_implementation_of_a_position_step():
    """The samplers' per-position arithmetic (the h stream's gated units, attention over the cache) is written once."""
    sampling = ROOT / "vqvae2" / "sampling"
    defining = [p.name for p in sampling.glob("*.py") if "def positions(" in p.read_text() or "def attend(" in p.read_text()]
    assert defining == ["rows.py"]
    assert sum("torch.addmm(hb1" in p.read_text() for p in sampling.glob("*.py")) == 1
