"""Write helpers: status patches only when the status changes, 409-retrying read-modify-write,
and condition lists with stable ``lastTransitionTime``."""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from l2lb.adapters.kube.client import KubeClient, KubeError, Resource
from l2lb.adapters.kube.ratelimit import backoff_delay
from l2lb.obs import metrics
from l2lb.obs.log import get_logger

__all__ = [
    "merge_patch_diff",
    "patch_status_if_changed",
    "retry_on_conflict",
    "set_condition",
    "update_with_retry",
]

log = get_logger("l2lb.kube.writes")
T = TypeVar("T")

STATUS_WRITES = metrics.counter(
    "l2lb_kube_status_writes_total",
    "Status patches sent or skipped because nothing changed",
    ("resource", "result"),
)
CONFLICTS = metrics.counter("l2lb_kube_conflicts_total", "409 conflicts retried by read-modify-write", ("resource",))


def _norm(v: Any) -> Any:
    """Drop None and empty containers so ``{}``/absent/None compare equal."""
    if isinstance(v, dict):
        out = {k: _norm(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x not in (None, {}, [])}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


def merge_patch_diff(old: Any, new: Any) -> Any:
    """The RFC 7386 JSON merge patch turning ``old`` into ``new`` (removed keys -> None; lists and
    scalars replaced whole). Returns ``{}`` for dicts that are equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return copy.deepcopy(new)
    patch: dict[str, Any] = {}
    for k in old:
        if k not in new:
            patch[k] = None
    for k, v in new.items():
        if k not in old:
            patch[k] = copy.deepcopy(v)
        elif old[k] != v:
            if isinstance(old[k], dict) and isinstance(v, dict):
                patch[k] = merge_patch_diff(old[k], v)
            else:
                patch[k] = copy.deepcopy(v)
    return patch


async def patch_status_if_changed(
    client: KubeClient, res: Resource, obj: dict[str, Any], new_status: dict[str, Any]
) -> bool:
    """Make ``obj``'s status equal ``new_status`` with one merge patch on the ``status``
    subresource -- or no request at all when they already match. Returns True when patched.

    ``obj`` is the object as last seen (typically from an informer cache); the patch removes
    keys that are in the old status and not in ``new_status``.
    """
    old = obj.get("status") or {}
    label = res.plural + "/status"
    if _norm(old) == _norm(new_status):
        STATUS_WRITES.labels(label, "unchanged").inc()
        return False
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    patch = {"status": merge_patch_diff(old, new_status)}
    out = await client.patch(res, name, patch, meta.get("namespace"), subresource="status", patch_type="merge")
    STATUS_WRITES.labels(label, "patched").inc()
    # keep the caller's view current, so a repeat call with the same status is a no-op
    obj["status"] = copy.deepcopy(out.get("status", new_status))
    if "resourceVersion" in (out.get("metadata") or {}):
        obj.setdefault("metadata", {})["resourceVersion"] = out["metadata"]["resourceVersion"]
    return True


async def retry_on_conflict(
    fn: Callable[[], Awaitable[T]], *, attempts: int = 5, base_delay: float = 0.01, what: str = ""
) -> T:
    """Call ``fn`` again (short jittered backoff) while it raises a 409 Conflict, at most
    ``attempts`` times; the last conflict is raised."""
    for i in range(attempts):
        try:
            return await fn()
        except KubeError as e:
            if not e.conflict or i == attempts - 1:
                raise
            CONFLICTS.labels(what or "unknown").inc()
            await asyncio.sleep(backoff_delay(i, base=base_delay, cap=1.0))
    raise AssertionError("unreachable")


async def update_with_retry(
    client: KubeClient,
    res: Resource,
    name: str,
    mutate: Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any] | None] | None],
    namespace: str | None = None,
    *,
    subresource: str | None = None,
    attempts: int = 5,
) -> dict[str, Any] | None:
    """GET -> ``mutate(obj)`` -> PUT (optimistic, on ``resourceVersion``), redone on 409.

    ``mutate`` (sync or async) edits the object in place or returns a new one; returning None
    means "no change needed" (no PUT). ``subresource="status"`` PUTs the status subresource. Returns the written
    object, or None when nothing was written.
    """

    async def once() -> dict[str, Any] | None:
        cur = await client.get(res, name, namespace)
        before = copy.deepcopy(cur)
        res_ = mutate(cur)
        out = await res_ if inspect.isawaitable(res_) else res_
        if out is None:
            return None
        if _norm(out) == _norm(before):
            return None
        if subresource == "status":
            return await client.replace_status(res, out, namespace)
        return await client.replace(res, out, namespace)

    return await retry_on_conflict(once, attempts=attempts, what=res.plural)


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Return a new condition list with ``type_`` set (metav1.Condition shape). The
    ``lastTransitionTime`` only moves when ``status`` changes, so re-setting the same condition
    leaves the list equal and :func:`patch_status_if_changed` sends nothing."""
    out = [copy.deepcopy(c) for c in conditions or [] if c.get("type") != type_]
    prev = next((c for c in conditions or [] if c.get("type") == type_), None)
    ts = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cond: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": prev["lastTransitionTime"]
        if prev is not None and prev.get("status") == status and prev.get("lastTransitionTime")
        else ts,
    }
    if observed_generation is not None:
        cond["observedGeneration"] = observed_generation
    idx = next((i for i, c in enumerate(conditions or []) if c.get("type") == type_), len(out))
    out.insert(idx, cond)
    return out
