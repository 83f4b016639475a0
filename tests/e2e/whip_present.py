#!/usr/bin/python3
"""An independent WHIP client presents: aiortc (Debian's python3-aiortc), not our code.

Two aiortc clients publish over WHIP (RFC 9725) to a Tessera server started here: Red has
a camera; Pat has a camera (green) and, on a second video m-line marked
`a=content:slides` (RFC 4796), its content (a yellow 4:3 slide). Both receive the room's
picture on their sendrecv camera transceiver. Red's picture must show the presentation
layout: the slide fitted (pillarboxed) in the content area, and a strip of exactly two
cameras, Pat's (the presenter's) first: the content is composed as content, not as a third
camera. Then Pat's session is deleted and the room goes back to its grid.

Run in a loopback-only namespace (scripts/test.sh). Exit status 0 = pass.
"""

import json
import re
import time
import urllib.request

from aio import Peer, Solid, http, run, start_server, stop_server, wait_for

W, H = 640, 360
RED, GREEN, YELLOW = (220, 30, 30), (30, 200, 30), (230, 220, 40)


def log(*a):
    print(f"[whip-present {time.strftime('%H:%M:%S')}]", *a, flush=True)


def mark_content(sdp, mid):
    """Adds `a=content:slides` to the m-section with `mid` (aiortc does not write it)."""
    return re.sub(rf"(a=mid:{re.escape(mid)}\r\n)", r"\1a=content:slides\r\n", sdp, count=1)


class Client(Peer):
    def __init__(self, name, camera, content=None):
        super().__init__(name)
        self.pc.addTrack(Solid(camera, (320, 180)))
        if content is not None:
            self.pc.addTrack(Solid(content, (320, 240)))

    async def publish(self, base, room, present):
        def second_video_is_content(sdp):
            mids = re.findall(r"m=video[^\r\n]*\r\n(?:(?!m=)[^\r\n]*\r\n)*?a=mid:(\S+)", sdp)
            assert len(mids) == 2, f"two video m-lines expected: {mids}"
            return mark_content(sdp, mids[1])

        await self.post(base, f"/whip/{room}?name={self.name}", second_video_is_content if present else None)


def mean(img, cx, cy, r=6):
    return img[cy - r : cy + r, cx - r : cx + r].reshape(-1, 3).mean(axis=0)


def near(a, rgb, tol=40):
    return all(abs(float(x) - y) < tol for x, y in zip(a, rgb))


MEDIA_IP = "10.204.0.1"


async def main():
    server, base = start_server(MEDIA_IP, "taio", (W, H))
    try:
        log("server at", base)
        red = Client("Red", RED)
        await red.publish(base, "aio", present=False)
        pat = Client("Pat", GREEN, content=YELLOW)
        await pat.publish(base, "aio", present=True)
        assert "a=content:slides" in pat.answer, "the answer echoes a=content:slides"

        # The presentation layout at 640x360 (layouts/presentation.json): content area
        # 640x284; the 4:3 slide fitted: 378x284 at x 130. Strip: two 128x72 tiles, gap 4,
        # centred: x 190 and 322, y 288.
        def composed():
            img = red.last
            if img is None or img.shape[:2] != (H, W):
                return False, None if img is None else img.shape
            got = {
                "content": mean(img, 320, 142),
                "content_edge": mean(img, 140, 142),
                "letterbox": mean(img, 40, 142),
                "strip1": mean(img, 254, 324),
                "strip2": mean(img, 386, 324),
                "strip3": mean(img, 518, 324),
            }
            ok = (
                near(got["content"], YELLOW)
                and near(got["content_edge"], YELLOW)
                and max(got["letterbox"]) < 40
                and near(got["strip1"], GREEN)
                and near(got["strip2"], RED)
                and not near(got["strip3"], YELLOW)
                and not near(got["strip3"], GREEN)
            )
            return ok, {k: [round(float(x)) for x in v] for k, v in got.items()}

        got = await wait_for("Red to see Pat's slide as content", composed)
        log("Red sees", json.dumps(got))
        with urllib.request.urlopen(base + "/api/rooms", timeout=5) as r:
            rooms = json.loads(r.read())
        room = next(r for r in rooms if r["room"] == "aio")
        assert room["layout"] == "presentation", room["layout"]
        assert len(room["participants"]) == 2, "content is no participant"

        # Pat's session ends: the room's grid again, without the slide.
        status, _, _ = http(base, pat.location, method="DELETE")
        assert status == 200, status
        await pat.pc.close()

        def grid():
            img = red.last
            # (Red alone now: its personal grid holds nobody, and no slide.)
            ok = img is not None and not near(mean(img, 320, 142), YELLOW) and room_layout(base) == "grid"
            return ok, None if img is None else [round(float(x)) for x in mean(img, 320, 180)]

        await wait_for("the grid after the presentation", grid)
        log("PASS: aiortc's a=content:slides m-line composed as content; back to the grid after")
        await red.pc.close()
    finally:
        stop_server(server)


def room_layout(base):
    with urllib.request.urlopen(base + "/api/rooms", timeout=5) as r:
        rooms = json.loads(r.read())
    return next((r["layout"] for r in rooms if r["room"] == "aio"), None)


if __name__ == "__main__":
    run(main, 120)
