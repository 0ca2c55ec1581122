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
) -> tuple[Engine, ReplayStats]:
    """Replay ``paths`` in order; with ``identity`` the detections are attributed (the
    caller owns the store and closes it, which commits what the replay observed).
    ``on_packet`` is the engine's candidate-packet hook (evidence); ``after_frame`` runs
    after each frame (to release documents held for evidence as packet time advances)."""
    engine = Engine(matcher, emit, config, identity=identity, on_packet=on_packet)
    stats = ReplayStats()
    process = engine.process
    frames = replay_frames(list(paths), prefilter, stats)
    if after_frame is None:
        for ts, linktype, data, _wirelen in frames:
            process(ts, linktype, data)
    else:
        for ts, linktype, data, _wirelen in frames:
            process(ts, linktype, data)
            after_frame()
    return engine, stats
