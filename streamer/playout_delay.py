"""Ask the player's browser to show each frame the moment it is decoded.

The RTP header extension playout-delay (http://www.webrtc.org/experiments/rtp-hdrext/
playout-delay) carries a minimum and a maximum playout delay in 10 ms units, 12 bits each.
With min = max = 0, libwebrtc drops its jitter-buffer target and hands frames to Chromium's
low-latency renderer instead of its smoothing one; cloud-gaming services send exactly this.

aiortc neither negotiates nor writes the extension. This module adds it to aiortc's video
header-extension list (so an answer accepts the browser's offer of it) and appends it to
every RTP packet a sender serializes on a stream where it was negotiated. Neither hook is a
public aiortc API: tests/test_playout_delay.py fails loudly if an upgrade moves them.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import codecs, rtp
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from streamer.errors import StreamerError

log = logging.getLogger(__name__)

URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
ZERO_DELAY = bytes(3)  # min = 0, max = 0
_ID_ATTRIBUTE = "_gamecast_playout_delay_id"


class PlayoutDelayHookError(StreamerError, RuntimeError):
    """aiortc changed where header extensions are negotiated or written."""


def negotiated_id(extension_map: Any) -> int | None:
    """The extension id a configured aiortc HeaderExtensionsMap writes playout-delay under."""
    return getattr(extension_map, _ID_ATTRIBUTE, None)


def install_playout_delay() -> None:
    """Negotiate playout-delay and send min = max = 0 on every video packet (idempotent)."""
    extension_map = getattr(rtp, "HeaderExtensionsMap", None)
    video_extensions = getattr(codecs, "HEADER_EXTENSIONS", {}).get("video")
    if extension_map is None or video_extensions is None:
        raise PlayoutDelayHookError(
            "aiortc no longer exposes rtp.HeaderExtensionsMap or codecs.HEADER_EXTENSIONS: "
            "streamer/playout_delay.py must be ported"
        )
    if getattr(extension_map, "_gamecast_playout_delay", False):
        return
    if all(extension.uri != URI for extension in video_extensions):
        free_id = max(extension.id for extension in video_extensions) + 1
        video_extensions.append(RTCRtpHeaderExtensionParameters(id=free_id, uri=URI))

    stock_configure = extension_map.configure
    stock_set = extension_map.set

    def configure(self: Any, parameters: Any) -> None:
        stock_configure(self, parameters)
        ids = [e.id for e in parameters.headerExtensions if e.uri == URI]
        setattr(self, _ID_ATTRIBUTE, ids[0] if ids else None)

    def set_values(self: Any, values: Any) -> tuple[int, bytes]:
        profile, data = stock_set(self, values)
        extension_id = negotiated_id(self)
        if extension_id is None:
            return profile, data
        extensions = [*rtp.unpack_header_extensions(profile, data), (extension_id, ZERO_DELAY)]
        return rtp.pack_header_extensions(extensions)

    extension_map.configure = configure
    extension_map.set = set_values
    extension_map._gamecast_playout_delay = True
    log.info("playout-delay min=max=0 is offered to players")
