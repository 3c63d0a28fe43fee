"""A load-generator process: many lean client connections driven by commands.

Run as ``python -m goim_bench.loadgen --job FILE [--max-seconds S]`` by
``goim_bench.driver``. The job file (JSON) names the server, the loopback source
address to connect from and the devices this process plays::

    {"host": "127.0.0.1", "port": 50000, "source": "127.0.0.2", "content_size": 64,
     "devices": [[device_id, user_id, token, receiver_type, receiver_id], ...]}

(``receiver_type`` 0: the device does not send). Commands arrive on stdin as JSON
lines ``{"id": n, "cmd": name, ...}``, one at a time; replies and progress go to
stdout as JSON lines (``{"event": "reply", "id": n, "data": {...}}``,
``{"event": "progress", "data": {...}}``, ``{"event": "error", "id": n, ...}``).

The units: ``frames`` (the frames it writes and the message stamps), ``device``
(one device and a phase's receive figures), ``connection`` (TCP and WebSocket
connections), ``connecting`` (one ``connect`` command's attempts), ``generator``
(the devices' events and the commands), ``channel`` (the process's stdin/stdout
and ``main``).

Connections use goim's framing and codec directly: no client library, no
per-message objects beyond the decoded protobuf. The process stops by itself when
stdin closes, on ``exit``, or after ``--max-seconds``.

Latency: a send's content starts with ``"<time.time()> <phase> "``; a device that
receives the live push computes arrival minus that stamp (all processes run on one
machine, so wall clocks agree).
"""

from goim_bench.loadgen.channel import main
from goim_bench.loadgen.device import Device, PhaseStats
from goim_bench.loadgen.frames import parse_stamp, sign_in_frame, stamp_content, sync_frame
from goim_bench.loadgen.generator import LoadGenerator

__all__ = ["Device", "LoadGenerator", "PhaseStats", "main", "parse_stamp", "sign_in_frame", "stamp_content", "sync_frame"]
