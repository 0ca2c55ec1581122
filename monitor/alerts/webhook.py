"""Alerts as JSON POSTs to a webhook (Slack, Teams, a SOAR, a ticketing bridge).

One document per request, because chat webhooks take one message per POST and a SOAR creates one
case per alert. The status code is a real acknowledgement, which makes this the sink with the
tightest at-least-once bound: a duplicate only happens when the receiver processed a request but
the answer never reached us (timeout, connection reset, crash between answer and commit), so at
most one duplicate per such failure. Each request carries ``Idempotency-Key: <event.id>`` so a
receiver that supports it can drop that duplicate by itself.

Status handling:

- 2xx: delivered.
- 408, 429, 5xx, connection errors, timeouts, TLS errors: retried with exponential backoff and
  jitter (``Retry-After`` honoured up to the backoff cap), forever; the spool bounds the wait.
- any other 4xx, and 3xx (we never follow redirects: urllib would turn a redirected POST into a
  GET and we would count a lost alert as delivered): the receiver refused *this* document and
  will refuse it again. It goes to the dead-letter file ``<spool_dir>/dead-letter.jsonl`` with
  the status and reason, is counted in ``dead_lettered`` and logged as an error, and the queue
  moves on. We chose that over retrying because one malformed or oversized alert would
  otherwise hold every later alert behind it until the spool fills and new ones are refused.
  A wrong URL or token makes every alert land there; each entry holds the original document
  under ``document`` so the file can be replayed once the configuration is fixed.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monitor.alerts.sinks import (
    Backoff,
    Document,
    JsonLinesFileSink,
    PermanentDeliveryError,
    SpoolingSink,
    TransientDeliveryError,
    encode_json,
)
from monitor.alerts.spool import FsyncPolicy, Spool

USER_AGENT = "egress-monitor"
_RETRYABLE = frozenset({408, 429})
_MAX_RESPONSE = 64 * 1024


def alert_text(doc: Mapping[str, Any]) -> str:
    """One human line for chat webhooks (Slack and Teams render a top-level ``text``)."""

    def get(*path: str) -> Any:
        cur: Any = doc
        for key in path:
            cur = cur.get(key) if isinstance(cur, Mapping) else None
        return cur

    severity = get("match", "severity") or get("event", "severity") or "unknown"
    vendor = get("match", "vendor_name") or get("match", "vendor") or "a listed service"
    parts = [f"egress-monitor: {str(severity).upper()} {get('event', 'action') or 'alert'}"]
    parts.append(f"to {vendor}")
    if get("match", "name"):
        parts.append(f"({get('match', 'name')})")
    if get("match", "evidence"):
        parts.append(f"via {get('match', 'evidence')}")
    who = [str(v) for v in (get("source", "ip"), get("source", "domain")) if v]
    user = get("source", "user", "name")
    if user:
        domain = get("source", "user", "domain")
        who.append(f"{domain}\\{user}" if domain else str(user))
    if who:
        parts.append("from " + " ".join(who))
    if get("@timestamp"):
        parts.append(f"at {get('@timestamp')}")
    if get("event", "id"):
        parts.append(f"[id {get('event', 'id')}]")
    return " ".join(parts)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class WebhookTransport:
    """POSTs each payload (already JSON) to ``url``; see the module docstring for statuses."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url must be http(s)://host/..., not {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        # Chat webhook URLs carry their secret in the path: logs and names get only the origin.
        self.origin = f"{parts.scheme}://{self._host}:{self._port}"
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._ssl_context = (
            ssl_context
            if ssl_context is not None
            else (ssl.create_default_context() if self._https else None)
        )

    def _post(self, body: bytes, event_id: str | None) -> tuple[int, str, str | None, bytes]:
        if self._https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._ssl_context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **self._headers,
        }
        if event_id:
            headers["Idempotency-Key"] = event_id
        try:
            conn.request("POST", self._target, body=body, headers=headers)
            resp = conn.getresponse()
            snippet = resp.read(_MAX_RESPONSE)
            return resp.status, resp.reason, resp.getheader("Retry-After"), snippet
        finally:
            conn.close()

    def deliver(self, payloads: Sequence[bytes]) -> None:
        for done, body in enumerate(payloads):
            try:
                event_id = json.loads(body).get("event", {}).get("id")
            except (ValueError, AttributeError):
                event_id = None
            try:
                status, reason, retry_after, snippet = self._post(body, event_id)
            except (OSError, http.client.HTTPException) as exc:
                raise TransientDeliveryError(f"webhook {self.origin}: {exc!r}", done) from exc
            if 200 <= status < 300:
                continue
            text = f"webhook {self.origin}: HTTP {status} {reason}: {snippet[:200]!r}"
            if status in _RETRYABLE or status >= 500:
                raise TransientDeliveryError(text, done, _retry_after(retry_after))
            raise PermanentDeliveryError(text, done)

    def close(self) -> None:
        pass


def webhook_sink(
    spool_dir: str | os.PathLike[str],
    *,
    url: str,
    name: str | None = None,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
    text: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    spool_max_bytes: int = 64 * 1024 * 1024,
    spool_max_records: int = 100_000,
    spool_fsync: FsyncPolicy = "batch",
    max_batch: int = 1,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] | None = None,
) -> SpoolingSink:
    """A spool-backed webhook sink; ``text=True`` adds a top-level ``text`` line for Slack and
    Teams incoming webhooks (the rest of the document rides along for anything that parses it).

    ``max_batch=1`` commits after every acknowledged POST, which is what bounds duplicates to
    one per crash or lost response; a larger batch trades that bound for fewer commit fsyncs."""
    transport = WebhookTransport(url, timeout=timeout, headers=headers, ssl_context=ssl_context)
    spool_path = Path(spool_dir)
    spool = Spool(
        spool_path,
        max_bytes=spool_max_bytes,
        max_records=spool_max_records,
        fsync=spool_fsync,
    )
    try:
        dead_letter = JsonLinesFileSink(
            spool_path / "dead-letter.jsonl", max_bytes=64 * 1024 * 1024, keep=3
        )
    except BaseException:
        spool.close()
        raise

    def encode(doc: Document) -> bytes:
        return encode_json({**doc, "text": alert_text(doc)} if text else doc)

    return SpoolingSink(
        name or f"webhook-{transport.origin}",
        transport,
        spool,
        encode,
        max_batch=max_batch,
        backoff=backoff,
        sleep=sleep,
        dead_letter=dead_letter,
    )
