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
import fractions
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import numpy
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import VideoFrame

BIN = os.environ.get("TESSERA_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "target", "release", "tessera"
)
W, H = 640, 360
RED, GREEN, YELLOW = (220, 30, 30), (30, 200, 30), (230, 220, 40)


def log(*a):
    print(f"[whip-present {time.strftime('%H:%M:%S')}]", *a, flush=True)


class Solid(VideoStreamTrack):
    """A solid colour at 30 fps."""

    def __init__(self, rgb, size):
        super().__init__()
        w, h = size
        self.frame = numpy.zeros((h, w, 3), numpy.uint8)
        self.frame[:, :] = rgb

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        f = VideoFrame.from_ndarray(self.frame, format="rgb24")
        f.pts, f.time_base = pts, time_base
        return f


def mark_content(sdp, mid):
    """Adds `a=content:slides` to the m-section with `mid` (aiortc does not write it)."""
    return re.sub(rf"(a=mid:{re.escape(mid)}\r\n)", r"\1a=content:slides\r\n", sdp, count=1)


def post(base, path, body=None, method="POST"):
    req = urllib.request.Request(base + path, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/sdp")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


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
        sdp = self.pc.localDescription.sdp
        # aiortc 1.4 (Debian 12) gives every m-line ICE credentials of its own although
        # it offers them BUNDLEd; a bundle is one ICE session (RFC 8843), so the first
        # m-line's are written into all (aiortc follows the server's BUNDLE answer).
        ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)
        pwd = re.search(r"a=ice-pwd:(\S+)", sdp).group(1)
        sdp = re.sub(r"a=ice-ufrag:\S+", f"a=ice-ufrag:{ufrag}", sdp)
        sdp = re.sub(r"a=ice-pwd:\S+", f"a=ice-pwd:{pwd}", sdp)
        if present:
            mids = re.findall(r"m=video[^\r\n]*\r\n(?:(?!m=)[^\r\n]*\r\n)*?a=mid:(\S+)", sdp)
            assert len(mids) == 2, f"two video m-lines expected: {mids}"
            sdp = mark_content(sdp, mids[1])
        status, headers, answer = post(base, f"/whip/{room}?name={self.name}", sdp.encode())
        assert status == 201, f"{self.name}: WHIP POST {status}: {answer}"
        self.location = headers.get("Location") or headers.get("location")
        self.answer = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))


def mean(img, cx, cy, r=6):
    return img[cy - r : cy + r, cx - r : cx + r].reshape(-1, 3).mean(axis=0)


def near(a, rgb, tol=40):
    return all(abs(float(x) - y) < tol for x, y in zip(a, rgb))


async def wait_for(what, cond, secs=30):
    until = time.time() + secs
    last = None
    while time.time() < until:
        ok, last = cond()
        if ok:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


# aiortc's ICE (aioice) never offers loopback addresses: the namespace gets a "LAN", a
# veth pair with a private address (nothing answers beyond it), and media binds there.
MEDIA_IP = "10.204.0.1"


def make_lan():
    for cmd in (
        ["link", "add", "taio0", "type", "veth", "peer", "name", "taio1"],
        ["addr", "add", f"{MEDIA_IP}/24", "dev", "taio0"],
        ["link", "set", "taio0", "up"],
        ["link", "set", "taio1", "up"],
    ):
        r = subprocess.run(["ip", *cmd], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(
                f"cannot give the namespace a veth pair (run as root inside unshare -n, as "
                f"scripts/test.sh does): ip {' '.join(cmd)}: {r.stderr.strip()}"
            )


async def main():
    make_lan()
    server = subprocess.Popen(
        [BIN, "--listen", "127.0.0.1:0", "--media-ip", MEDIA_IP, "--video-size", f"{W}x{H}"],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info,webrtc=warn,rtc=warn")},
    )
    try:
        base = None
        for line in server.stdout:
            m = re.search(r"listening on (http://[\d.:]+)", line)
            if m:
                base = m.group(1)
                break
        assert base, "the server did not start"
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
        status, _, _ = post(base, pat.location, method="DELETE")
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
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()


def room_layout(base):
    with urllib.request.urlopen(base + "/api/rooms", timeout=5) as r:
        rooms = json.loads(r.read())
    return next((r["layout"] for r in rooms if r["room"] == "aio"), None)


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    except Exception as e:  # noqa: BLE001 - the test's verdict
        print(f"FAIL: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
