"""Values more than one key's parser, default, docs and schema use: said once here."""

from __future__ import annotations

LOOPBACK = "127.0.0.1"  # where an engine (and the host gateway) listens unless told
PORT_RANGE = (1, 65535)  # a TCP port
GATEWAY_LISTEN = f"{LOOPBACK}:8000"  # the host gateway's default HOST:PORT
