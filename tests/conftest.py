import gc
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.support.redis_server",
    "tests.support.netns",
    "tests.support.kube",
    "tests.support.kube_real",
]


@pytest.fixture(autouse=True)
def _collect_garbage_per_test() -> Iterator[None]:
    """Collect garbage at the end of every test, so that a ResourceWarning of an unclosed socket or
    transport (an error under filterwarnings=error) is reported by the test that leaked it, not by
    whichever later test the garbage collector happens to run in."""
    yield
    gc.collect()
