"""Redis connection settings from one DSN string.

Accepted forms::

    redis://[user[:password]@]host[:port][/db][?options]
    rediss://[user[:password]@]host[:port][/db]?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem
    redis+sentinel://[user[:password]@]host:port[,host:port...]/service_name[/db][?options]
    rediss+sentinel://...                      (TLS to the sentinels and to the master)

Query options: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``
(``required`` | ``optional`` | ``none``), ``ssl_check_hostname`` (bool), ``db``,
``socket_timeout`` / ``connect_timeout`` (seconds), and for Sentinel ``sentinel_username`` /
``sentinel_password`` (credentials of the sentinels themselves, when they differ from the master's).
User and password are percent-decoded. Unknown options are an error: a typo must not silently
turn TLS verification off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["DSNError", "RedisDSN", "parse_dsn", "redact"]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379

_BOOL = {"1": True, "true": True, "yes": True, "on": True,
         "0": False, "false": False, "no": False, "off": False}
_CERT_REQS = ("required", "optional", "none")
_OPTIONS = {
    "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname", "db",
    "socket_timeout", "connect_timeout", "sentinel_username", "sentinel_password",
}


class DSNError(ValueError):
    """The Redis DSN cannot be used (message says what is wrong; the password is never included)."""


@dataclass(frozen=True)
class RedisDSN:
    hosts: tuple[tuple[str, int], ...]  # one host, or the sentinels
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = False
    sentinel_service: str | None = None  # set: connect through Sentinel to this service's master
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    socket_timeout: float = 5.0
    connect_timeout: float = 2.0

    @property
    def sentinel(self) -> bool:
        return self.sentinel_service is not None

    @property
    def host(self) -> str:
        return self.hosts[0][0]

    @property
    def port(self) -> int:
        return self.hosts[0][1]

    def tls_kwargs(self) -> dict[str, object]:
        """redis-py keyword arguments for TLS (empty without TLS)."""
        if not self.tls:
            return {}
        return {
            "ssl": True,
            "ssl_ca_certs": self.ssl_ca_certs,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_cert_reqs": self.ssl_cert_reqs,
            "ssl_check_hostname": self.ssl_check_hostname,
        }

    def describe(self) -> str:
        """Human-readable target without secrets, for logs and readiness."""
        hosts = ",".join(f"{_fmt_host(h)}:{p}" for h, p in self.hosts)
        scheme = ("rediss" if self.tls else "redis") + ("+sentinel" if self.sentinel else "")
        user = f"{self.username}@" if self.username else ""
        tail = f"/{self.sentinel_service}" if self.sentinel else ""
        return f"{scheme}://{user}{hosts}{tail}/{self.db}"


def _fmt_host(h: str) -> str:
    return f"[{h}]" if ":" in h else h


def _parse_hostport(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise DSNError("empty host in Redis DSN")
    if item.startswith("["):  # [v6]:port
        end = item.find("]")
        if end < 0:
            raise DSNError(f"bad IPv6 host {item!r} in Redis DSN")
        host, rest = item[1:end], item[end + 1 :]
        if rest and not rest.startswith(":"):
            raise DSNError(f"bad host {item!r} in Redis DSN")
        port_s = rest[1:]
    elif item.count(":") == 1:
        host, port_s = item.split(":")
    else:
        host, port_s = item, ""
    if not port_s:
        return host, default_port
    try:
        port = int(port_s)
    except ValueError:
        raise DSNError(f"bad port {port_s!r} in Redis DSN") from None
    if not 0 < port < 65536:
        raise DSNError(f"port {port} out of range in Redis DSN")
    return host, port


def _parse_db(s: str) -> int:
    try:
        db = int(s)
    except ValueError:
        raise DSNError(f"bad database number {s!r} in Redis DSN") from None
    if db < 0:
        raise DSNError(f"bad database number {s!r} in Redis DSN")
    return db


def _parse_float(name: str, s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise DSNError(f"option {name}={s!r} is not a number") from None
    if v <= 0:
        raise DSNError(f"option {name} must be > 0")
    return v


def parse_dsn(dsn: str) -> RedisDSN:
    """Parse a Redis DSN; raises :class:`DSNError` with a clear message on anything unusable."""
    if not isinstance(dsn, str) or "://" not in dsn:
        raise DSNError("Redis DSN must look like redis://host:port/0 (got no scheme)")
    scheme, rest = dsn.split("://", 1)
    scheme = scheme.lower()
    if scheme not in ("redis", "rediss", "redis+sentinel", "rediss+sentinel"):
        raise DSNError(f"unsupported Redis DSN scheme {scheme!r}: use redis, rediss or redis+sentinel")
    tls = scheme.startswith("rediss")
    sentinel = scheme.endswith("+sentinel")
    # urlsplit cannot handle a comma-separated host list: split the netloc ourselves.
    try:
        parts = urlsplit("x://" + rest)
    except ValueError as e:
        raise DSNError(f"Redis DSN cannot be parsed: {e}") from None
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    username: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        if ":" in userinfo:
            u, p = userinfo.split(":", 1)
            username, password = unquote(u) or None, unquote(p)
        else:
            # redis://secret@host is the classic password-only form
            password = unquote(userinfo) or None
    if not netloc:
        raise DSNError("Redis DSN has no host")
    default_port = DEFAULT_SENTINEL_PORT if sentinel else DEFAULT_PORT
    hosts = tuple(_parse_hostport(h, default_port) for h in netloc.split(","))
    if len(hosts) > 1 and not sentinel:
        raise DSNError("several hosts are only allowed with redis+sentinel://")
    path = [p for p in parts.path.split("/") if p]
    db = 0
    service: str | None = None
    if sentinel:
        if not path:
            raise DSNError("redis+sentinel:// DSN needs the service name: redis+sentinel://host:26379/mymaster")
        service = unquote(path[0])
        if len(path) > 1:
            db = _parse_db(path[1])
        if len(path) > 2:
            raise DSNError("redis+sentinel:// path must be /service_name[/db]")
    else:
        if len(path) > 1:
            raise DSNError("redis:// path must be /db")
        if path:
            db = _parse_db(path[0])
    out = RedisDSN(hosts=hosts, db=db, username=username, password=password, tls=tls,
                   sentinel_service=service)
    for key, val in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise DSNError(f"unknown Redis DSN option {key!r} (known: {', '.join(sorted(_OPTIONS))})")
        if key.startswith("ssl_") and not tls:
            raise DSNError(f"option {key} needs a rediss:// DSN")
        if key == "ssl_ca_certs":
            out = replace(out, ssl_ca_certs=val)
        elif key == "ssl_certfile":
            out = replace(out, ssl_certfile=val)
        elif key == "ssl_keyfile":
            out = replace(out, ssl_keyfile=val)
        elif key == "ssl_cert_reqs":
            if val.lower() not in _CERT_REQS:
                raise DSNError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
            out = replace(out, ssl_cert_reqs=val.lower())
        elif key == "ssl_check_hostname":
            if val.lower() not in _BOOL:
                raise DSNError(f"ssl_check_hostname={val!r} is not a boolean")
            out = replace(out, ssl_check_hostname=_BOOL[val.lower()])
        elif key == "db":
            out = replace(out, db=_parse_db(val))
        elif key == "socket_timeout":
            out = replace(out, socket_timeout=_parse_float(key, val))
        elif key == "connect_timeout":
            out = replace(out, connect_timeout=_parse_float(key, val))
        elif key == "sentinel_username":
            if not sentinel:
                raise DSNError("sentinel_username needs a redis+sentinel:// DSN")
            out = replace(out, sentinel_username=val or None)
        elif key == "sentinel_password":
            if not sentinel:
                raise DSNError("sentinel_password needs a redis+sentinel:// DSN")
            out = replace(out, sentinel_password=val or None)
    if out.ssl_keyfile and not out.ssl_certfile:
        raise DSNError("ssl_keyfile given without ssl_certfile")
    return out


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (for logs and error messages)."""
    if "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] + ":***" if ":" in userinfo else "***"
        netloc = f"{user}@{host}"
    out = f"{scheme}://{netloc}{sep}{tail}"
    if "sentinel_password=" in out:
        out = re.sub(r"(sentinel_password=)[^&]*", r"\1***", out)
    return out
