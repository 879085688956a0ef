"""Pure parts: DSN parsing, redaction, SeqFilter, keys, ACL rules."""

from __future__ import annotations

import pytest

from l2lb.adapters.bus.acl import service_rules
from l2lb.adapters.bus.dsn import DSNError, parse_dsn, redact
from l2lb.adapters.bus.keys import Keys
from l2lb.adapters.bus.seq import SeqFilter


def test_plain_dsn_defaults() -> None:
    d = parse_dsn("redis://127.0.0.1")
    assert d.hosts == (("127.0.0.1", 6379),) and d.db == 0 and not d.tls and not d.sentinel
    assert d.username is None and d.password is None
    d = parse_dsn("redis://redis.l2lb-system.svc:6380/3")
    assert (d.host, d.port, d.db) == ("redis.l2lb-system.svc", 6380, 3)


def test_dsn_credentials_are_percent_decoded() -> None:
    d = parse_dsn("redis://announcer:p%40ss%3Aw0rd@10.0.0.1:6379/0")
    assert d.username == "announcer" and d.password == "p@ss:w0rd"
    d = parse_dsn("redis://:onlypass@h/1")
    assert d.username is None and d.password == "onlypass" and d.db == 1
    d = parse_dsn("redis://legacy@h")
    assert d.username is None and d.password == "legacy"


def test_rediss_options() -> None:
    d = parse_dsn("rediss://u:p@h:6380/2?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
                  "&ssl_cert_reqs=required&ssl_check_hostname=true")
    assert d.tls and d.port == 6380 and d.db == 2
    kw = d.tls_kwargs()
    assert kw["ssl"] is True and kw["ssl_ca_certs"] == "/ca.pem" and kw["ssl_certfile"] == "/c.pem"
    assert kw["ssl_keyfile"] == "/k.pem" and kw["ssl_check_hostname"] is True
    assert parse_dsn("redis://h").tls_kwargs() == {}


def test_sentinel_dsn() -> None:
    d = parse_dsn("redis+sentinel://u:p@s1:26379,s2,[2001:db8::5]:26380/mymaster/2?sentinel_password=sp")
    assert d.sentinel and d.sentinel_service == "mymaster" and d.db == 2
    assert d.hosts == (("s1", 26379), ("s2", 26379), ("2001:db8::5", 26380))
    assert d.sentinel_password == "sp" and d.password == "p"
    assert d.describe() == "redis+sentinel://u@s1:26379,s2:26379,[2001:db8::5]:26380/mymaster/2"
    assert parse_dsn("rediss+sentinel://s1/m?ssl_ca_certs=/ca").tls


@pytest.mark.parametrize(("dsn", "fragment"), [
    ("127.0.0.1:6379", "no scheme"),
    ("http://h", "unsupported"),
    ("redis://", "no host"),
    ("redis://h:notaport", "bad port"),
    ("redis://h:70000", "out of range"),
    ("redis://h/x", "database"),
    ("redis://h/1/2", "path must be /db"),
    ("redis://a,b", "only allowed with redis+sentinel"),
    ("redis+sentinel://s1", "service name"),
    ("redis://h?ssl_ca_certs=/ca", "needs a rediss"),
    ("rediss://h?ssl_ca_cert=/ca", "unknown Redis DSN option"),
    ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("rediss://h?ssl_keyfile=/k", "without ssl_certfile"),
    ("redis://h?socket_timeout=-1", "must be > 0"),
    ("redis://h?sentinel_password=x", "needs a redis+sentinel"),
])
def test_bad_dsns_are_clear_errors(dsn: str, fragment: str) -> None:
    with pytest.raises(DSNError) as ei:
        parse_dsn(dsn)
    assert fragment in str(ei.value)


def test_errors_and_redaction_never_show_the_password() -> None:
    with pytest.raises(DSNError) as ei:
        parse_dsn("redis://u:s3cret@h:bad/0")
    assert "s3cret" not in str(ei.value)
    assert redact("redis://u:s3cret@h:6379/0") == "redis://u:***@h:6379/0"
    assert redact("redis://s3cret@h/0") == "redis://***@h/0"
    assert "sp" not in redact("redis+sentinel://s1/m?sentinel_password=sp").split("=")[1]
    assert redact("redis://h/0") == "redis://h/0"


def test_seq_filter_drops_stale_and_duplicates() -> None:
    f = SeqFilter()
    assert f.accept("n1", 1, 1)
    assert not f.accept("n1", 1, 1)  # duplicate
    assert f.accept("n1", 1, 2)
    assert not f.accept("n1", 1, 1)  # stale
    assert f.accept("n1", 2, 0)  # a new term wins even with a lower seq
    assert not f.accept("n1", 1, 99)  # an old leader's message is fenced off
    assert f.accept("n2", 1, 1)  # keys are independent
    assert f.last("n1") == (2, 0) and f.dropped == 3 and len(f) == 2
    assert f.is_newer("n1", 2, 1) and f.last("n1") == (2, 0)  # is_newer does not record
    f.forget("n1")
    assert "n1" not in f and f.accept("n1", 1, 1)
    f.reset()
    assert len(f) == 0


def test_seq_filter_bounded() -> None:
    f = SeqFilter(max_keys=2)
    f.accept("a", 1, 1)
    f.accept("b", 1, 1)
    f.accept("a", 1, 2)  # a is now the most recent
    f.accept("c", 1, 1)  # evicts b
    assert "b" not in f and "a" in f and "c" in f
    with pytest.raises(ValueError):
        SeqFilter(max_keys=0)


def test_keys_prefix_and_short_names() -> None:
    k = Keys("lab1")
    assert k.allocations == "lab1:stream:allocations" and k.short(k.heartbeats) == "heartbeats"
    assert all(s.startswith("lab1:stream:") for s in k.streams()) and len(set(k.streams())) == 5
    assert k.snapshot("allocations") == "lab1:snapshot:allocations"


def test_acl_rules_use_the_prefix_and_least_privilege() -> None:
    k = Keys("lab1")
    ann = " ".join(service_rules(k, "announcer"))
    assert "~lab1:stream:heartbeats +xadd)" in ann
    assert "lab1:stream:allocations" not in ann and "+@all" not in ann and "~*" not in ann
    alloc = " ".join(service_rules(k, "allocator"))
    assert "(~lab1:stream:allocations +xadd)" in alloc and "assignments" not in alloc
    with pytest.raises(ValueError):
        service_rules(k, "dns")
