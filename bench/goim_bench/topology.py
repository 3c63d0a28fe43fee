"""What a scenario runs against: a standalone server on SQLite or MariaDB, or a
distributed goim of L logic and C connect nodes (``--setup sqlite,mysql,1+1,2+2``).

A :class:`Setup` names the server side of one run of a scenario; results of the
same scenario on several setups sit side by side in one results directory, as
``<scenario>.json`` (standalone SQLite, the historical name) and
``<scenario>@<setup>.json`` (every other setup).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: the largest L and C of an ``L+C`` setup (every node is a process on this machine)
MAX_NODES = 8

_DISTRIBUTED = re.compile(r"^(\d+)\+(\d+)$")


@dataclass(frozen=True)
class Setup:
    """One server side: ``sqlite``, ``mysql``, ``L+C`` or ``target``."""

    name: str
    logic_nodes: int = 0
    connect_nodes: int = 0

    @property
    def distributed(self) -> bool:
        return self.logic_nodes > 0

    @property
    def store(self) -> str:
        """``sqlite``, ``mysql`` (every distributed setup) or ``target``."""
        if self.distributed:
            return "mysql"
        return self.name

    @property
    def needs_mysql(self) -> bool:
        return self.store == "mysql"

    @property
    def suffix(self) -> str:
        """The result file's suffix after the scenario's name."""
        return "" if self.name in ("sqlite", "target") else f"@{self.name}"

    @property
    def label(self) -> str:
        """For tables and plot titles."""
        if self.distributed:
            return f"{self.logic_nodes} logic + {self.connect_nodes} connect (MariaDB, Redis)"
        return {"sqlite": "standalone SQLite", "mysql": "standalone MariaDB", "target": "target server"}[self.name]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "store": self.store,
                "logic_nodes": self.logic_nodes, "connect_nodes": self.connect_nodes}  # fmt: skip


SQLITE = Setup("sqlite")
MYSQL = Setup("mysql")
TARGET = Setup("target")


def parse_setup(text: str) -> Setup:
    """``sqlite``, ``mysql`` or ``L+C`` (L logic nodes, C connect nodes, 1..MAX_NODES each).

    Raises:
        ValueError: anything else, with what is accepted.
    """
    text = text.strip()
    if text == "sqlite":
        return SQLITE
    if text in ("mysql", "mariadb"):
        return MYSQL
    match = _DISTRIBUTED.match(text)
    if match:
        logic, connect = int(match.group(1)), int(match.group(2))
        if 1 <= logic <= MAX_NODES and 1 <= connect <= MAX_NODES:
            return Setup(f"{logic}+{connect}", logic, connect)
    raise ValueError(f"{text!r}: use sqlite, mysql or L+C (logic and connect nodes, 1 to {MAX_NODES} each, e.g. 2+2)")


def parse_setups(text: str) -> list[Setup]:
    """A comma-separated list of setups, in order, without repeats."""
    out: list[Setup] = []
    for part in text.split(","):
        if not part.strip():
            continue
        setup = parse_setup(part)
        if setup not in out:
            out.append(setup)
    if not out:
        raise ValueError("name at least one setup")
    return out


def setup_of(result: dict[str, Any]) -> str:
    """The setup name of a result file (files from before setups existed: by their database)."""
    setup = result.get("setup")
    if isinstance(setup, dict) and setup.get("name"):
        return str(setup["name"])
    database = result.get("server", {}).get("database")
    return "mysql" if database == "mysql" else "target" if database == "target" else "sqlite"
