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

import asyncio
import json
import re
import time
import urllib.request

from aio import Solid, http, one_ice_session, run, start_server, stop_server, wait_for
from aiortc import RTCPeerConnection, RTCSessionDescription

W, H = 640, 360
RED, GREEN, YELLOW = (220, 30, 30), (30, 200, 30), (230, 220, 40)


def log(*a):
    print(f"[whip-present {time.strftime('%H:%M:%S')}]", *a, flush=True)


def mark_content(sdp, mid):
    """Adds `a=content:slides` to the m-section with `mid` (aiortc does not write it)."""
    return re.sub(rf"(a=mid:{re.escape(mid)}\r\n)", r"\1a=content:slides\r\n", sdp, count=1)


class Client:
    def __init__(self, name, camera, content=None):
        self.name = name
        self.pc = RTCPeerConnection()
        self.pc.addTrack(Solid(camera, (320, 180)))
        if content is not None:
            self.pc.addTrack(Solid(content, (320, 240)))
        self.last = None
        self.frames = 0

        @self.pc.on("track")
        def on_track(track):
            if track.kind == "video":
                asyncio.ensure_future(self.read(track))

    async def read(self, track):
        while True:
            try:
                f = await track.recv()
            except Exception:
                return
            self.last = f.to_ndarray(format="rgb24")
            self.frames += 1

    async def publish(self, base, room, present):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = one_ice_session(self.pc.localDescription.sdp)
        if present:
            mids = re.findall(r"m=video[^\r\n]*\r\n(?:(?!m=)[^\r\n]*\r\n)*?a=mid:(\S+)", sdp)
            assert len(mids) == 2, f"two video m-lines expected: {mids}"
            sdp = mark_content(sdp, mids[1])
        status, headers, answer = http(base, f"/whip/{room}?name={self.name}", sdp.encode())
        assert status == 201, f"{self.name}: WHIP POST {status}: {answer}"
        self.location = headers.get("Location") or headers.get("location")
        self.answer = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))


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
