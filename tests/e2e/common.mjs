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
