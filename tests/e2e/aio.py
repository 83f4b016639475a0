"""Shared by the aiortc tests (whip_present.py, whep_watch.py, whip_remb.py): the Tessera binary started
in a namespace with a private "LAN", a solid-colour camera, HTTP with SDP bodies, and
polling. aiortc is Debian's python3-aiortc (1.4): an independent WebRTC stack."""

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import VideoFrame

BIN = os.environ.get("TESSERA_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "target", "release", "tessera"
)


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


class Peer:
    """An aiortc peer that keeps the last picture and ~2 s of the sound it receives."""

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

    async def post(self, base, path, edit=None):
        """Offers at `path` (the offer through `edit` first, if given), takes the answer."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = one_ice_session(self.pc.localDescription.sdp)
        if edit is not None:
            sdp = edit(sdp)
        status, headers, answer = http(base, path, sdp.encode())
        assert status == 201, f"{self.name}: POST {path} {status}: {answer}"
        self.location = headers.get("Location") or headers.get("location")
        self.answer = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))


def http(base, path, body=None, method="POST"):
    """(status, headers, body text); a body is sent as application/sdp."""
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


async def wait_for(what, cond, secs=40):
    """Polls `cond()` -> (ok, detail) until ok; raises with the last detail."""
    until = time.time() + secs
    last = None
    while time.time() < until:
        ok, last = cond()
        if ok:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def start_server(media_ip, veth, size, extra=()):
    """aiortc's ICE (aioice) never offers loopback addresses: the namespace gets a "LAN", a
    veth pair (`veth`0/1) with `media_ip` (nothing answers beyond it), and the server binds
    media there. `extra`: more command-line arguments. Returns the server process and its
    base URL."""
    for cmd in (
        ["link", "add", f"{veth}0", "type", "veth", "peer", "name", f"{veth}1"],
        ["addr", "add", f"{media_ip}/24", "dev", f"{veth}0"],
        ["link", "set", f"{veth}0", "up"],
        ["link", "set", f"{veth}1", "up"],
    ):
        r = subprocess.run(["ip", *cmd], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(
                f"cannot give the namespace a veth pair (run as root inside unshare -n, as "
                f"scripts/test.sh does): ip {' '.join(cmd)}: {r.stderr.strip()}"
            )
    w, h = size
    server = subprocess.Popen(
        [BIN, "--listen", "127.0.0.1:0", "--media-ip", media_ip, "--video-size", f"{w}x{h}", *extra],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info,webrtc=warn,rtc=warn")},
    )
    for line in server.stdout:
        m = re.search(r"listening on (http://[\d.:]+)", line)
        if m:
            return server, m.group(1)
    raise AssertionError("the server did not start")


def stop_server(server):
    server.terminate()
    try:
        server.wait(5)
    except subprocess.TimeoutExpired:
        server.kill()


def run(main, secs):
    """Runs `main()` for at most `secs`; exit status 0 = pass."""
    try:
        asyncio.run(asyncio.wait_for(main(), secs))
    except Exception as e:  # noqa: BLE001 - the test's verdict
        print(f"FAIL: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
