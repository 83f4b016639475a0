// Live output in a browser: three Chromium pages join a room (each camera a canvas of one
// colour, each microphone a tone); then
//  - a Chromium page in the web client's watch-only mode (`?watch=1`, a WHEP client) must
//    show all three colours and not be listed as a participant, and
//  - a page of our own on another origin plays the room's HLS through hls.js (npm) for at
//    least 10 s: the video advances, shows all three colours, and does not stall.
// Never downloads a browser. Run inside a loopback-only network namespace (scripts/test.sh).
import { spawn } from 'node:child_process';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, fakeMedia, listeningUrl, waiter } from './common.mjs';

const BIN = process.env.TESSERA_BIN || new URL('../../target/release/tessera', import.meta.url).pathname;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const HLS_JS = readFileSync(new URL('./node_modules/hls.js/dist/hls.min.js', import.meta.url));
const deadline = Date.now() + 150_000;
const log = (...a) => console.log(`[live ${new Date().toISOString().slice(11, 23)}]`, ...a);
const waitFor = waiter(deadline);
const PEOPLE = [
  { name: 'Ada', rgb: [220, 30, 30], tone: 500 },
  { name: 'Bob', rgb: [30, 30, 220], tone: 800 },
  { name: 'Cy', rgb: [30, 190, 30], tone: 1300 },
];
const COLOURS = PEOPLE.map((p) => p.rgb);

// Page side: the share of each colour in a video element's picture and its playback time.
function colourShares([id, colours]) {
  const v = document.getElementById(id);
  if (!v || !v.videoWidth) return { ok: false, why: 'no picture yet' };
  const c = document.createElement('canvas');
  c.width = 160; c.height = 90;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0, c.width, c.height);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const near = (i, rgb) => Math.abs(d[i] - rgb[0]) < 45 && Math.abs(d[i + 1] - rgb[1]) < 45 && Math.abs(d[i + 2] - rgb[2]) < 45;
  const share = colours.map((rgb) => { let n = 0; for (let i = 0; i < d.length; i += 4) if (near(i, rgb)) n++; return n / (d.length / 4); });
  return { ok: share.every((s) => s > 0.08), share, size: [v.videoWidth, v.videoHeight], time: v.currentTime, paused: v.paused };
}

async function main() {
  const server = spawn(BIN, ['--listen', '127.0.0.1:0', '--video-size', '640x360'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,webrtc=warn,rtc=warn' },
  });
  // The player page's own origin (HLS is fetched cross-origin, as a real site would).
  const player = http.createServer((req, res) => {
    if (req.url === '/hls.min.js') { res.writeHead(200, { 'content-type': 'text/javascript' }); return res.end(HLS_JS); }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><video id="v" muted autoplay playsinline></video><script src="/hls.min.js"></script>');
  });
  await new Promise((r) => player.listen(0, '127.0.0.1', r));
  const playerUrl = `http://127.0.0.1:${player.address().port}`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'],
  });
  try {
    const url = await listeningUrl(server);
    log('server at', url);
    for (const p of PEOPLE) {
      const page = await (await browser.newContext()).newPage();
      await page.addInitScript(`(${fakeMedia})(${JSON.stringify(p.rgb)}, ${p.tone}, false);`);
      await page.goto(`${url}/?room=hall&name=${p.name}&autojoin=1`);
    }
    // The web client's watch-only mode.
    const watch = await (await browser.newContext()).newPage();
    await watch.goto(`${url}/?watch=1&room=hall&autojoin=1`);
    const seen = await waitFor('the watch-only page to show all three colours', () => watch.evaluate(colourShares, ['remote', COLOURS]));
    log('watch-only page sees', JSON.stringify(seen));
    const rooms = await (await fetch(`${url}/api/rooms`)).json();
    const hall = rooms.find((r) => r.room === 'hall');
    if (hall.participants.length !== 3) throw new Error(`a watcher is listed: ${JSON.stringify(hall.participants)}`);
    await watch.close(); // (its decoding competes with the player for the two cores)

    // hls.js on another origin.
    const page = await (await browser.newContext()).newPage();
    page.on('console', (m) => { if (m.type() === 'error') log('player console:', m.text()); });
    await page.goto(`${playerUrl}/`);
    await page.evaluate((src) => {
      const v = document.getElementById('v');
      window.__errors = [];
      window.__stalls = 0;
      v.addEventListener('waiting', () => { window.__stalls++; });
      const hls = new Hls({ lowLatencyMode: false });
      hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) window.__errors.push(`${d.type}: ${d.details}`); });
      hls.loadSource(src);
      hls.attachMedia(v);
      v.play().catch(() => {});
    }, `${url}/hls/hall/index.m3u8`);
    const first = await waitFor('hls.js to play the room', async () => {
      const r = await page.evaluate(colourShares, ['v', COLOURS]);
      return { ...r, ok: r.time > 0.5 && !r.paused, errors: await page.evaluate(() => window.__errors) };
    }, 40_000);
    log('hls.js playing', JSON.stringify(first));
    // At least 10 s of the stream played (media time: a loaded machine may stall it now
    // and then, which is logged, not judged), with no fatal hls.js error.
    const startedAt = Date.now();
    const start = first.time;
    const after = await waitFor('hls.js to play 10 s more', async () => {
      const r = await page.evaluate(colourShares, ['v', COLOURS]);
      const errors = await page.evaluate(() => window.__errors);
      if (errors.length) throw new Error(`hls.js errors: ${errors}`);
      return { ...r, ok: r.time - start >= 10 };
    }, 60_000);
    const stalls = await page.evaluate(() => window.__stalls);
    log(`played ${(after.time - start).toFixed(1)} s in ${((Date.now() - startedAt) / 1000).toFixed(1)} s (${stalls} waits)`, JSON.stringify(after));
    const shares = await page.evaluate(colourShares, ['v', COLOURS]);
    if (!shares.ok) throw new Error(`the HLS picture lacks a colour: ${JSON.stringify(shares)}`);
    if (after.size[0] !== 640 || after.size[1] !== 360) throw new Error(`HLS picture ${after.size}`);
    log('PASS: watch-only page and hls.js both show the room');
  } finally {
    await browser.close().catch(() => {});
    player.close();
    server.kill('SIGTERM');
  }
}

main().then(() => process.exit(0), (e) => { console.error('FAIL:', e.message); process.exit(1); });
