"""The announcer's bus tests use the leases tests' Bus fixture (prefix "t", the Harness's)."""

from tests.leases.conftest import bus  # noqa: F401  (a fixture, found by pytest through this module)
