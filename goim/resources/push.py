"""The business push routes (``/push/...``), authenticated by the push API key.

``POST /push/messages`` creates a push job (or returns the job of an earlier
request with the same ``idempotency_key``); ``GET /push/jobs/{id}`` shows its
progress. The caller is a trusted backend, never a user: it sends
``Authorization: Bearer KEY`` with the key of ``--push-key-file``, compared in
constant time. Without a configured key every route answers code 1101 (HTTP 403).
"""

import hashlib
import hmac
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.server import Request

from goim.logic.errors import PUSH_DISABLED, PUSH_KEY_WRONG, GoimError, bad_request
from goim.logic.push import PushService
from goim.logs import goim_observer
from goim.resources import errors
from goim.resources.envelope import envelope, id_list_field, int_field, path_id, read_json, text_field
from goim.storage.push import PushJob

log = Logger(observer=goim_observer)


def job_json(job: PushJob) -> dict[str, Any]:
    """A job as the API shows it."""
    return {
        "id": job.id,
        "idempotency_key": job.idempotency_key,
        "target": job.target,
        "user_ids": list(job.target_ids),
        "group_id": job.receiver_id if job.target == "group" else 0,
        "message_id": job.message_id,
        "state": job.state,
        "recipients": job.recipients,
        "chunks": job.chunks,
        "next_after": job.next_after,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


class PushAPI:
    """The Klein app of ``/push`` (mounted by ``GoimAPI``).

    Args:
        push: the push service.
        key: the API key (None or empty: business push is disabled).
    """

    app = Klein()

    def __init__(self, push: PushService, key: bytes | None) -> None:
        self.push = push
        self._key_digest = hashlib.sha256(key).digest() if key else None

    def _authenticate(self, request: Request) -> None:
        if self._key_digest is None:
            raise GoimError(PUSH_DISABLED, "business push is disabled: start goim with --push-key-file")
        header = (request.getHeader("authorization") or "").strip()
        scheme, _, given = header.partition(" ")
        # digests of equal length: the comparison's time says nothing about the key
        digest = hashlib.sha256(given.strip().encode("utf-8", "replace")).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, self._key_digest):
            raise GoimError(PUSH_KEY_WRONG, "wrong or missing push API key (Authorization: Bearer KEY)")

    @app.route("/messages", methods=["POST"])
    async def create(self, request: Request) -> bytes:
        self._authenticate(request)
        body = read_json(request)
        content = text_field(body, "content")
        group_id = int_field(body, "group_id", default=0)
        if group_id < 0:
            raise bad_request("group_id must be a positive integer")
        job, created = await self.push.create(
            idempotency_key=text_field(body, "idempotency_key"),
            target=text_field(body, "target"),
            user_ids=id_list_field(body, "user_ids"),
            group_id=group_id,
            message_type=int_field(body, "type", default=0),
            content=content,
        )
        return envelope(request, {**job_json(job), "created": created})

    @app.route("/jobs/<int(signed=True):job_id>", methods=["GET"])
    async def get_job(self, request: Request, job_id: int) -> bytes:
        self._authenticate(request)
        return envelope(request, job_json(await self.push.get(path_id(job_id, "job_id"))))


# every error of the routes above: goim.resources.errors
errors.install_error_handlers(PushAPI.app, log)
