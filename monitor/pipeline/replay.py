"""Replay capture files through the engine: the shared path of the CLI, the tests and reviews."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from monitor.blocklist.matcher import Matcher
from monitor.capture.files import ReplayStats, replay_frames
from monitor.capture.prefilter import PortConfig, tcpdump_path
from monitor.decode.packet import Packet
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import Engine, EngineConfig
from monitor.pipeline.identity import IdentityTap
from monitor.pipeline.parallel import replay_split, split_possible


def prefilter_for(config: EngineConfig) -> PortConfig | None:
    """The ports the BPF prefilter is built from, or None when tcpdump is not installed."""
    if tcpdump_path() is None:
        return None
    return PortConfig(config.dns_ports, config.tls_ports, config.http_ports, config.quic_ports)


def replay_files(
    paths: Sequence[Path],
    matcher: Matcher,
    emit: Callable[[Detection], None],
    config: EngineConfig | None = None,
    prefilter: PortConfig | None = None,
    *,
    identity: IdentityTap | None = None,
    on_packet: Callable[[Packet, int, bytes], None] | None = None,
    after_frame: Callable[[], None] | None = None,
    workers: int | None = None,
) -> tuple[Engine, ReplayStats]:
    """Replay ``paths`` in order; with ``identity`` the detections are attributed (the
    caller owns the store and closes it, which commits what the replay observed).
    ``on_packet`` is the engine's candidate-packet hook (evidence); ``after_frame`` runs
    after each frame (to release documents held for evidence as packet time advances).

    ``workers``: 1 runs in this process only; 2 parses DNS answers and QUIC in a forked worker
    (monitor.pipeline.parallel) when the prefilter is in use and no hook needs every
    packet in one place (``on_packet``, ``after_frame``); None (the default) does the same as 2
    for captures large enough to gain from it. Events and counters are the same either way.
    """
    engine = Engine(matcher, emit, config, identity=identity, on_packet=on_packet)
    stats = ReplayStats()
    paths = list(paths)
    if (
        workers != 1
        and prefilter is not None
        and on_packet is None
        and after_frame is None
        and split_possible(paths, engine.config, force=workers == 2)
    ):
        replay_split(paths, engine, prefilter, stats)
        return engine, stats
    process = engine.process
    frames = replay_frames(paths, prefilter, stats)
    if after_frame is None:
        for ts, linktype, data, _wirelen in frames:
            process(ts, linktype, data)
    else:
        for ts, linktype, data, _wirelen in frames:
            process(ts, linktype, data)
            after_frame()
    return engine, stats
