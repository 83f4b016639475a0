// Browser end-to-end test: three headless Chromium pages (Debian's chromium, fake camera
// and microphone) join one room through the server's own web page. Each must decode the
// composite the MCU sends (framesDecoded grows, frame size as configured, picture not one
// flat colour) and receive audio (totalAudioEnergy > 0). Then one leaves and the others'
// video keeps flowing. Run inside a loopback-only network namespace (scripts/test.sh).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, listeningUrl, waiter } from './common.mjs';

// Server CPU seconds (user+system) from /proc, for the closing report.
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

const BIN = process.env.TESSERA_BIN || new URL('../../target/release/tessera', import.meta.url).pathname;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Smaller than the default to keep CI fast; still checked exactly. TESSERA_E2E_SIZE=1280x720 to measure the default.
const [WIDTH, HEIGHT] = (process.env.TESSERA_E2E_SIZE || '640x360').split('x').map(Number);
const deadline = Date.now() + 150_000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(`[e2e ${new Date().toISOString().slice(11, 23)}]`, ...a);
function fail(msg) { throw new Error(msg); }

async function startServer() {
  const recDir = mkdtempSync(join(tmpdir(), 'tessera-e2e-rec-'));
  const cfg = join(recDir, 'tessera.toml');
  writeFileSync(cfg, `[recording]\ndir = "${recDir}"\nwidth = ${WIDTH}\nheight = ${HEIGHT}\nbitrate_kbps = 800\n`);
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--video-size', `${WIDTH}x${HEIGHT}`, '--video-bitrate-kbps', '600', '--config', cfg], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,webrtc=warn,rtc=warn' },
  });
  proc.stderr.on('data', (d) => process.stderr.write(`[server] ${d}`));
  const url = await listeningUrl(proc);
  return { proc, url };
}

const waitFor = waiter(deadline);

