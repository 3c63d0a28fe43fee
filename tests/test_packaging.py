"""The package as shipped: generated protobuf code and twistd plugin discovery."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


class GeneratedCodeTests(SynchronousTestCase):
    def test_generated_protobuf_code_is_current(self) -> None:
        """goim/pb/*_pb2.py(i) equal what scripts/gen-proto makes from proto/*.proto now."""
        from grpc_tools import protoc

        out = Path(self.mktemp())
        out.mkdir(parents=True)
        status = protoc.main(
            [
                "protoc",
                f"-I{ROOT / 'proto'}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                str(ROOT / "proto" / "goim.proto"),
                str(ROOT / "proto" / "internal.proto"),
            ]
        )
        self.assertEqual(status, 0)
        for name in ("goim_pb2.py", "goim_pb2.pyi", "internal_pb2.py", "internal_pb2.pyi"):
            self.assertTrue(
                filecmp.cmp(out / name, ROOT / "goim" / "pb" / name, shallow=False),
                f"goim/pb/{name} is stale: run scripts/gen-proto and commit the result",
            )


    def test_web_page_proto_is_current(self) -> None:
        """The web page parses goim/resources/static/goim.proto: a copy of proto/goim.proto."""
        self.assertTrue(
            filecmp.cmp(ROOT / "proto" / "goim.proto", ROOT / "goim" / "resources" / "static" / "goim.proto", shallow=False),
            "goim/resources/static/goim.proto is stale: copy proto/goim.proto there",
        )


class PluginTests(SynchronousTestCase):
    def test_installed_twistd_lists_the_goim_plugins(self) -> None:
        """twistd --help, run outside the checkout, lists goim from the installed package."""
        cwd = Path(self.mktemp())
        cwd.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertIn(" goim ", out.stdout)

    def test_plain_install_ships_the_plugin(self) -> None:
        """pip install . puts goim_plugin.py into twisted/plugins (not a package) and the .pyi files."""
        target = Path(self.mktemp())
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--disable-pip-version-check", "--target", str(target), str(ROOT)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        self.assertTrue((target / "twisted" / "plugins" / "goim_plugin.py").exists())
        self.assertFalse((target / "twisted" / "plugins" / "__init__.py").exists())
        self.assertTrue((target / "goim" / "pb" / "goim_pb2.pyi").exists())
        self.assertTrue((target / "goim" / "py.typed").exists())
        static = target / "goim" / "resources" / "static"
        for name in ("index.html", "app.js", "style.css", "goim.proto", "vendor/protobuf.min.js", "vendor/protobuf.LICENSE"):
            self.assertTrue((static / name).exists(), f"the web page's {name} is not installed")
        # the benchmark suite is its own distribution (bench/): not in goim's
        self.assertFalse((target / "goim" / "bench").exists())
        self.assertFalse(list(target.glob("goim_bench*")))
        scripts = (target / "bin").glob("*") if (target / "bin").exists() else []
        self.assertNotIn("goim-bench", [p.name for p in scripts])


class BenchPackagingTests(SynchronousTestCase):
    def test_bench_package_imports_no_server_internals(self) -> None:
        """goim_bench drives the server from outside: no goim.storage, goim.logic,
        goim.server, goim.distributed or goim.resources import (DESIGN's layering)."""
        import ast

        forbidden = ("goim.storage", "goim.logic", "goim.server", "goim.distributed", "goim.resources",
                     "goim.standalone", "tests")  # fmt: skip
        found = []
        for path in sorted((ROOT / "bench" / "goim_bench").rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []  # fmt: skip
                found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "tests" or n.startswith(forbidden)]
        self.assertEqual(found, [])

    def test_bench_distribution_declares_its_script_and_goim(self) -> None:
        """bench/pyproject.toml: distribution goim-bench, depends on goim, installs goim-bench."""
        import tomllib

        project = tomllib.loads((ROOT / "bench" / "pyproject.toml").read_text())["project"]
        self.assertEqual(project["name"], "goim-bench")
        self.assertIn("goim", project["dependencies"])
        self.assertEqual(project["scripts"]["goim-bench"], "goim_bench.cli:main")
