#!/usr/bin/python3
"""An independent WHEP client watches: aiortc (Debian's python3-aiortc), not our code.

Three aiortc clients publish over WHIP (RFC 9725) to a Tessera server started here, each
a solid colour and a distinct tone (Red 400 Hz, Green 650 Hz, Blue 1000 Hz). A fourth
aiortc client offers only `recvonly` audio and video to `POST /whep/{room}` (WHEP, as the
draft describes it: offer in the body, 201 with the answer and a Location). It must see
all three colours in one picture (the audience view: a shared grid, nobody cut out) and
hear all three tones in one mix; it is not listed as a participant; DELETE on its
Location ends it.

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
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import AudioFrame, VideoFrame

BIN = os.environ.get("TESSERA_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "target", "release", "tessera"
)
W, H = 640, 360
PEOPLE = [("Red", (220, 30, 30), 400.0), ("Green", (30, 200, 30), 650.0), ("Blue", (30, 30, 220), 1000.0)]


def log(*a):
    print(f"[whep-watch {time.strftime('%H:%M:%S')}]", *a, flush=True)


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


class Tone(MediaStreamTrack):
    """A sine at `hz`, 48 kHz mono, 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, hz):
        super().__init__()
        self.hz = hz
        self.n = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        due = self.start + self.n * 960 / 48000
        await asyncio.sleep(max(0.0, due - time.time()))
        t = (numpy.arange(960) + self.n * 960) / 48000
        samples = (numpy.sin(2 * numpy.pi * self.hz * t) * 8000).astype(numpy.int16)
        f = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        f.sample_rate = 48000
        f.pts, f.time_base = self.n * 960, fractions.Fraction(1, 48000)
        self.n += 1
        return f


def http(base, path, body=None, method="POST"):
    req = urllib.request.Request(base + path, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/sdp")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def one_ice_session(sdp):
    """aiortc 1.4 (Debian 12) gives every m-line ICE credentials of its own although it
    offers them BUNDLEd; a bundle is one ICE session (RFC 8843), so the first m-line's are
    written into all (aiortc follows the server's BUNDLE answer)."""
    ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)
    pwd = re.search(r"a=ice-pwd:(\S+)", sdp).group(1)
    sdp = re.sub(r"a=ice-ufrag:\S+", f"a=ice-ufrag:{ufrag}", sdp)
    return re.sub(r"a=ice-pwd:\S+", f"a=ice-pwd:{pwd}", sdp)


class Peer:
    def __init__(self, name):
        self.name = name
        self.pc = RTCPeerConnection()
        self.last = None
        self.frames = 0
        self.audio = []

        @self.pc.on("track")
        def on_track(track):
            asyncio.ensure_future(self.read(track))

    async def read(self, track):
        while True:
            try:
                f = await track.recv()
            except Exception:
                return
            if track.kind == "video":
                self.last = f.to_ndarray(format="rgb24")
                self.frames += 1
            else:
                a = f.to_ndarray().reshape(-1)
                channels = len(f.layout.channels)
                self.audio.append(a.reshape(-1, channels).mean(axis=1) if channels > 1 else a)
                self.audio = self.audio[-100:]

    async def post(self, base, path):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = one_ice_session(self.pc.localDescription.sdp)
        status, headers, answer = http(base, path, sdp.encode())
        assert status == 201, f"{self.name}: POST {path} {status}: {answer}"
        self.location = headers.get("Location") or headers.get("location")
        self.answer = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))


def share(img, rgb, tol=45):
    d = numpy.abs(img.astype(numpy.int32) - numpy.array(rgb)).max(axis=2)
    return float((d < tol).mean())


def tone_db(x, hz, rate=48000):
    """Power at `hz` relative to the median bin, in dB."""
    spec = numpy.abs(numpy.fft.rfft(x * numpy.hanning(len(x)))) ** 2
    k = int(round(hz * len(x) / rate))
    return 10 * numpy.log10(spec[k - 2 : k + 3].max() / (numpy.median(spec) + 1e-9))


async def wait_for(what, cond, secs=40):
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
MEDIA_IP = "10.204.1.1"


def make_lan():
    for cmd in (
        ["link", "add", "twhep0", "type", "veth", "peer", "name", "twhep1"],
        ["addr", "add", f"{MEDIA_IP}/24", "dev", "twhep0"],
        ["link", "set", "twhep0", "up"],
        ["link", "set", "twhep1", "up"],
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
        people = []
        for name, rgb, hz in PEOPLE:
            p = Peer(name)
            p.pc.addTrack(Solid(rgb, (320, 180)))
            p.pc.addTrack(Tone(hz))
            await p.post(base, f"/whip/hall?name={name}")
            people.append(p)

        watcher = Peer("watcher")
        watcher.pc.addTransceiver("video", direction="recvonly")
        watcher.pc.addTransceiver("audio", direction="recvonly")
        await watcher.post(base, "/whep/hall")
        assert watcher.location.startswith("/whep/hall/"), watcher.location
        assert "a=sendonly" in watcher.answer, "the server only sends to a watcher"

        def sees_everyone():
            img = watcher.last
            if img is None:
                return False, None
            shares = {n: round(share(img, rgb), 3) for n, rgb, _ in PEOPLE}
            return all(s > 0.08 for s in shares.values()), {"size": img.shape[:2], **shares}

        got = await wait_for("the watcher to see all three colours", sees_everyone)
        log("the watcher sees", json.dumps(got, default=str))

        def hears_everyone():
            if len(watcher.audio) < 50:
                return False, len(watcher.audio)
            x = numpy.concatenate(watcher.audio[-50:]).astype(numpy.float64)
            dbs = {n: round(tone_db(x, hz), 1) for n, _, hz in PEOPLE}
            return all(d > 20 for d in dbs.values()), dbs

        got = await wait_for("the watcher to hear all three tones", hears_everyone)
        log("the watcher hears (dB over the median bin)", json.dumps(got))

        with urllib.request.urlopen(base + "/api/rooms", timeout=5) as r:
            room = next(r for r in json.loads(r.read()) if r["room"] == "hall")
        names = sorted(p["name"] for p in room["participants"])
        assert names == ["Blue", "Green", "Red"], f"a watcher is no participant: {names}"

        status, _, _ = http(base, watcher.location, method="DELETE")
        assert status == 200, status
        await watcher.pc.close()
        log("PASS: aiortc watched over WHEP: three colours, three tones, not a participant")
        for p in people:
            await p.pc.close()
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 150))
    except Exception as e:  # noqa: BLE001 - the test's verdict
        print(f"FAIL: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
