"""The import rules of ../shared/DESIGN.md ("Who may import whom"), enforced with ast."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)
# folder -> (package it is imported as)
PACKAGES = {
    "core": "attnlab.core",
    "domains": "attnlab.domains",
    "apps": "attnlab.apps",
    "attnlab": "attnlab",
}


def _imports(path: Path, package: str):
    """Absolute dotted names imported by a file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                yield from ([mod] if node.module else [f"{mod}.{a.name}" for a in node.names])
            else:
                yield node.module


def _files():
    for folder, pkg in PACKAGES.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            rel = f.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mod = ".".join([pkg, *parts])
            package = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
            yield folder, f, mod, package


def _allowed(folder: str, mod: str, name: str) -> bool:
    top = name.split(".")[0]
    if folder == "core":
        return (
            top in STDLIB
            or top in {"torch", "numpy", "safetensors", "tqdm"}
            or name.startswith("attnlab.core")
        )
    if name.startswith(("attnlab.cli", "attnlab.bench")) and folder != "attnlab":
        return False
    if folder == "domains":
        own = ".".join(mod.split(".")[:3])  # attnlab.domains.<x>
        if name.startswith("attnlab.domains") and not name.startswith(own):
            return name == "attnlab.domains"
        return not (top == "gradio" or name.startswith("attnlab.apps"))
    if folder == "apps" and top in {"matplotlib", "PIL"}:
        return mod.startswith("attnlab.apps.views")
    if folder in ("apps",):
        return True
    # attnlab/: cli and bench import everything; the package's __init__ only the core
    if top in {"matplotlib", "PIL", "gradio"} or name.startswith("attnlab.apps"):
        return mod.startswith(("attnlab.cli", "attnlab.bench", "attnlab.__main__"))
    return True


def test_import_rules():
    bad = [
        f"{f.relative_to(ROOT)} imports {name}"
        for folder, f, mod, package in _files()
        for name in _imports(f, package)
        if name and not _allowed(folder, mod, name)
    ]
    assert not bad, "import rules broken:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "folder,name,ok",
    [
        ("core", "gradio", False),
        ("core", "attnlab.apps.views", False),
        ("core", "torch.nn", True),
        ("domains", "attnlab.apps", False),
        ("apps", "attnlab.cli", False),
        ("core", "matplotlib.pyplot", False),
    ],
)
def test_rules_reject_what_they_should(folder, name, ok):
    assert _allowed(folder, f"attnlab.{folder}.x", name) is ok
