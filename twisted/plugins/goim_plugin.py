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
