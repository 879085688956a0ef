"""Deterministic simulation of a whole l2lb cluster on one virtual clock (pure: no I/O, no real time).

See :mod:`l2lb.sim.world` for what is simulated and :mod:`l2lb.sim.run` for the entry points
(``l2lb sim``). The services' decisions are the very state machines of :mod:`l2lb.core` that the real
services run; only their surroundings (Redis, the API server, the LAN, processes, clocks) are models.
"""
