"""The simulator's kernel, LAN, Redis model and fault schedules (no real time, no I/O)."""

from __future__ import annotations

from l2lb.sim.api import Api
from l2lb.sim.faults import Fault, generate, shrink
from l2lb.sim.kernel import Kernel, Proc
from l2lb.sim.net import CLIENT, Lan
from l2lb.sim.redis import Data, Entry, Redis, Server


def test_events_run_in_time_then_schedule_order() -> None:
    k = Kernel(1)
    seen: list[str] = []
    k.at(2.0, lambda: seen.append("b"))
    k.at(1.0, lambda: seen.append("a1"))
    k.at(1.0, lambda: seen.append("a2"))
    h = k.at(1.5, lambda: seen.append("cancelled"))
    h.cancel()
    k.run_until(1.9)
    assert seen == ["a1", "a2"] and k.now == 1.9
    k.run_until(5)
    assert seen == ["a1", "a2", "b"]


def test_timers_of_a_dead_process_are_void_and_a_paused_one_catches_up() -> None:
    k = Kernel(1)
    p = Proc(k, "n1", "announcer")
    seen: list[tuple[str, float]] = []
    p.after(1.0, lambda: seen.append(("tick", k.now)))
    p.pause()
    k.run_until(3.0)
    assert seen == []
    p.resume()
    k.run_until(3.0)
    assert seen == [("tick", 3.0)]  # overdue timer runs on resume
    p.after(1.0, lambda: seen.append(("late", k.now)))
    p.kill()
    p.restart()
    k.run_until(10)
    assert seen == [("tick", 3.0)]  # the old incarnation's timer never runs


