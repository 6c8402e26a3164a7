"""Server process set-up: WebSocket limits when daphne serves (uvicorn gets them from
config/serve.py), and the garbage collector's settings.

WebSocket limits, under daphne.

PROTOCOL.md closes a text frame over the maximum size with 1009. daphne's WebSocket
layer (autobahn) must be the one to do it: an application may only close with 1000 or
3000-4999, and by default autobahn drops the TCP connection instead of sending a close
frame when a message is too big. This sets its size limits from REALTIME_MAX_FRAME_BYTES
and makes it close properly (`failByDrop=False`). Imported by config/asgi.py, which daphne
loads before it builds its WebSocket factory; under other servers it does nothing.
"""

from __future__ import annotations

import gc

from django.conf import settings


def daphne_websocket_limits_install() -> bool:
    """Wrap daphne's factory options once; True when daphne is there."""
    try:
        from daphne.ws_protocol import WebSocketFactory
    except ImportError:
        return False
    original = WebSocketFactory.setProtocolOptions
    if getattr(original, "carbon_limits", False):
        return True

    def set_protocol_options(self, *args, **kwargs):
        kwargs["maxMessagePayloadSize"] = settings.REALTIME_MAX_FRAME_BYTES
        kwargs["maxFramePayloadSize"] = settings.REALTIME_MAX_FRAME_BYTES
        kwargs["failByDrop"] = False
        return original(self, *args, **kwargs)

    set_protocol_options.carbon_limits = True
    WebSocketFactory.setProtocolOptions = set_protocol_options
    return True


def garbage_collector_tune() -> None:
    """Keep full garbage collections of a busy server process short and rare.

    Everything loaded at start-up (Django, the apps, the libraries: well over 100,000
    objects) is moved out of the collector's sight with gc.freeze(), so a full
    collection scans only what connections made since. A larger first threshold lets
    the many short-lived objects of each delivery die by reference counting before a
    young collection would promote them, and promotions are what make full collections
    come round. Profiled before this, a daphne process with 1,000 to 2,000 connections
    stopped for 200 to 450 ms in full collections (docs/benchmarks.md).
    """
    if not settings.REALTIME_GC_TUNE:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.REALTIME_GC_THRESHOLDS)
