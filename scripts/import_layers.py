"""How deep the package's import graph is: modules and layers of module-level imports.

A module's layer is 1 + the deepest layer it imports (imports inside functions, which are lazy,
and under ``TYPE_CHECKING`` are left out; a cycle counts once). Usage: python
scripts/import_layers.py [PACKAGE_DIR] (default: vae_search), e.g. on an older tree from
``git archive REV vae_search | tar -x -C /tmp/old``.
"""

import ast
import functools
import sys
from pathlib import Path


def module_imports(tree: ast.Module) -> set[str]:
    """Dotted names imported at module level (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return names


def main(root: Path) -> None:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    deps = {name: {d for d in module_imports(ast.parse(path.read_text())) if d in modules
                   and d != name} for name, path in modules.items()}

    @functools.cache
    def layer(name: str, seen: frozenset[str] = frozenset()) -> int:
        below = [layer(d, seen | {name}) for d in deps[name] if d not in seen]
        return 1 + max(below, default=0)

    flat = sum(1 for path in modules.values() if path.parent == root)
    print(f"{root}: {len(modules)} modules ({flat} in {root.name}/*.py), "
          f"{max(layer(name) for name in modules)} layers")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "vae_search"))
