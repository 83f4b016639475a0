// Presenting a screen in headless Chromium: Pat presents its own tab (getDisplayMedia with
// preferCurrentTab; `--auto-accept-this-tab-capture` and no fake UI, FACTS.md) showing a
// known pattern (large text and a checkerboard) over the whole page; Ada and Bob (another
// Chromium) see the presentation layout. Checked by content: in each viewer's decoded
// picture and in the recording, the content region against the pattern scaled to it
// (PSNR on luma ≥ 30 dB); the strip holds the three cameras; the layout switched within
// 1 s of the start and back within 1 s of the stop (first decoded frame showing it, timed
// from the presentationStarted/Stopped event at the viewer). Runs in a loopback-only
// namespace (scripts/test.sh).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, listeningUrl, waiter } from './common.mjs';

const BIN = process.env.TESSERA_BIN || new URL('../../target/release/tessera', import.meta.url).pathname;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const [W, H] = [1280, 720];
const deadline = Date.now() + 180_000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(`[present ${new Date().toISOString().slice(11, 23)}]`, ...a);
function fail(msg) { throw new Error(msg); }
const waitFor = waiter(deadline);

// The pattern, drawn the same way in the presenter's overlay and as the reference: a
// magenta band (the marker the switch timing looks for), text, a checkerboard of 16 px.
const PATTERN = `(c) => {
  const g = c.getContext('2d');
  g.fillStyle = '#ffffff'; g.fillRect(0, 0, c.width, c.height);
  g.fillStyle = '#101010'; g.fillRect(0, 0, c.width, 90);
  g.fillStyle = '#101010'; g.font = 'bold 64px sans-serif'; g.fillText('Quarterly results 42', 60, 200);
  g.font = '40px sans-serif'; g.fillText('Tessera presents: fine detail stays legible', 60, 270);
  for (let y = 320; y < 680; y += 16) for (let x = 60; x < 1220; x += 16) {
    g.fillStyle = ((x - 60) / 16 + (y - 320) / 16) % 2 ? '#202020' : '#e8e8e8'; g.fillRect(x, y, 16, 16);
  }
  g.fillStyle = '#808080'; g.fillRect(900, 120, 300, 160);
}`;

// In a page: PSNR (luma) of `source` (a video element) inside `rect` of its picture
// against the pattern scaled into `rect`.
const PSNR = `(source, rect) => {
  const pic = document.createElement('canvas'); pic.width = source.videoWidth || source.width; pic.height = source.videoHeight || source.height;
  pic.getContext('2d').drawImage(source, 0, 0);
  const got = pic.getContext('2d').getImageData(rect.x, rect.y, rect.w, rect.h).data;
  const full = document.createElement('canvas'); full.width = ${W}; full.height = ${H};
  (${PATTERN})(full);
  const ref = document.createElement('canvas'); ref.width = rect.w; ref.height = rect.h;
  const g = ref.getContext('2d'); g.imageSmoothingQuality = 'high'; g.drawImage(full, 0, 0, rect.w, rect.h);
  const want = g.getImageData(0, 0, rect.w, rect.h).data;
  const luma = (d, i) => 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
  let se = 0;
  for (let i = 0; i < got.length; i += 4) { const e = luma(got, i) - luma(want, i); se += e * e; }
  const mse = se / (got.length / 4);
  return 10 * Math.log10(255 * 255 / Math.max(mse, 1e-9));
}`;

// The presentation layout at 1280x720 (layouts/presentation.json): content area 1280x572
// (bottom strip 0.2 = 144 px, gap 4), a 16:9 capture fitted: 1016x572 at x 132.
const CONTENT = { x: 132, y: 0, w: 1016, h: 572 };
// Strip tiles for 3 cameras: 256x144, gap 4, centred: x = 254, 514, 774; y = 576.
const STRIP = [254, 514, 774].map((x) => ({ x: x + 128, y: 576 + 72 }));

