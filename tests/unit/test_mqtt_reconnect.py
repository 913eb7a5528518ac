"""The MQTT link's reconnect pacing, session CONNECT options and the backlog of unrouted messages."""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes

from runtime.mqtt_reconnect import RECONNECT_JITTER, ReconnectPacer
from runtime.mqtt_session import Backlog, SessionOptions
from runtime.mqtt_settings import MqttSettings
from runtime.sources._backoff import Backoff


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pacer(
    min_s: float = 0.5, max_s: float = 30.0, seed: int = 1, stable_s: float = 10.0
) -> tuple[ReconnectPacer, FakeClock]:
    clock = FakeClock()
    backoff = Backoff(min_s, max_s, jitter=RECONNECT_JITTER, rng=random.Random(seed))
    return ReconnectPacer(backoff, stable_s=stable_s, clock=clock), clock


# ------------------------------------------------------------------ delay sequence


def test_first_attempt_goes_at_once_then_delays_double_within_jitter_bounds_up_to_the_cap() -> None:
    p, _ = pacer(0.5, 30.0)
    assert p.next_delay() == 0.0
    for n in range(30):
        nominal = min(30.0, 0.5 * 2**n)
        delay = p.next_delay()
        assert nominal * (1 - RECONNECT_JITTER) <= delay <= nominal, (n, delay)
    assert p.attempts == 30


def test_delays_grow_on_average_until_the_cap() -> None:
    p, _ = pacer(0.1, 5.0, seed=3)
    p.next_delay()
    delays = [p.next_delay() for _ in range(12)]
    # each nominal value is twice the previous one, so even the extremes of the jitter range
    # (a draw at b/2 after one at b) never shrink the delay before the cap is reached
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays[:6]))
    assert delays[5] > delays[0] * 8
    assert max(delays) <= 5.0
    assert min(delays[7:]) >= 2.5  # at the cap: within [max/2, max]


def test_jitter_spreads_a_fleet_that_lost_the_broker_at_the_same_moment() -> None:
    """1000 devices, each with its own random source, draw their third reconnect delay."""
    draws = []
    for seed in range(1000):
        p, _ = pacer(1.0, 60.0, seed=seed)
        p.next_delay()  # the first connect
        p.next_delay()
        p.next_delay()
        draws.append(p.next_delay())  # nominal 4 s
    assert 2.0 <= min(draws) < 2.1
    assert 3.9 < max(draws) <= 4.0
    assert statistics.pstdev(draws) > 0.5  # uniform over [2, 4] has 0.58
    buckets = [sum(1 for d in draws if 2.0 + i * 0.5 <= d < 2.5 + i * 0.5) for i in range(4)]
    assert min(buckets) > 200, buckets  # no clustering in any quarter of the range


def test_the_schedule_starts_again_only_after_a_stable_connection() -> None:
    p, clock = pacer(1.0, 60.0, stable_s=10.0)
    p.next_delay()
    for _ in range(5):
        p.next_delay()  # nominal 1, 2, 4, 8, 16
    p.connected()
    clock.now += 2.0  # the broker dropped us after 2 s: no reset
    assert 16.0 <= p.next_delay() <= 32.0
    p.connected()
    clock.now += 10.0  # up for 10 s: the next outage starts from min again
    assert 0.5 <= p.next_delay() <= 1.0
    assert p.attempts == 1
    assert 1.0 <= p.next_delay() <= 2.0


def test_a_failed_attempt_after_a_reset_does_not_reset_again() -> None:
    p, clock = pacer(1.0, 60.0, stable_s=0.0)
    p.next_delay()
    p.connected()
    assert 0.5 <= p.next_delay() <= 1.0
    clock.now += 100.0  # no connect in between: the schedule goes on
    assert 1.0 <= p.next_delay() <= 2.0


# ------------------------------------------------------------------------ waiting


def test_wait_returns_true_after_the_delay() -> None:
    p = ReconnectPacer(Backoff(0.05, 0.05, jitter=0.0))
    assert p.wait()  # first attempt: no delay
    started = time.monotonic()
    assert p.wait()
    assert 0.04 <= time.monotonic() - started < 1.0
    assert p.last_delay_s == 0.05


def test_stop_cuts_a_long_wait_short_and_later_waits_return_at_once() -> None:
    p = ReconnectPacer(Backoff(30.0, 60.0))
    p.next_delay()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(p.wait()))
    waiter.start()
    time.sleep(0.05)  # let it start waiting; correctness doesn't depend on it
    started = time.monotonic()
    p.stop()
    waiter.join(2.0)
    assert not waiter.is_alive()
    assert result == [False]
    assert time.monotonic() - started < 0.5
    attempts = p.attempts
    assert p.wait() is False
    assert p.attempts == attempts  # nothing drawn once stopped
    assert p.stopped


