// Shared by the browser tests: waiting for the server to listen, and the Chromium flags
// that work on this kind of machine (headless Debian chromium, fake camera and microphone).

// Resolves to the server's base URL once it prints `listening on http(s)://…`.
export function listeningUrl(proc, timeoutMs = 20_000) {
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening on (https?:\/\/[\d.:]+)/);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (c) => reject(new Error(`server exited early with ${c}`)));
    setTimeout(() => reject(new Error(`server did not start in ${timeoutMs / 1000} s`)), timeoutMs);
  });
}

export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--disable-features=WebRtcHideLocalIpsWithMdns', '--autoplay-policy=no-user-gesture-required'];

// Polls `fn` every 500 ms until it returns `{ ok: true, … }` (returned), or throws after
// `timeoutMs` (or the test's overall `deadline`, whichever is first) with the last result.
export function waiter(deadline) {
  return async function waitFor(what, fn, timeoutMs = 60_000) {
    const until = Math.min(Date.now() + timeoutMs, deadline);
    let last;
    while (Date.now() < until) {
      last = await fn();
      if (last && last.ok) return last;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
  };
}

// Runs in the page before its scripts: the camera is a canvas painted one colour 30 times a
// second; the microphone an oscillator, or (`deviceTone`) the browser's own fake microphone,
// whose tone Firefox takes from a pref: headless Firefox ESR 140 (Debian 12's) never starts an
// AudioContext without a sound device, so an oscillator there is silent.
export function fakeMedia(rgb, freq, deviceTone, level = 0.25) {
  const orig = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => {
    const s = new MediaStream();
    if (c.video) {
      const cv = document.createElement('canvas');
      cv.width = 640; cv.height = 360;
      const g = cv.getContext('2d');
      const paint = () => { g.fillStyle = `rgb(${rgb.join(',')})`; g.fillRect(0, 0, cv.width, cv.height); };
      paint();
      setInterval(paint, 33);
      s.addTrack(cv.captureStream(30).getVideoTracks()[0]);
    }
    if (c.audio && deviceTone) {
      s.addTrack((await orig({ audio: true })).getAudioTracks()[0]);
    } else if (c.audio) {
      const ac = new AudioContext();
      ac.resume().catch(() => {});
      window.__micContext = ac;
      const osc = ac.createOscillator(); osc.frequency.value = freq;
      const gain = ac.createGain(); gain.gain.value = level;
      const dst = ac.createMediaStreamDestination();
      osc.connect(gain).connect(dst); osc.start();
      s.addTrack(dst.stream.getAudioTracks()[0]);
    }
    return s;
  };
}
