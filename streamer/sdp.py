"""SDP adjustments the container makes to a player's offer before aiortc reads it."""

from __future__ import annotations

import re

from aiortc.sdp import SessionDescription

# A host candidate whose address is an mDNS name (draft-ietf-mmusic-mdns-ice-candidates), as
# Chromium sends by default to hide the player's local IP.
_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ [0-9a-fA-F-]+\.local \d+ .*$")


def without_mdns_candidates(sdp: str) -> str:
    """Drop ICE candidates that name an mDNS host.

    A container cannot resolve a player's .local name (it is not on the player's link), and
    aioice would spend a full second trying before it gives up. The player's own connectivity
    checks reach us anyway and become peer-reflexive candidates (RFC 8445 section 7.3.1.3), so
    nothing is lost but the wait.
    """
    lines = sdp.split("\r\n")
    return "\r\n".join(line for line in lines if not _MDNS_CANDIDATE.match(line))


def negotiated_video_codec(sdp: str) -> str | None:
    """The MIME type an answer settles on for its first video section: the codec sent.

    aiortc sends with the first codec of the section it answered, as the SDP lists it.
    """
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "video" and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType
    return None