def test_for_link_uses_the_settings_bounds() -> None:
    p = ReconnectPacer.for_link(0.2, 0.8)
    p.next_delay()
    delays = [p.next_delay() for _ in range(10)]
    assert 0.1 <= delays[0] <= 0.2
    assert all(0.1 <= d <= 0.8 for d in delays)


def test_pacer_rejects_a_negative_stable_time() -> None:
    with pytest.raises(ValueError, match="stable_s"):
        ReconnectPacer(Backoff(1.0, 2.0), stable_s=-1)


# ------------------------------------------------------------------ CONNECT options


def test_mqtt5_connect_resumes_the_session_with_expiry_and_packet_limit_by_default() -> None:
    options = SessionOptions.from_settings(MqttSettings())
    clean_start, properties = options.connect_args(mqtt.MQTTv5)
    assert clean_start is False
    assert properties is not None and properties.packetType == PacketTypes.CONNECT
    assert properties.SessionExpiryInterval == 3600
    assert properties.MaximumPacketSize == 1_048_576
    assert options.describe(mqtt.MQTTv5) == "MQTT 5, resumable session (expiry 3600 s)"


def test_mqtt5_clean_start_and_no_limits_are_configurable() -> None:
    settings = MqttSettings(clean_start=True, session_expiry_s=0, max_packet_bytes=None)
    clean_start, properties = SessionOptions.from_settings(settings).connect_args(mqtt.MQTTv5)
    assert clean_start is True
    assert properties is not None and properties.SessionExpiryInterval == 0
    assert not hasattr(properties, "MaximumPacketSize")
    assert SessionOptions(expiry_s=None).connect_args(mqtt.MQTTv5) == (False, None)


def test_mqtt311_connect_passes_nothing_paho_would_refuse() -> None:
    options = SessionOptions.from_settings(MqttSettings(protocol="3.1.1"))
    assert options.connect_args(mqtt.MQTTv311) == (mqtt.MQTT_CLEAN_START_FIRST_ONLY, None)
    assert options.describe(mqtt.MQTTv311) == "MQTT 3.1.1"


# ------------------------------------------------------------------------ backlog


@dataclass(frozen=True, slots=True)
class Msg:
    topic: str
    payload: bytes
    received_mono_ns: int


class NsClock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


def test_backlog_gives_matching_messages_back_oldest_first_and_keeps_the_rest() -> None:
    clock = NsClock()
    backlog: Backlog[Msg] = Backlog(clock_ns=clock)
    for i, topic in enumerate(["s/a", "x/b", "s/c", "x/d"]):
        assert backlog.add(Msg(topic, b"%d" % i, clock.now)) == 0
    taken = backlog.take(lambda t: mqtt.topic_matches_sub("s/#", t))
    assert [m.topic for m in taken] == ["s/a", "s/c"]
    assert (len(backlog), backlog.bytes) == (2, 2)
    assert backlog.take(lambda t: t.startswith("s/")) == []
    assert [m.topic for m in backlog.take(lambda t: True)] == ["x/b", "x/d"]
    assert (len(backlog), backlog.bytes, backlog.dropped) == (0, 0, 0)


def test_backlog_drops_the_oldest_beyond_its_count_and_byte_bounds() -> None:
    clock = NsClock()
    backlog: Backlog[Msg] = Backlog(max_messages=3, max_bytes=10, clock_ns=clock)
    for i in range(5):
        backlog.add(Msg(f"t/{i}", b"x", clock.now))
    assert [m.topic for m in backlog.take(lambda t: True)] == ["t/2", "t/3", "t/4"]
    assert backlog.dropped == 2
    backlog.add(Msg("a", b"123456", clock.now))
    assert backlog.add(Msg("b", b"123456", clock.now)) == 1  # 12 bytes > 10: "a" goes
    assert backlog.add(Msg("huge", b"x" * 11, clock.now)) == 1  # never fits: dropped itself
    assert [m.topic for m in backlog.take(lambda t: True)] == ["b"]
    assert backlog.dropped == 4


def test_backlog_expires_messages_held_longer_than_hold_s() -> None:
    clock = NsClock()
    backlog: Backlog[Msg] = Backlog(hold_s=30.0, clock_ns=clock)
    backlog.add(Msg("old", b"1", clock.now))
    clock.now += 20 * 10**9
    backlog.add(Msg("new", b"2", clock.now))
    clock.now += 11 * 10**9  # "old" is 31 s old now
    assert [m.topic for m in backlog.take(lambda t: True)] == ["new"]
    assert backlog.dropped == 1


def test_backlog_rejects_negative_bounds() -> None:
    with pytest.raises(ValueError, match="bounds"):
        Backlog(max_messages=-1)
