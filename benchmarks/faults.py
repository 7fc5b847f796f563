"""The fault-injection and bad-input report: runs the tests marked `reliability` and
prints one table row per case, "<fault or bad input> -> <what happens>", with its outcome.

    python benchmarks/faults.py [--out bench-out/faults.json]

The rows are the tests' own docstrings, so the table says exactly what the tests check.
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def docstrings() -> dict[str, str]:
    docs = {}
    for path in (REPO / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                docs[f"{path.stem}::{node.name}"] = (ast.get_docstring(node) or node.name).replace("\n", " ")
    return docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "reliability", f"--junitxml={xml}", "-p",
                        "no:cacheprovider"], cwd=REPO, stdout=subprocess.DEVNULL)
        cases = ET.parse(xml).getroot().iter("testcase")
        rows, docs = [], docstrings()
        for case in cases:
            module = case.get("classname").split(".")[-1]
            name = case.get("name")
            base = name.split("[")[0]
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
            doc = docs.get(f"{module}::{base}", base)
            case_id = name[len(base):].strip("[]")
            rows.append({"test": f"{module}::{name}", "case": doc, "parameters": case_id, "outcome": outcome,
                         "seconds": float(case.get("time", 0))})
    print("| fault or bad input -> what happens | parameters | outcome |")
    print("|---|---|---|")
    seen = set()
    for r in rows:
        fault, _, happens = r["case"].partition(" -> ")
        key = (r["case"], r["parameters"])
        if key in seen:
            continue
        seen.add(key)
        params = r["parameters"].replace("|", "\\|")
        print(f"| {fault} -> {happens or '(see test)'} | {params} | {r['outcome']} |")
    passed = sum(r["outcome"] == "passed" for r in rows)
    print(f"\n{passed} passed, {len(rows) - passed} failed")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cases": rows, "passed": passed, "total": len(rows)}, indent=2))


if __name__ == "__main__":
    main()
