"""The ``l2lb`` command: runs any service, the lab, the embedded API server and the status view."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "allocator": ("services.allocator.main", "run the allocator service (LB-IPAM: Services + pools -> IPs)"),
    "leases": ("services.leases.main", "run the leases service (which node answers for which IP)"),
    "announcer": ("services.announcer.main", "run the announcer on this node (ARP/NDP from a raw socket)"),
    "apiserver": ("l2lb.apiserver.main", "run the embedded Kubernetes-compatible API server (lab/dev/tests)"),
    "lab": ("l2lb.lab.main", "build a netns cluster on this machine, run everything, show a failover"),
    "status": ("l2lb.lab.status", "show Services, IPs, announcing nodes, pools and nodes"),
    "allocate": ("l2lb.lab.allocate", "offline: allocate IPs for manifests (pools + Services) and print them"),
    "sim": ("l2lb.sim.run", "deterministic simulation of a whole cluster under faults (seeds, invariants)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="l2lb",
        description="LoadBalancer IPs for bare-metal Kubernetes: LB-IPAM + ARP/NDP with sub-second failover.",
    )
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd not in COMMANDS:
        parser.print_usage(sys.stderr)
        print(f"l2lb: unknown command {cmd!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name = COMMANDS[cmd][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"l2lb {cmd}: not yet available in this build", file=sys.stderr)
            return 3
        raise
    rc: int = module.main(rest)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
