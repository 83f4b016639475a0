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
import time
import urllib.request

import numpy
from aio import Peer, http, run, start_server, stop_server, wait_for
from aio import Solid
from aiortc import MediaStreamTrack
from av import AudioFrame

W, H = 640, 360
PEOPLE = [("Red", (220, 30, 30), 400.0), ("Green", (30, 200, 30), 650.0), ("Blue", (30, 30, 220), 1000.0)]


def log(*a):
    print(f"[whep-watch {time.strftime('%H:%M:%S')}]", *a, flush=True)


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


def share(img, rgb, tol=45):
    d = numpy.abs(img.astype(numpy.int32) - numpy.array(rgb)).max(axis=2)
    return float((d < tol).mean())


def tone_db(x, hz, rate=48000):
    """Power at `hz` relative to the median bin, in dB."""
    spec = numpy.abs(numpy.fft.rfft(x * numpy.hanning(len(x)))) ** 2
    k = int(round(hz * len(x) / rate))
    return 10 * numpy.log10(spec[k - 2 : k + 3].max() / (numpy.median(spec) + 1e-9))


MEDIA_IP = "10.204.1.1"


async def main():
    server, base = start_server(MEDIA_IP, "twhep", (W, H))
    try:
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
        stop_server(server)


if __name__ == "__main__":
    run(main, 150)
