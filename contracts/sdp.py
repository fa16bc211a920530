"""What a session description says, read the same way by the container and the bot.

Plain text over RFC 8866 (SDP) and RFC 8829 (JSEP): no SDP library, so both sides and the
tests read an offer or answer without a WebRTC stack.
"""

from __future__ import annotations

import re

# A host candidate whose address is an mDNS name (draft-ietf-mmusic-mdns-ice-candidates), as
# Chromium sends by default to hide the player's local IP.
_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ [0-9a-fA-F-]+\.local \d+ .*$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/")


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

    The sender sends with the first payload type of the section it answered (RFC 8829,
    section 5.3.1), as its m= line lists it; its name comes from that type's a=rtpmap.
    """
    first: str | None = None
    names: dict[str, str] = {}
    in_video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            if in_video:
                break
            fields = line[2:].split()
            in_video = fields[0] == "video" and len(fields) > 3
            first = fields[3] if in_video else None
        elif in_video and (match := _RTPMAP.match(line)):
            names[match.group(1)] = match.group(2)
    return None if first is None or first not in names else f"video/{names[first]}"
