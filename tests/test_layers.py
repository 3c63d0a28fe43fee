"""The import rules between packages (DESIGN section 1), checked on the source."""

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import goim

ROOT = Path(goim.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The modules a source file imports (at any level: function bodies count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offences(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """``file: module`` for every import of ``forbidden`` in ``package``."""
    base = ROOT.joinpath(*package.split(".")[1:])
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    bad = []
    for path in files:
        for module in sorted(imports_of(path)):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT.parent)}: {module}")
    return bad


class LayerTests(SynchronousTestCase):
    def test_protocols_never_import_connect(self) -> None:
        """The client connection knows its table only through goim.ports."""
        self.assertEqual(offences("goim.protocols", ("goim.connect", "goim.logic", "goim.storage")), [])

    def test_connect_never_imports_logic_or_storage(self) -> None:
        """The connect side talks to logic only through LogicPort."""
        self.assertEqual(offences("goim.connect", ("goim.logic", "goim.storage")), [])
    def test_config_is_pure(self) -> None:
        """Option parsing imports no storage, Redis or reactor."""
        forbidden = ("goim.storage", "goim.distributed", "goim.logic", "txredisapi", "twisted.internet.reactor")
        self.assertEqual(offences("goim.config", forbidden), [])
