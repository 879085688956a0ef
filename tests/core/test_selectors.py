from __future__ import annotations

import pytest

from l2lb.core.models import ParseError
from l2lb.core.selectors import LabelSelector, Requirement, parse_selector, service_labels

LABELS = {"app": "web", "tier": "front"}


@pytest.mark.parametrize(
    ("sel", "labels", "want"),
    [
        ({}, LABELS, True),
        ({}, {}, True),
        ({"matchLabels": {"app": "web"}}, LABELS, True),
        ({"matchLabels": {"app": "db"}}, LABELS, False),
        ({"matchLabels": {"app": "web", "tier": "back"}}, LABELS, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}, LABELS, True),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]}, LABELS, False),
        ({"matchExpressions": [{"key": "nope", "operator": "In", "values": ["x"]}]}, LABELS, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["api"]}]}, LABELS, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, LABELS, False),
        ({"matchExpressions": [{"key": "nope", "operator": "NotIn", "values": ["x"]}]}, LABELS, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "nope", "operator": "Exists"}]}, LABELS, False),
        ({"matchExpressions": [{"key": "nope", "operator": "DoesNotExist"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, LABELS, False),
        ({"matchLabels": {"app": "web"},
          "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]}, LABELS, False),
    ],
)
def test_selector_semantics(sel: dict[str, object], labels: dict[str, str], want: bool) -> None:
    assert parse_selector(sel, "s").matches(labels) is want


def test_meta_labels() -> None:
    sel = parse_selector({"matchLabels": {"io.kubernetes.service.namespace": "pihole",
                                          "io.kubernetes.service.name": "dns"}}, "s")
    assert sel.matches(service_labels("pihole", "dns", {}))
    assert not sel.matches(service_labels("other", "dns", {}))
    assert not sel.matches({})


@pytest.mark.parametrize(
    ("sel", "path"),
    [
        ("nope", "spec.sel"),
        ({"matchLabels": ["a"]}, "spec.sel.matchLabels"),
        ({"matchExpressions": [{"key": "a", "operator": "Like", "values": ["x"]}]},
         "spec.sel.matchExpressions[0].operator"),
        ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "spec.sel.matchExpressions[0].values"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
         "spec.sel.matchExpressions[0].values"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "spec.sel.matchExpressions[0].key"),
        ({"matchLabel": {}}, "spec.sel.matchLabel"),
    ],
)
def test_selector_errors_name_the_field(sel: object, path: str) -> None:
    with pytest.raises(ParseError) as ei:
        parse_selector(sel, "spec.sel")
    assert ei.value.path == path


def test_str_and_of() -> None:
    s = LabelSelector.of({"a": "1"}, Requirement("b", "In", frozenset({"x", "y"})), Requirement("c", "DoesNotExist"))
    assert str(s) == "a=1,b in (x,y),!c"
    assert s.matches({"a": "1", "b": "y"})
    assert not s.matches({"a": "1", "b": "y", "c": ""})