async function main() {
  const { proc, url } = await startServer();
  log('server at', url);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'],
    // playwright gives every launch a fresh, empty profile directory of its own.
  });
  const pages = [];
  try {
    // The third participant sends AV1, so both ingest decoders (openh264, dav1d) run.
    const who = [['Ada', ''], ['Bob', ''], ['Cy', 'av1']];
    for (const [name, codec] of who) {
      const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] });
      const page = await ctx.newPage();
      page.on('pageerror', (e) => log(`${name} page error:`, e.message));
      await page.goto(`${url}/?room=e2e&name=${name}&autojoin=1${codec ? `&codec=${codec}` : ''}`);
      pages.push({ name, page });
    }
    const stats = (p) => p.page.evaluate(async () => ({ ...(await window.tessera.receiveStats()), pixels: window.tessera.pixelSpread(), error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent }));

    for (const p of pages) {
      const first = await waitFor(`${p.name} to decode composite video and hear audio`, async () => {
        const s = await stats(p);
        if (s.error) fail(`${p.name} shows an error: ${s.error}`);
        const ok = s.video && s.video.framesDecoded > 20 && s.audio && s.audio.totalAudioEnergy > 0;
        return { ok, ...s };
      });
      log(p.name, 'first check', JSON.stringify(first));
      // What the camera really sends (negotiated, not just preferred): AV1 for Cy, H.264 else.
      const sent = await p.page.evaluate(async () => {
        const stats = await window.tessera.pc.getStats();
        let mime = null;
        stats.forEach((r) => { if (r.type === 'outbound-rtp' && r.kind === 'video' && r.codecId) mime = stats.get(r.codecId)?.mimeType; });
        return mime;
      });
      const want = p.name === 'Cy' ? 'video/AV1' : 'video/H264';
      if (sent !== want) fail(`${p.name} sends ${sent}, expected ${want}`);
      if (first.video.frameWidth !== WIDTH || first.video.frameHeight !== HEIGHT) fail(`${p.name}: composite is ${first.video.frameWidth}x${first.video.frameHeight}, expected ${WIDTH}x${HEIGHT}`);
      const px = await waitFor(`${p.name} composite pixels`, async () => { const s = await stats(p); return { ok: s.pixels && s.pixels.distinctColours > 8, ...s.pixels }; }, 20_000);
      log(p.name, 'pixels', JSON.stringify(px));
    }
    // The server sees three participants, all sending decodable video (AV1 included).
    const rooms = await (await fetch(`${url}/api/rooms`)).json();
    log('rooms', JSON.stringify(rooms));
    const room = rooms.find((r) => r.room === 'e2e');
    if (!room || room.participants.length !== 3) fail(`expected 3 participants, got ${JSON.stringify(room)}`);
    if (room.videoEncoders !== 3) fail(`expected 3 running encoders, got ${room.videoEncoders}`);

    // Start recording: everyone sees the REC indicator.
    const rec = await fetch(`${url}/api/rooms/e2e/recording`, { method: 'POST' });
    if (rec.status !== 201) fail(`start recording: ${rec.status} ${await rec.text()}`);
    const recId = (await rec.json()).id;
    for (const p of pages) {
      await waitFor(`${p.name} to show the recording indicator`, async () => ({ ok: await p.page.evaluate(() => !document.getElementById('rec').hidden) }), 5_000);
    }

    // Frames keep growing for everyone; measure the server's CPU meanwhile.
    const before = await Promise.all(pages.map(stats));
    const cpu0 = cpuSeconds(proc.pid), t0 = Date.now();
    await sleep(4000);
    const cpu = (cpuSeconds(proc.pid) - cpu0) / ((Date.now() - t0) / 1000);
    const after = await Promise.all(pages.map(stats));
    log(`measured: join-to-first-frame ms ${after.map((s) => Math.round(s.firstFrameMs)).join(', ')}; server CPU ${(cpu * 100).toFixed(0)}% of one core for 3 participants at ${WIDTH}x${HEIGHT}`);
    pages.forEach((p, i) => { if (!(after[i].video.framesDecoded > before[i].video.framesDecoded + 20)) fail(`${p.name} video stalled: ${before[i].video.framesDecoded} -> ${after[i].video.framesDecoded}`); });

    // One leaves: the others keep receiving without a freeze.
    await pages[2].page.click('#leave');
    log('Cy left');
    await waitFor('room to shrink to 2', async () => {
      const r = (await (await fetch(`${url}/api/rooms`)).json()).find((x) => x.room === 'e2e');
      return { ok: r && r.participants.length === 2, r };
    }, 10_000);
    const b2 = await Promise.all(pages.slice(0, 2).map(stats));
    await sleep(2000);
    const a2 = await Promise.all(pages.slice(0, 2).map(stats));
    pages.slice(0, 2).forEach((p, i) => { if (!(a2[i].video.framesDecoded > b2[i].video.framesDecoded + 20)) fail(`${p.name} froze after a leave: ${b2[i].video.framesDecoded} -> ${a2[i].video.framesDecoded}`); });

    // Stop the recording and play it back in Chromium.
    const stop = await fetch(`${url}/api/rooms/e2e/recording`, { method: 'DELETE' });
    if (stop.status !== 200) fail(`stop recording: ${stop.status} ${await stop.text()}`);
    const viewer = await (await browser.newContext()).newPage();
    await viewer.goto(`${url}/`);
    const played = await viewer.evaluate(async (src) => {
      const v = document.createElement('video');
      v.muted = true;
      v.src = src;
      document.body.append(v);
      await new Promise((ok, bad) => { v.onloadeddata = ok; v.onerror = () => bad(new Error(`media error ${v.error && v.error.code}: ${v.error && v.error.message}`)); setTimeout(() => bad(new Error('no data in 10 s')), 10_000); });
      await v.play();
      const t0 = v.currentTime;
      await new Promise((r) => setTimeout(r, 1500));
      return { width: v.videoWidth, height: v.videoHeight, duration: v.duration, advanced: v.currentTime - t0 };
    }, `${url}/api/recordings/${recId}`);
    log('recording played in Chromium', JSON.stringify(played));
    if (played.width !== WIDTH || played.height !== HEIGHT) fail(`recording is ${played.width}x${played.height}`);
    if (!(played.duration > 4) || !(played.advanced > 0.8)) fail(`recording did not play: ${JSON.stringify(played)}`);
    log('PASS: 3 browsers decoded their composites and mixes; leave did not freeze the others; the recording plays in Chromium');
  } finally {
    await browser.close().catch(() => {});
    proc.kill('SIGTERM');
    await new Promise((r) => { proc.on('exit', r); setTimeout(r, 5000); });
  }
}

main().catch((e) => { console.error('FAIL:', e.message); process.exit(1); });