async function startServer() {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-present-'));
  const cfg = join(dir, 'tessera.toml');
  writeFileSync(cfg, `[recording]\ndir = "${dir}"\nwidth = ${W}\nheight = ${H}\nbitrate_kbps = 2500\n`);
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--video-size', `${W}x${H}`, '--video-bitrate-kbps', '2500', '--config', cfg], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,webrtc=warn,rtc=warn' },
  });
  proc.stderr.on('data', (d) => process.stderr.write(`[server] ${d}`));
  return { proc, dir, url: await listeningUrl(proc) };
}

async function main() {
  const { proc, dir, url } = await startServer();
  log('server at', url);
  const viewersBrowser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'] });
  // Tab capture needs the real (auto-accepted) picker, not the fake UI.
  const presenterBrowser = await chromium.launch({
    executablePath: CHROMIUM, headless: true,
    args: [...CHROMIUM_ARGS.filter((a) => a !== '--use-fake-ui-for-media-stream'), '--allow-loopback-in-peer-connection', '--auto-accept-this-tab-capture'],
  });
  try {
    const open = async (browser, name) => {
      const ctx = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: { width: W, height: H } });
      const page = await ctx.newPage();
      page.on('pageerror', (e) => log(`${name} page error:`, e.message));
      await page.goto(`${url}/?room=pres&name=${name}&autojoin=1`);
      return page;
    };
    const ada = await open(viewersBrowser, 'Ada');
    const bob = await open(viewersBrowser, 'Bob');
    const pat = await open(presenterBrowser, 'Pat');
    for (const [name, page] of [['Ada', ada], ['Bob', bob], ['Pat', pat]]) {
      await waitFor(`${name} to see the room`, async () => {
        const s = await page.evaluate(async () => (await window.tessera.receiveStats()).video);
        return { ok: s && s.framesDecoded > 10, s };
      });
    }
    const rec = await fetch(`${url}/api/rooms/pres/recording`, { method: 'POST' });
    if (rec.status !== 201) fail(`start recording: ${rec.status}`);

    // Watch every decoded frame at the viewers: when the magenta band first appears at the
    // top of the content area (and disappears).
    for (const page of [ada, bob]) {
      await page.evaluate(() => {
        const v = document.getElementById('remote');
        const c = document.createElement('canvas'); c.width = 8; c.height = 8;
        const g = c.getContext('2d', { willReadFrequently: true });
        window.presentSeen = [];
        const look = () => {
          g.drawImage(v, 700 * v.videoWidth / 1280 - 4, 30 * v.videoHeight / 720, 8, 8, 0, 0, 8, 8);
          const [r, gg, b] = g.getImageData(4, 4, 1, 1).data;
          const magenta = r < 50 && gg < 50 && b < 50; // the pattern's dark band
          const last = window.presentSeen.at(-1);
          if (!last || last.magenta !== magenta) window.presentSeen.push({ magenta, at: Date.now() });
          v.requestVideoFrameCallback(look);
        };
        v.requestVideoFrameCallback(look);
      });
    }

    // Pat presents its tab, then covers the page with the pattern.
    await pat.evaluate(() => { window.tessera.displayOptions = { video: { frameRate: 30 }, audio: false, preferCurrentTab: true }; });
    await pat.click('#present');
    await waitFor('Pat to present', async () => ({ ok: await pat.evaluate(() => (window.tessera.eventLog || []).some((e) => e.type === 'presentAnswer')) }), 15_000);
    await pat.evaluate((pattern) => {
      const c = document.createElement('canvas'); c.width = 1280; c.height = 720;
      c.style = 'position:fixed;left:0;top:0;width:1280px;height:720px;z-index:2147483647';
      document.body.append(c);
      eval(pattern)(c);
    }, PATTERN);

    const results = {};
    for (const [name, page] of [['Ada', ada], ['Bob', bob]]) {
      const r = await waitFor(`${name} to see the content (PSNR ≥ 30 dB)`, async () => page.evaluate(([psnr, rect, strip]) => {
        const v = document.getElementById('remote');
        const p = eval(psnr)(v, rect);
        const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        // Cameras in the strip: Chromium's fake camera (bright green), not the dark
        // background (mean luma of the tile's middle).
        const cams = strip.map(({ x, y }) => { const d = g.getImageData(x - 40, y - 30, 80, 60).data; let s = 0; for (let i = 0; i < d.length; i += 4) s += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]; return Math.round(s / (d.length / 4)); });
        return { ok: p >= 30 && cams.every((n) => n > 60), psnr: +p.toFixed(2), cams, size: `${v.videoWidth}x${v.videoHeight}`, layout: document.getElementById('layout').value };
      }, [PSNR, CONTENT, STRIP]), 40_000);
      results[name] = r;
      log(name, 'sees the content', JSON.stringify(r));
    }
    const started = await ada.evaluate(() => ({ ev: window.tessera.eventLog.find((e) => e.type === 'presentationStarted'), seen: window.presentSeen.find((s) => s.magenta) }));
    const switchMs = started.seen.at - started.ev.at;
    log(`layout switch at Ada: ${switchMs} ms after presentationStarted`);
    if (!(switchMs <= 1000)) fail(`the presentation showed ${switchMs} ms after it started`);

    // Stop: the room goes back to its grid.
    await sleep(3000);
    // (The pattern covers the button: a programmatic click; stopping needs no gesture.)
    await pat.evaluate(() => document.getElementById('present').click());
    await waitFor('Ada to see the grid again', async () => ({ ok: await ada.evaluate(() => window.presentSeen.at(-1).magenta === false && window.tessera.eventLog.some((e) => e.type === 'presentationStopped')) }), 10_000);
    const stopped = await ada.evaluate(() => ({ ev: window.tessera.eventLog.find((e) => e.type === 'presentationStopped'), seen: window.presentSeen.at(-1), layout: document.getElementById('layout').value }));
    const backMs = stopped.seen.at - stopped.ev.at;
    log(`switch back at Ada: ${backMs} ms after presentationStopped; layout ${stopped.layout}`);
    if (!(backMs <= 1000)) fail(`the grid came back ${backMs} ms after the presentation stopped`);
    if (stopped.layout !== 'grid') fail(`layout after the presentation: ${stopped.layout}`);

    // The recording follows: a frame from while Pat presented matches the pattern too.
    const stop = await fetch(`${url}/api/rooms/pres/recording`, { method: 'DELETE' });
    if (stop.status !== 200) fail(`stop recording: ${stop.status}`);
    // Frames of the recording, decoded by ffmpeg, compared in a page like the viewers'.
    const file = join(dir, readdirSync(dir).find((f) => f.endsWith('.mp4')));
    const viewer = await (await viewersBrowser.newContext()).newPage();
    await viewer.goto(`${url}/`);
    let best = { psnr: 0 };
    for (let t = 0.5; t < 6; t += 0.5) {
      const raw = spawnSync('ffmpeg', ['-v', 'error', '-ss', String(t), '-i', file, '-frames:v', '1', '-f', 'rawvideo', '-pix_fmt', 'rgba', '-'], { maxBuffer: 16 << 20 }).stdout;
      if (!raw || raw.length !== W * H * 4) continue;
      const psnr = await viewer.evaluate(([b64, psnr, rect, w, h]) => {
        const bytes = Uint8ClampedArray.from(atob(b64), (c) => c.charCodeAt(0));
        const c = document.createElement('canvas'); c.width = w; c.height = h;
        c.getContext('2d').putImageData(new ImageData(bytes, w, h), 0, 0);
        return eval(psnr)(c, rect);
      }, [raw.toString('base64'), PSNR, CONTENT, W, H]);
      if (psnr > best.psnr) best = { psnr: +psnr.toFixed(2), t };
    }
    log('recording', JSON.stringify(best));
    if (!(best.psnr >= 30)) fail(`the recording's content region: ${JSON.stringify(best)}`);
    const recCheck = best;
    log(`PASS: content PSNR Ada ${results.Ada.psnr} dB, Bob ${results.Bob.psnr} dB, recording ${recCheck.psnr} dB; switch ${switchMs} ms, back ${backMs} ms`);
  } finally {
    await viewersBrowser.close().catch(() => {});
    await presenterBrowser.close().catch(() => {});
    proc.kill('SIGTERM');
    await new Promise((r) => { proc.on('exit', r); setTimeout(r, 5000); });
  }
}

main().catch((e) => { console.error('FAIL:', e.message); process.exit(1); });
