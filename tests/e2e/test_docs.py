"""docs/http-api.md stays in step with the Klein routes and the error codes."""

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from goim.logic import errors
from goim.resources.api import GoimAPI
from goim.resources.push import PushAPI
from goim.resources.envelope import MAX_BODY_BYTES
from goim.resources.status import status_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"


def routed() -> set[str]:
    """``"METHOD /path"`` of every Klein route, paths with ``{name}`` placeholders."""
    found = set()
    for rule in GoimAPI.app.url_map.iter_rules():
        path = re.sub(r"<[^:>]+:([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add(f"{method} {path}")
    # the business push routes, mounted under /push/ (goim.resources.push)
    for rule in PushAPI.app.url_map.iter_rules():
        path = "/push" + re.sub(r"<[^:>]+:([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add(f"{method} {path}")
    return found


def documented() -> set[str]:
    """``"METHOD /path"`` of every route heading (``### GET or POST /user/info`` gives two)."""
    found = set()
    for heading in re.findall(r"^### (.+)$", DOC.read_text(), re.MULTILINE):
        words = heading.split()
        if len(words) >= 2 and words[-1].startswith("/"):
            for method in words[:-1]:
                if method != "or":
                    found.add(f"{method} {words[-1]}")
    return found


class HTTPAPIDocTests(SynchronousTestCase):
    def test_every_route_has_a_section(self) -> None:
        """Each Klein route (method and path) has a heading in docs/http-api.md, and each heading is a route."""
        self.assertEqual(documented(), routed())

    def test_every_error_code_is_in_the_table_with_its_status(self) -> None:
        """The error table lists every code of goim/logic/errors.py with the HTTP status the API answers."""
        rows = dict(re.findall(r"^\| (\d+) \| (\d+) \|", DOC.read_text(), re.MULTILINE))
        codes = {value for name, value in vars(errors).items() if name.isupper() and isinstance(value, int)}
        self.assertEqual(set(rows), {str(c) for c in codes})
        for code in codes - {errors.OK}:
            self.assertEqual(rows[str(code)], str(status_of(code)), f"code {code}")
        self.assertEqual(rows["0"], "200")

    def test_body_limit_is_stated(self) -> None:
        """The documented body limit is the one the API enforces."""
        self.assertIn(f"{MAX_BODY_BYTES:,} bytes", DOC.read_text())