def test_same_seed_same_run() -> None:
    def run(seed: int) -> list[float | None]:
        k = Kernel(seed)
        lan = Lan(k, ["n1", "n2"])
        return [lan.delay("n1", "n2") for _ in range(20)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_partitions_and_links() -> None:
    k = Kernel(1)
    lan = Lan(k, ["n1", "n2", "n3"])
    assert lan.reach("n1", CLIENT)
    lan.partition(["n3"])
    assert not lan.reach("n3", "n1") and not lan.reach("n3", CLIENT) and lan.reach("n1", "n2")
    lan.heal()
    lan.set_link("n2", False)
    assert lan.delay("n1", "n2") is None and lan.reach("n1", "n3")


def _redis(k: Kernel, lan: Lan, **kw: object) -> tuple[Redis, Server, Server]:
    m = Server(Proc(k, "n1", "redis"), Data(1))
    r = Server(Proc(k, "n2", "redis"), Data(1))
    return Redis(k, lan, [m, r], **kw), m, r  # type: ignore[arg-type]


def test_streams_reach_consumers_in_order_and_backlog_after_a_partition() -> None:
    k = Kernel(3)
    lan = Lan(k, ["n1", "n2", "n3"])
    redis, _, _ = _redis(k, lan)
    prod, cons = Proc(k, "n2", "prod"), Proc(k, "n3", "cons")
    got: list[int] = []
    redis.subscribe(cons, "s", "g", lambda e: got.append(e.payload), lambda: got.append(-1))
    for i in range(3):
        redis.xadd(prod, "s", i)
    k.run_until(0.1)
    assert got == [0, 1, 2]
    lan.partition(["n3"])
    redis.xadd(prod, "s", 3)
    k.run_until(2.0)
    assert got == [0, 1, 2]
    lan.heal()
    k.run_until(4.0)
    assert got == [0, 1, 2, 3]  # the backlog, read after the consumer reconnected


def test_failed_operations_report_after_the_timeout() -> None:
    k = Kernel(3)
    lan = Lan(k, ["n1", "n2"])
    redis, master, _ = _redis(k, lan, op_timeout=0.5)
    c = Proc(k, "n2", "c")
    res: list[tuple[bool, float]] = []
    redis.xadd(c, "s", 1, lambda ok, _r: res.append((ok, k.now)))
    k.run_until(0.1)
    assert res and res[0][0] and res[0][1] < 0.01
    master.proc.pause()
    redis.xadd(c, "s", 2, lambda ok, _r: res.append((ok, k.now)))
    k.run_until(1.0)
    assert res[1] == (False, 0.6)


def test_restart_without_data_resyncs_consumers_and_sentinel_promotes_a_replica() -> None:
    k = Kernel(5)
    lan = Lan(k, ["n1", "n2", "n3"])
    redis, master, replica = _redis(k, lan, sentinel_nodes=["n1", "n2", "n3"], down_after=1.0, election=0.2)
    cons = Proc(k, "n3", "cons")
    got: list[object] = []
    redis.subscribe(cons, "s", "g", lambda e: got.append(e.payload), lambda: got.append("resync"))
    master.persistent = False
    redis.restart(master, 0.5)
    k.run_until(2.0)
    assert redis.master is master and "resync" in got
    # now the master's node dies: the replica (which got every write) is promoted after down_after + election
    redis.xadd(Proc(k, "n2", "p"), "s", "before")
    k.run_until(2.1)
    lan.set_link("n1", False)
    master.proc.kill()
    k.run_until(4.0)
    assert redis.master is replica and redis.promotions == 1
    redis.xadd(Proc(k, "n2", "p2"), "s", "after")
    k.run_until(5.0)
    assert got[-1] == "after"


def test_generated_schedules_are_seeded_and_shrink_to_the_culprit() -> None:
    a = generate(11, nodes=["n1", "n2", "n3"], minutes=10)
    assert a == generate(11, nodes=["n1", "n2", "n3"], minutes=10)
    assert a != generate(12, nodes=["n1", "n2", "n3"], minutes=10)
    assert 20 <= len(a) <= 120 and all(f.t >= 5 for f in a)
    culprit = Fault(33.0, "partition", "n2", 5.0)
    other = Fault(34.0, "link_down", "n1", 1.0)
    sched = [*a[:10], culprit, *a[10:20], other, *a[20:]]
    smallest = shrink(sched, lambda fs: culprit in fs and other in fs)
    assert smallest == [culprit, other]
    assert Entry(1, 0.0, None).id == 1


def test_loss_on_a_tcp_connection_delays_and_never_drops_unless_it_outlasts_the_time_out() -> None:
    """Redis, replication and the API server run over TCP: a lost segment goes again after the retransmission
    time-out (200 ms, doubling), so message loss delays them; the peers' LAN frames are datagrams and get lost."""
    from l2lb.sim.net import RTO_MIN

    lan = Lan(Kernel(7), ["n1", "n2"])
    lan.set_faults("n1", loss=0.5)
    frames = [lan.delay("n1", "n2") for _ in range(400)]
    assert 120 < sum(d is None for d in frames) < 280  # datagrams: about half lost
    tcp = [lan.stream_delay("n1", "n2", give_up=1e6) for _ in range(400)]
    assert all(d is not None for d in tcp)  # giving up would take 23 losses in a row
    late = [d for d in tcp if d is not None and d >= RTO_MIN]
    assert 120 < len(late) < 280 and max(late) >= RTO_MIN * 3  # one loss: +200 ms; two in a row: +600 ms
    short = [lan.stream_delay("n1", "n2", give_up=0.5) for _ in range(400)]
    assert 60 < sum(d is None for d in short) < 140  # two losses in a row (p = 1/4; 0.2 + 0.4 > 0.5): time-out
    lan.set_faults("n1")
    k1, k2 = Kernel(3), Kernel(3)
    a, b = Lan(k1, ["n1", "n2"]), Lan(k2, ["n1", "n2"])
    assert [a.delay("n1", "n2") for _ in range(5)] == [b.stream_delay("n1", "n2", 1.0) for _ in range(5)]
    b.set_link("n2", False)
    assert b.stream_delay("n1", "n2", 1.0) is None


def _api(nodes: list[str]) -> tuple[Kernel, Api]:
    k = Kernel(5)
    return k, Api(k, Lan(k, nodes))


def test_two_candidates_that_find_the_lease_expired_race_and_one_gets_409() -> None:
    """The Lease's holder stops renewing; both standbys see its record unchanged for lease_duration by their own
    clocks at the same moment, and both PUT with the resourceVersion they read: the second write is a 409."""
    from l2lb.sim.api import Elector

    k, api = _api(["n1", "n2", "n3"])
    api.lan.base_latency = 0.05  # a slow API server: both reads land before the first write
    changes: list[tuple[str, bool]] = []
    holder = Proc(k, "n1", "leases")
    Elector(api, holder, "l", lambda lead, _t: changes.append(("n1", lead)))
    k.run_until(0.5)
    assert changes == [("n1", True)]
    a, b = Proc(k, "n2", "leases"), Proc(k, "n3", "leases")
    # same retry phase; 5.5 s: the record they saw at 4.5 s is expired for both at their try at 10.5 s
    Elector(api, a, "l", lambda lead, _t: changes.append(("n2", lead)), lease_duration=5.5)
    Elector(api, b, "l", lambda lead, _t: changes.append(("n3", lead)), lease_duration=5.5)
    k.run_until(3.0)
    holder.kill()
    k.run_until(20.0)
    winners = [n for n, lead in changes[1:] if lead]
    assert len(winners) == 1 and api.conflicts >= 1
    assert api.leases["l"].holder.startswith(winners[0] + "/") and api.leases["l"].transitions == 2


def test_429s_delay_requests_by_retry_after_and_fail_them_past_the_deadline() -> None:
    from l2lb.sim.api import RETRY_AFTER

    k, api = _api(["n1"])
    p = Proc(k, "n1", "allocator")
    done: list[tuple[bool, float]] = []
    api.throttle = 1.0  # every request answered 429: the deadline (1 s) passes first
    api.request(p, lambda: "ok", lambda ok, _r: done.append((ok, k.now)))
    k.run_until(5.0)
    assert done == [(False, done[0][1])] and 0.99 <= done[0][1] <= 1.01 and api.throttled >= 1
    api.throttle, api.timeout = 0.5, 30.0
    done.clear()
    for _ in range(40):
        api.request(p, lambda: "ok", lambda ok, _r: done.append((ok, k.now)))
    k.run_until(100.0)
    late = [t - 5.0 for ok, t in done if ok and t - 5.0 >= RETRY_AFTER]
    assert len(done) == 40 and all(ok for ok, _ in done) and 8 <= len(late) <= 32


def test_a_compaction_answers_every_watch_410_and_the_informers_list_again() -> None:
    k, api = _api(["n1"])
    p = Proc(k, "n1", "allocator")
    seen: list[tuple[str, bool]] = []
    api.watch(p, lambda key, obj: seen.append((key, obj is not None)))
    svc = {"metadata": {"namespace": "a", "name": "s"}, "spec": {"type": "LoadBalancer"}}
    api.put_service(svc)
    k.run_until(1.0)
    assert seen == [("a/s", True)]
    api.expire_watches()
    api.delete_service("a/s")  # happens while the watch is gone: only the re-list tells
    k.run_until(3.0)
    assert seen[-1] == ("a/s", False) and api.gone == 1 and not api.watchers[0].behind


def test_a_stopped_process_perceives_an_elided_stretch_on_sigcont() -> None:
    """Elision freezes what the running processes perceive (they were steady through the stretch); a SIGSTOPped
    process would perceive the whole stop in reality: on SIGCONT its clock jumps by what was elided while it
    was stopped, and its timers due within that are overdue (they run at once, in order)."""
    k = Kernel(1)
    stopped, running = Proc(k, "n1", "a"), Proc(k, "n2", "b")
    ran: list[tuple[str, float, float]] = []
    stopped.after(5.0, lambda: ran.append(("stopped", k.now, stopped.mono())))
    stopped.after(30.0, lambda: ran.append(("stopped-late", k.now, stopped.mono())))
    running.after(5.0, lambda: ran.append(("running", k.now, running.mono())))
    k.run_until(1.0)
    stopped.pause()
    k.run_until(2.0)
    k.elide(10.0)  # steady: nothing runs, the outside clock moves on
    stopped.resume()
    k.run_until(2.0)
    assert ran == [("stopped", 2.0, 12.0)]  # due at 5 on its clock, which reads 12 now
    assert stopped.mono() - k.now == 10.0 and running.mono() == k.now
    k.run_until(6.0)
    assert ran[-1] == ("running", 5.0, 5.0)  # the running process did not perceive the stretch
    k.run_until(21.0)
    assert ran[-1] == ("stopped-late", 20.0, 30.0)  # a timer beyond the stretch keeps its time on its clock
