"""A hash of the code a workflow step runs: its script and every fullspectrum module it imports, transitively.

Rules list it among their params, so editing that code re-runs the step and what depends on it (Snakemake's
params trigger), while edits anywhere else (tests, benchmarks, the README, modules the step does not import)
re-run nothing. Torch-free: the Snakefile computes it at parse time.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "fullspectrum"


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of a `fullspectrum...` module under `root` (the folder holding the package), if it is one."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, root: Path) -> list[str]:
    """Dotted names `path` imports (relative imports resolved against its place in the package)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = path.parent.relative_to(root).parts
                package = package[:len(package) - node.level + 1]
                module = ".".join([*package, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return [name for name in names if name.split(".")[0] == PACKAGE]


@functools.lru_cache(maxsize=None)
def code_files(script: str, root: str) -> tuple[Path, ...]:
    """`script` and the package modules it reaches through imports (package __init__ files included)."""
    root_path, seen, todo = Path(root), set(), [Path(script)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path, root_path):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = _module_file(root_path, ".".join(parts[:depth]))
                if found and found not in seen:
                    todo.append(found)
    return tuple(sorted(seen))


def code_hash(script: str | Path, root: str | Path) -> str:
    """A short content hash of `script` and the package code it imports; `root` holds the `fullspectrum` folder."""
    digest, root = hashlib.sha256(), Path(root).resolve()
    for path in code_files(str(Path(script).resolve()), str(root)):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
