"""Process runner shared by the service entry points: logging, uvloop, signals, clean shutdown."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from l2lb.adapters.bus.client import BusAuthError, BusPermissionError
from l2lb.adapters.bus.dsn import DSNError
from l2lb.adapters.http.server import StatusConfigError
from l2lb.adapters.kube.errors import KubeError
from l2lb.obs.log import get_logger, setup_logging

log = get_logger("l2lb.run")


def run_service(
    name: str,
    main: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    *,
    log_level: str = "info",
    log_format: str = "text",
    use_uvloop: bool = True,
) -> int:
    """Run ``main(stop_event)`` until it returns or SIGINT/SIGTERM sets ``stop_event``.

    uvloop is installed here, at the entry point only, never by library code.
    """
    setup_logging(log_level, log_format, service=name)
    if use_uvloop:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    else:
        runner = asyncio.run

    async def _wrapped() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if prof is not None:  # from L2LB_PROFILE_AFTER s on (default 0): the start-up left out
            loop.call_later(float(os.environ.get("L2LB_PROFILE_AFTER") or 0), prof[0].enable)
        await main(stop)

    prof = _profiler(name)
    try:
        runner(_wrapped())
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:
        return int(e.code or 0)
    except (DSNError, BusAuthError, BusPermissionError) as e:
        log.error(f"{name}: Redis settings rejected: {e}; check --redis (DSN, user, password) and the ACL")
        return 2
    except KubeError as e:
        if e.reason == "ConfigError":
            log.error(f"{name}: Kubernetes client settings rejected: {e}; check --kubeconfig/--kube-qps/--kube-burst")
            return 2
        log.exception(f"{name} stopped on a Kubernetes API error it could not recover from")
        return 1
    except StatusConfigError as e:
        log.error(f"{name}: {e}")
        return 2
    except OSError as e:
        hint = " (is another process using the port? see --http-host/--http-port)" \
            if e.errno == errno.EADDRINUSE else ""
        log.error(f"{name}: {e}{hint}")
        return 1
    except Exception:
        log.exception(f"{name} crashed; this is a bug, please report it with the log above")
        return 1
    finally:
        if prof is not None:
            prof[0].disable()
            prof[0].dump_stats(prof[1])
            log.info("profile written (L2LB_PROFILE)", extra={"file": prof[1]})
        sys.stderr.flush()
    return 0


def _profiler(name: str) -> tuple[Any, str] | None:
    """``L2LB_PROFILE=DIR``: run the service under cProfile (from ``L2LB_PROFILE_AFTER`` seconds after the
    start on) and write ``DIR/<name>-<pid>.prof`` when it stops (SIGTERM/SIGINT); read it with
    ``python -m pstats``. For finding where idle CPU goes (bench/compare idle);
    costs CPU itself, so never while measuring."""
    where = os.environ.get("L2LB_PROFILE")
    if not where:
        return None
    import cProfile

    os.makedirs(where, exist_ok=True)
    return cProfile.Profile(), os.path.join(where, f"{name}-{os.getpid()}.prof")


async def run_until_stopped(stop: asyncio.Event, tasks: Sequence[asyncio.Task[Any]], *, grace: float = 5.0) -> None:
    """Wait for ``stop``; then give the tasks ``grace`` seconds *in all* to finish on their own (a leader
    releases its Lease, a consumer acks), cancel what is left and collect every result."""
    try:
        await stop.wait()
    finally:
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
