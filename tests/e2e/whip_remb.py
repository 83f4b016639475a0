"""Send limits reach RTP senders as REMB (docs/protocol.md, WHIP "Send limits"). Three
aiortc WHIP clients (Debian's python3-aiortc: an independent stack) in a room whose layout
is a 16-cell gallery, so every camera is shown at 316x176 and the server asks each for
320x180 at ~173 kbit/s:
  - Red honours REMB (aiortc sets its encoder's target bitrate from it),
  - Blue ignores it (its sender drops REMB before aiortc sees it),
  - Green is a full participant (sendrecv) that looks at the room.
Both senders send the same noisy 640x360 picture of their colour (noise keeps the encoders
at their target). Checked: both get a REMB at the asked rate; Red sends at most 3/4 of
Blue's rate over the same 6 s; Green's picture shows Red and Blue where the gallery puts
them. Run inside a loopback-only namespace (scripts/test.sh)."""

import asyncio
import json
import os
import sys
import tempfile
import time

import numpy
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci
from av import VideoFrame

sys.path.insert(0, os.path.dirname(__file__))
from aio import Peer, Solid, http, one_ice_session, run, start_server, stop_server, wait_for  # noqa: E402

W, H = 1280, 720
MEDIA_IP = "10.204.2.1"
RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 190, 30)


def log(*a):
    print(f"[whip-remb {time.strftime('%H:%M:%S')}]", *a, flush=True)


class Noisy(VideoStreamTrack):
    """A colour with fresh noise in every frame (±40), 640x360 at 30 fps."""

    def __init__(self, rgb):
        super().__init__()
        self.base = numpy.zeros((360, 640, 3), numpy.int16)
        self.base[:, :] = rgb
        self.rng = numpy.random.default_rng(7)

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        noise = self.rng.integers(-40, 41, size=(360, 640, 1), dtype=numpy.int16)
        img = numpy.clip(self.base + noise, 0, 255).astype(numpy.uint8)
        f = VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = pts, time_base
        return f


class Publisher:
    def __init__(self, name, rgb, honour):
        self.name, self.pc = name, RTCPeerConnection()
        self.sender = self.pc.addTrack(Noisy(rgb))
        self.rembs = []
        handle = self.sender._handle_rtcp_packet

        async def seen(packet):
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                try:
                    self.rembs.append(unpack_remb_fci(packet.fci)[0])
                except ValueError:
                    pass
                if not honour:
                    return  # this sender ignores REMB
            await handle(packet)

        self.sender._handle_rtcp_packet = seen

    async def post(self, base):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = one_ice_session(self.pc.localDescription.sdp)
        status, _, answer = http(base, f"/whip/gal?name={self.name}", sdp.encode())
        assert status == 201, f"{self.name}: {status} {answer}"
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def bytes_sent(self):
        stats = await self.sender.getStats()
        return sum(s.bytesSent for s in stats.values() if s.type == "outbound-rtp")


async def main():
    d = tempfile.mkdtemp(prefix="tessera-remb-")
    with open(os.path.join(d, "gallery.json"), "w") as f:
        json.dump({"name": "gallery", "type": "grid", "gap": 4, "min_cells": 16}, f)
    with open(os.path.join(d, "tessera.toml"), "w") as f:
        f.write('default_layout = "gallery"\n')
    server, base = start_server(
        MEDIA_IP, "tremb", (W, H), ["--layouts-dir", d, "--config", os.path.join(d, "tessera.toml")]
    )
    try:
        log("server at", base)
        red = Publisher("Red", RED, honour=True)
        blue = Publisher("Blue", BLUE, honour=False)
        await red.post(base)
        await blue.post(base)

        # Green: a full participant (sendrecv) whose composite we look at.
        green = Peer("Green")
        green.pc.addTrack(Solid(GREEN, (320, 180)))
        await green.post(base, "/whip/gal?name=Green")

        def rembs():
            ok = all(p.rembs and p.rembs[-1] <= 200_000 for p in (red, blue))
            return ok, {"Red": red.rembs[-3:], "Blue": blue.rembs[-3:]}

        got = await wait_for("both senders to get a REMB at the asked rate", rembs)
        log("REMB (bit/s) received:", json.dumps(got))

        def tiles():
            img = green.last
            if img is None:
                return False, None
            h, w = img.shape[:2]
            # Cells of 316x176 (gap 4) on 1280x720, scaled to the picture's size.
            def at(x, y):
                px = img[int((y - 20) * h / H) : int((y + 20) * h / H), int((x - 30) * w / W) : int((x + 30) * w / W)]
                return [int(v) for v in px.reshape(-1, 3).mean(axis=0)]
            seen = {"Red": at(158, 88), "Blue": at(478, 88), "size": [w, h]}
            near = lambda a, b: all(abs(x - y) < 50 for x, y in zip(a, b))  # noqa: E731
            return near(seen["Red"], RED) and near(seen["Blue"], BLUE), seen

        seen = await wait_for("Green to see Red and Blue in their gallery cells", tiles)
        log("Green sees", json.dumps(seen))

        # The rates, over the same 6 s, once both have settled.
        await asyncio.sleep(3)
        r0, b0, t0 = await red.bytes_sent(), await blue.bytes_sent(), time.time()
        await asyncio.sleep(6)
        r1, b1, t1 = await red.bytes_sent(), await blue.bytes_sent(), time.time()
        red_kbps = (r1 - r0) * 8 / (t1 - t0) / 1000
        blue_kbps = (b1 - b0) * 8 / (t1 - t0) / 1000
        log(f"sending: Red (honours REMB) {red_kbps:.0f} kbit/s, Blue (ignores it) {blue_kbps:.0f} kbit/s")
        assert red_kbps <= 0.75 * blue_kbps, "the sender that honours REMB did not lower its rate"
        seen = await wait_for("Green still to see both", tiles)
        log("Green still sees", json.dumps(seen))
        log("PASS: REMB carries the send limit; a sender that honours it lowers its rate, one that ignores it is still shown right")
        for pc in (red.pc, blue.pc, green.pc):
            await pc.close()
    finally:
        stop_server(server)


if __name__ == "__main__":
    run(main, 120)
