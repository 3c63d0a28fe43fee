"""twistd plugins: ``twistd goim``, ``twistd goim-connect``, ``twistd goim-logic``.

This folder is not a package (no ``__init__.py``): twistd discovers plugins in it.
"""

from twisted.application.service import ServiceMaker

goim = ServiceMaker(
    "goim",
    "goim.tap",
    "goim standalone server: client TCP, HTTP API and storage in one process",
    "goim",
)

goim_logic = ServiceMaker(
    "goim-logic",
    "goim.distributed.logic_tap",
    "goim logic node: HTTP API, PB root for connect nodes and storage (distributed mode)",
    "goim-logic",
)

goim_connect = ServiceMaker(
    "goim-connect",
    "goim.connect.tap",
    "goim connect node: client connections, PB to logic, deliveries from Redis (distributed mode)",
    "goim-connect",
)
