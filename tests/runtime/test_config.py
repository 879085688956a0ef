from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from l2lb.runtime.config import ConfigError, config_values, parse_with_config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--kube-qps", type=float, default=20.0)
    p.add_argument("--kube-burst", type=int, default=40)
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--no-events", action="store_true")
    p.add_argument("--interfaces", action="extend", nargs="+")
    return p


def test_sections_merge_and_service_wins(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("common:\n  kube-qps: 5\n  kube_burst: 10\n  redis: redis://x\nleases:\n  kube-qps: 7.5\n")
    a = parse_with_config(parser(), ["--config", str(f)], "leases")
    assert (a.kube_qps, a.kube_burst) == (7.5, 10)
    b = parse_with_config(parser(), ["--config", str(f)], "allocator")
    assert (b.kube_qps, b.kube_burst) == (5.0, 10)


def test_command_line_beats_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("kube-qps: 5\nno-events: true\ninterfaces: [enp0s25, 'eth[0-9]+']\n")
    a = parse_with_config(parser(), ["--config", str(f), "--kube-qps", "9"], "leases")
    assert a.kube_qps == 9.0 and a.no_events is True and a.interfaces == ["enp0s25", "eth[0-9]+"]


def test_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("kube-burst: 3\n")
    monkeypatch.setenv("L2LB_CONFIG", str(f))
    assert parse_with_config(parser(), [], "leases").kube_burst == 3


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"kube-qbs": 5}, "unknown setting 'kube-qbs'"),
        ({"common": {"kube-qbs": 5}}, "unknown setting 'kube-qbs'"),
        ({"kube-burst": "lots"}, "kube-burst"),
        ({"log-format": "xml"}, "not one of"),
        ({"no-events": "yes"}, "true or false"),
        ({"kube-qps": [1, 2]}, "single value"),
        ({"leasess": {"a": 1}}, "unknown setting"),
        ({"common": {"a": 1}, "nope": {}}, "unknown section"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_config_is_a_clear_error(doc: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_values(parser(), doc, "leases")


def test_unreadable_or_invalid_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse_with_config(parser(), ["--config", str(tmp_path / "missing.yaml")], "leases")
    assert e.value.code == 2
    assert "cannot read --config" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [\n")
    with pytest.raises(SystemExit):
        parse_with_config(parser(), ["--config", str(bad)], "leases")
    assert "not valid YAML" in capsys.readouterr().err


def test_empty_token_file_fails_closed(tmp_path: Path) -> None:
    from l2lb.adapters.http.server import StatusConfigError, StatusServer

    empty = tmp_path / "token"
    empty.write_text("  \n")
    with pytest.raises(StatusConfigError, match="empty"):
        StatusServer("x", token_file=str(empty))
    good = tmp_path / "token2"
    good.write_text("s3cret\n")
    assert StatusServer("x", token_file=str(good))._token == "s3cret"
