"""``KubeError``: kept apart from :mod:`.client` so that catching it (``l2lb.runtime.run`` does, for every
service) does not import the Kubernetes client library -- the announcer without ``--kubeconfig`` stays
~35 MiB smaller."""

from __future__ import annotations

import json

__all__ = ["KubeError"]


class KubeError(Exception):
    """An API request that failed. ``status`` is the HTTP code, or 0 when there was no response
    (connection failure, deadline, client-side rate limiter)."""

    def __init__(self, status: int, reason: str, message: str, *, retry_after: float | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410

    @classmethod
    def from_response(cls, status: int, body: bytes, retry_after: float | None = None) -> KubeError:
        reason, message = "", body.decode("utf-8", "replace").strip()[:500]
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            reason = str(doc.get("reason") or "")
            message = str(doc.get("message") or message)
        if not reason:
            reason = {
                400: "BadRequest",
                401: "Unauthorized",
                403: "Forbidden",
                404: "NotFound",
                405: "MethodNotAllowed",
                409: "Conflict",
                410: "Expired",
                422: "Invalid",
                429: "TooManyRequests",
                500: "InternalError",
                503: "ServiceUnavailable",
                504: "Timeout",
            }.get(status, "Unknown")
        return cls(status, reason, message, retry_after=retry_after)
