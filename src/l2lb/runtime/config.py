"""``--config FILE``: every service flag can also come from one YAML file.

The file is a mapping of flag names (``kube-qps`` or ``kube_qps``) to values, either flat or in
sections: ``common:`` applies to every service, ``allocator:`` / ``leases:`` / ``announcer:`` to
one; a section's value wins over ``common``. Precedence: command line > config file >
environment (``L2LB_*``) > built-in default. Unknown keys and values of the wrong type are errors
that name the key and the accepted ones (exit status 2), never silently ignored::

    common:
      kube-qps: 10
      kube-burst: 20
      redis: redis://redis.l2lb-system:6379/0
    leases:
      renew-ms: 250
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

SERVICES = ("allocator", "leases", "announcer", "apiserver")
# settings that may sit in ``common:`` although some service has no such flag (it skips them);
# any other unknown key is an error
COMMON_KEYS = frozenset({
    "kubeconfig", "kube-qps", "kube-burst", "redis", "redis-prefix", "redis-maxlen", "namespace",
    "log-format", "log-level", "http-host", "http-token-file", "instance",
})


class ConfigError(ValueError):
    pass


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    out: dict[str, argparse.Action] = {}
    for act in parser._actions:
        if not act.option_strings or act.dest in ("help", "config"):
            continue
        for opt in act.option_strings:
            if opt.startswith("--"):
                out[opt[2:]] = act
    return out


def _convert(key: str, act: argparse.Action, value: Any) -> Any:
    if isinstance(act, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value if isinstance(act, argparse._StoreTrueAction) else not value
    if act.nargs in ("+", "*") or isinstance(act, argparse._AppendAction | argparse._ExtendAction):
        items = value if isinstance(value, list) else [value]
        conv = act.type if callable(act.type) else str
        try:
            return [conv(str(v)) for v in items]
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{key}: {e}") from None
    if isinstance(value, dict | list):
        raise ConfigError(f"{key}: expected a single value, got {type(value).__name__}")
    conv = act.type if callable(act.type) else str
    try:
        out = conv(value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
    if act.choices is not None and out not in act.choices:
        raise ConfigError(f"{key}: {out!r} is not one of {', '.join(map(str, act.choices))}")
    return out


def config_values(parser: argparse.ArgumentParser, data: Any, service: str) -> dict[str, Any]:
    """Validate a loaded config document against ``parser``; returns ``{dest: value}``."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a YAML mapping of flag names to values")
    flat: dict[str, Any] = {}
    sectioned = any(k in ("common", *SERVICES) for k in data)
    if sectioned:
        for k in data:
            if k not in ("common", *SERVICES):
                raise ConfigError(f"unknown section {k!r}: use common, {', '.join(SERVICES)}")
        for section in ("common", service):
            sec = data.get(section) or {}
            if not isinstance(sec, dict):
                raise ConfigError(f"section {section!r} must be a mapping")
            flat.update(sec)
    else:
        flat = dict(data)
    acts = _actions(parser)
    out: dict[str, Any] = {}
    for raw_key, value in flat.items():
        key = str(raw_key).replace("_", "-")
        act = acts.get(key)
        if act is None:
            if sectioned and key in COMMON_KEYS and raw_key in (data.get("common") or {}):
                continue  # a shared setting this service has no flag for
            raise ConfigError(f"unknown setting {raw_key!r} for {service}; known: {', '.join(sorted(acts))}")
        out[act.dest] = _convert(key, act, value)
    return out


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None, service: str
                      ) -> argparse.Namespace:
    """Add ``--config`` to ``parser`` and parse ``argv`` with the file's values as defaults."""
    parser.add_argument("--config", default=os.environ.get("L2LB_CONFIG") or None,
                        help="YAML file with settings (flag names as keys; sections common/<service>); "
                             "env L2LB_CONFIG")
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        try:
            data = yaml.safe_load(Path(pre.config).read_text())
            parser.set_defaults(**config_values(parser, data, service))
        except OSError as e:
            parser.error(f"cannot read --config {pre.config}: {e.strerror}")
        except yaml.YAMLError as e:
            parser.error(f"--config {pre.config} is not valid YAML: {e}")
        except ConfigError as e:
            parser.error(f"--config {pre.config}: {e}")
    return parser.parse_args(argv)
