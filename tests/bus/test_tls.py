"""rediss:// with a throwaway CA generated here; client certificates; verification failures are clear."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisProcess, free_port

from .conftest import Factory, Recorder, Running, hb, wait_until


def _make_pki_cryptography(d: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def write(name: str, k: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        (d / f"{name}.key").write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "l2lb test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write("ca", ca_key, ca)
    for name, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        k = key()
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"l2lb-{name}")]))
             .issuer_name(ca_name).public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if name == "server":
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        write(name, k, b.sign(ca_key, hashes.SHA256()))


def _make_pki_openssl(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
        "-subj", "/CN=l2lb test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name in ("server", "client"):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN=l2lb-{name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


def make_pki(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    try:
        _make_pki_cryptography(d)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.fail("neither the cryptography package nor the openssl CLI is available to make a test CA")
        _make_pki_openssl(d)
    return d


class TlsRedis:
    def __init__(self, proc: RedisProcess, tls_port: int, pki: Path):
        self.proc, self.tls_port, self.pki = proc, tls_port, pki

    def dsn(self, *, ca: bool = True, client_cert: bool = True) -> str:
        q = []
        if ca:
            q.append(f"ssl_ca_certs={self.pki / 'ca.pem'}")
        if client_cert:
            q += [f"ssl_certfile={self.pki / 'client.pem'}", f"ssl_keyfile={self.pki / 'client.key'}"]
        return f"rediss://127.0.0.1:{self.tls_port}/0" + ("?" + "&".join(q) if q else "")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    work = tmp_path_factory.mktemp("redis-tls")
    pki = make_pki(work / "pki")
    tls_port = free_port()
    proc = RedisProcess(work, extra=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(pki / "server.pem"),
        "--tls-key-file", str(pki / "server.key"), "--tls-ca-cert-file", str(pki / "ca.pem"),
        "--tls-auth-clients", "yes",
    ])
    proc.start()
    try:
        yield TlsRedis(proc, tls_port, pki)
    finally:
        proc.stop()


async def test_tls_publish_and_consume(tls_redis: TlsRedis, make_bus: Factory, running: Running) -> None:
    bus = await make_bus(tls_redis.dsn())
    ok, why = bus.readiness()
    assert ok, why
    assert why.startswith("connected to rediss://")
    rec = Recorder()
    c = bus.consumer(bus.keys.heartbeats, "tls", "c", rec, block_ms=200)
    running.start(c)
    await wait_until(lambda: c._incarnation is not None, what="set up")
    await bus.publish(bus.keys.heartbeats, hb(seq=42))
    await wait_until(lambda: len(rec.seen) == 1, what="delivered over TLS")
    info = await bus.redis.client_info()
    assert str(info["laddr"]).endswith(f":{tls_redis.tls_port}")  # the server saw us on its TLS port


@pytest.mark.parametrize(("ca", "client_cert"), [(False, True), (True, False)])
async def test_tls_verification_failures_are_not_ready(tls_redis: TlsRedis, make_bus: Factory, ca: bool,
                                                       client_cert: bool) -> None:
    bus = await make_bus(tls_redis.dsn(ca=ca, client_cert=client_cert))
    ok, why = bus.readiness()
    assert not ok
    assert "unreachable" in why
    if not ca:
        assert "certificate verify failed" in why.lower() or "certificate" in why.lower()


def test_plain_client_cannot_talk_to_tls_port(tls_redis: TlsRedis) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", tls_redis.tls_port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        s.settimeout(2)
        try:
            data = s.recv(64)
        except (TimeoutError, ConnectionResetError):
            data = b""
    assert not data.startswith(b"+PONG")
