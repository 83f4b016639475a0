// A mixed room: one headless Chromium participant (its microphone is a 1500 Hz WebAudio
// oscillator) and two SIP callers written here from RFC 3261/3550 (UDP SIP, G.711 µ-law
// RTP at 440 and 730 Hz). Chromium must receive audio energy at the callers' tones, and
// each caller must hear the browser's tone and the other caller's, not its own.
// The web moderator then calls a phone (baresip, answering by itself) into the room from
// the page, sees it answered, and hangs it up.
// Run from scripts/test.sh (inside a loopback-only namespace).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import dgram from 'node:dgram';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS } from './common.mjs';

const BIN = process.env.TESSERA_BIN || new URL('../../target/release/tessera', import.meta.url).pathname;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log('[sip-mixed]', ...a);
function fail(msg) { console.error('[sip-mixed] FAIL:', msg); process.exit(1); }
setTimeout(() => fail('took longer than 120 s'), 120_000).unref();

function startServer() {
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--sip-listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,webrtc=warn,rtc=warn' },
  });
  proc.stderr.on('data', (d) => { if (process.env.TESSERA_E2E_LOG) process.stderr.write(d); });
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.stdout.on('data', (d) => {
      buf += d;
      const h = buf.match(/listening on (http:\/\/[\d.:]+)/);
      const s = buf.match(/listening on sip:([\d.]+):(\d+)/);
      if (h && s) resolve({ proc, url: h[1], sip: { host: s[1], port: Number(s[2]) } });
    });
    proc.on('exit', (c) => reject(new Error(`server exited with ${c}`)));
  });
}

// --- G.711 µ-law (ITU-T G.711) -----------------------------------------------------------
function ulawEncode(pcm) {
  const ends = [0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff, 0x3fff, 0x7fff];
  let v; let mask;
  if (pcm < 0) { v = 0x84 - pcm; mask = 0x7f; } else { v = pcm + 0x84; mask = 0xff; }
  let seg = ends.findIndex((e) => v <= e);
  if (seg < 0) return 0x7f ^ mask;
  return ((seg << 4) | ((v >> (seg + 3)) & 0x0f)) ^ mask;
}
function ulawDecode(u) {
  u = ~u & 0xff;
  let t = ((u & 0x0f) << 3) + 0x84;
  t <<= (u & 0x70) >> 4;
  return u & 0x80 ? 0x84 - t : t - 0x84;
}
// Goertzel power at `f` in 8 kHz samples (≈ A² for a sine of amplitude A).
function power(x, f) {
  const c = 2 * Math.cos(2 * Math.PI * f / 8000);
  let s1 = 0; let s2 = 0;
  for (const v of x) { const s0 = v + c * s1 - s2; s2 = s1; s1 = s0; }
  return (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.length * x.length / 4);
}

class Caller {
  constructor(server, tone) {
    this.server = server; this.tone = tone; this.heard = [];
    this.sip = dgram.createSocket('udp4'); this.rtp = dgram.createSocket('udp4');
    this.callId = `${Math.random().toString(16).slice(2)}@e2e`; this.tag = Math.random().toString(16).slice(2, 10);
    this.seq = 1000; this.ts = 5000; this.ssrc = (Math.random() * 2 ** 32) >>> 0; this.k = 0;
  }
  async bind() {
    await new Promise((r) => this.sip.bind(0, '127.0.0.1', r));
    await new Promise((r) => this.rtp.bind(0, '127.0.0.1', r));
    this.rtp.on('message', (m) => { if (m.length > 12 && (m[1] & 0x7f) === 0) for (const b of m.subarray(12)) this.heard.push(ulawDecode(b)); });
  }
  request(method, cseq, toTag, body = '', extra = '') {
    const l = `127.0.0.1:${this.sip.address().port}`;
    const uri = `sip:mixed@${this.server.host}:${this.server.port}`;
    return `${method} ${uri} SIP/2.0\r\nVia: SIP/2.0/UDP ${l};branch=z9hG4bK${Math.random().toString(16).slice(2)};rport\r\n`
      + `Max-Forwards: 70\r\nFrom: "Phone ${this.tone}" <sip:${this.tone}@127.0.0.1>;tag=${this.tag}\r\nTo: <${uri}>${toTag ? `;tag=${toTag}` : ''}\r\n`
      + `Call-ID: ${this.callId}\r\nCSeq: ${cseq} ${method}\r\nContact: <sip:e2e@${l}>\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  }
  send(text) { this.sip.send(Buffer.from(text), this.server.port, this.server.host); }
  async call() {
    const sdp = `v=0\r\no=e2e 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${this.rtp.address().port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n`;
    const answer = new Promise((resolve) => {
      const on = (m) => {
        const t = m.toString();
        const code = Number(t.slice(8, 11));
        if (t.startsWith('SIP/2.0 ') && code >= 200) { this.sip.off('message', on); resolve(t); }
      };
      this.sip.on('message', on);
    });
    this.send(this.request('INVITE', 1, '', sdp, 'Content-Type: application/sdp\r\n'));
    const resp = await Promise.race([answer, sleep(10_000).then(() => null)]);
    if (!resp || !resp.startsWith('SIP/2.0 200')) fail(`INVITE answered ${resp && resp.split('\r\n')[0]}`);
    this.toTag = (resp.match(/^To:.*;tag=([^;\r\n]+)/mi) || [])[1];
    const body = resp.split('\r\n\r\n')[1];
    this.media = { host: body.match(/c=IN IP4 ([\d.]+)/)[1], port: Number(body.match(/m=audio (\d+)/)[1]) };
    this.send(this.request('ACK', 1, this.toTag));
    this.timer = setInterval(() => this.tick(), 20);
  }
  tick() {
    const p = Buffer.alloc(12 + 160);
    p[0] = 0x80; p[1] = 0; p.writeUInt16BE(this.seq & 0xffff, 2); p.writeUInt32BE(this.ts >>> 0, 4); p.writeUInt32BE(this.ssrc, 8);
    for (let i = 0; i < 160; i++) p[12 + i] = ulawEncode(Math.round(Math.sin(2 * Math.PI * this.tone * (this.k * 160 + i) / 8000) * 8000));
    this.seq++; this.ts += 160; this.k++;
    this.rtp.send(p, this.media.port, this.media.host);
  }
  last(secs) { return this.heard.slice(-Math.round(secs * 8000)); }
  hangUp() { clearInterval(this.timer); this.send(this.request('BYE', 2, this.toTag)); }
  close() { this.sip.close(); this.rtp.close(); }
}

const BROWSER_TONE = 1500;
const TONES = [440, 730];

async function main() {
  const { proc, url, sip } = await startServer();
  log('server', url, 'sip', `${sip.host}:${sip.port}`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'] });
  const callers = TONES.map((t) => new Caller(sip, t));
  try {
    const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] });
    const page = await ctx.newPage();
    // The microphone is an oscillator at BROWSER_TONE (the camera stays Chromium's fake).
    await page.addInitScript((freq) => {
      const orig = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = async (c) => {
        const s = await orig({ video: c.video || false, audio: false }).catch(() => new MediaStream());
        if (c.audio) {
          const ac = new AudioContext();
          const osc = ac.createOscillator(); osc.frequency.value = freq;
          const g = ac.createGain(); g.gain.value = 0.25;
          const dst = ac.createMediaStreamDestination();
          osc.connect(g).connect(dst); osc.start();
          s.addTrack(dst.stream.getAudioTracks()[0]);
        }
        return s;
      };
    }, BROWSER_TONE);
    page.on('pageerror', (e) => log('page error:', e.message));
    // The room gets a moderator PIN before anyone joins; the browser joins with it.
    const patch = await fetch(`${url}/api/rooms/mixed`, { method: 'PATCH', body: JSON.stringify({ moderatorPin: '9999' }) });
    if (patch.status !== 200) fail(`PATCH: ${patch.status} ${await patch.text()}`);
    await page.goto(`${url}/?room=mixed&name=Web&autojoin=1&pin=9999`);
    for (const c of callers) { await c.bind(); await c.call(); }
    log('two callers in the room');
    // The browser analyses what it receives (the remote stream) with WebAudio.
    await page.waitForFunction(() => { const s = document.getElementById('remote').srcObject; return s && s.getAudioTracks().length > 0; }, null, { timeout: 30_000 });
    await page.evaluate(() => {
      const ac = new AudioContext();
      const src = ac.createMediaStreamSource(document.getElementById('remote').srcObject);
      const an = ac.createAnalyser(); an.fftSize = 8192; an.smoothingTimeConstant = 0;
      src.connect(an);
      window.__an = { ac, an };
    });
    await sleep(6000);
    const rooms = await (await fetch(`${url}/api/rooms`)).json();
    const room = rooms.find((r) => r.room === 'mixed');
    log('participants', JSON.stringify(room && room.participants.map((p) => [p.name, p.kind])));
    if (!room || room.participants.filter((p) => p.kind === 'sip').length !== 2) fail('expected two SIP participants');
    // dB at each frequency, the strongest bin within ±2 bins, averaged over 10 reads.
    const spectrum = await page.evaluate(async (freqs) => {
      const { ac, an } = window.__an;
      const bins = new Float32Array(an.frequencyBinCount);
      const acc = freqs.map(() => 0);
      for (let r = 0; r < 10; r++) {
        an.getFloatFrequencyData(bins);
        freqs.forEach((f, i) => {
          const b = Math.round(f / (ac.sampleRate / an.fftSize));
          acc[i] += Math.max(...bins.slice(b - 2, b + 3));
        });
        await new Promise((res) => setTimeout(res, 100));
      }
      return acc.map((v) => v / 10);
    }, [...TONES, BROWSER_TONE, 1100]);
    log('browser hears (dB at 440, 730, 1500 (own), 1100 (none))', spectrum.map((v) => v.toFixed(1)).join(', '));
    const [t1, t2, own, none] = spectrum;
    if (!(t1 > none + 20 && t2 > none + 20)) fail(`Chromium does not hear both callers' tones: ${spectrum}`);
    if (!(own < Math.min(t1, t2) - 20)) fail(`Chromium hears its own tone: ${spectrum}`);
    callers.forEach((c, i) => {
      const h = c.last(2);
      const p = (f) => power(h, f);
      log(`caller ${TONES[i]} Hz hears: browser ${p(BROWSER_TONE).toFixed(0)}, other ${p(TONES[1 - i]).toFixed(0)}, own ${p(TONES[i]).toFixed(0)}`);
      if (!(p(BROWSER_TONE) > 1e5)) fail(`caller ${i} does not hear the browser`);
      if (!(p(TONES[1 - i]) > 1e5)) fail(`caller ${i} does not hear the other caller`);
      if (!(p(TONES[i]) * 100 < Math.min(p(BROWSER_TONE), p(TONES[1 - i])))) fail(`caller ${i} hears itself`);
    });
    // The browser is a moderator: it mutes the 440 Hz caller from its participant list.
    await page.waitForSelector('#moderator:not([hidden])', { timeout: 10_000 });
    const row = page.locator('#participants li', { hasText: 'Phone 440' });
    await row.locator('button', { hasText: 'Mute' }).click();
    await sleep(2500);
    const after = callers[1].last(1);
    log(`after the web moderator muted caller 440: caller 730 hears 440 at ${power(after, 440).toFixed(0)}`);
    if (!(power(after, 440) < 1e3)) fail('the web moderator could not mute a caller');
    const muted = (await (await fetch(`${url}/api/rooms`)).json())[0].participants.find((p) => p.name === 'Phone 440');
    if (!muted.audioMuted) fail(`caller not shown muted: ${JSON.stringify(muted)}`);
    // ...and sets a room PIN from the page: the room's policy then has one.
    await page.fill('#new-pin', '2468');
    await page.click('#set-pin');
    await sleep(500);
    const policy = await (await fetch(`${url}/api/rooms/mixed`, { method: 'PATCH', body: '{}' })).json();
    if (!policy.hasPin) fail(`the web moderator could not set a PIN: ${JSON.stringify(policy)}`);
    // ...and calls a phone into the room: baresip, answering by itself.
    const phoneDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-e2e-baresip-'));
    const phonePort = 20000 + Math.floor(Math.random() * 20000);
    fs.writeFileSync(path.join(phoneDir, 'config'), [
      `sip_listen 127.0.0.1:${phonePort}`, 'net_interface 127.0.0.1', 'audio_player alsa,null',
      'audio_alert alsa,null', 'audio_source ausine,1100', 'ausrc_srate 48000', 'ausrc_channels 2',
      'module_path /usr/lib/baresip/modules', 'module stdio.so', 'module g711.so', 'module ausine.so',
      'module alsa.so', 'module_app account.so', 'module_app menu.so', ''].join('\n'));
    fs.writeFileSync(path.join(phoneDir, 'accounts'), '<sip:bob@127.0.0.1>;answermode=auto;regint=0\n');
    const phone = spawn('baresip', ['-f', phoneDir, '-t', '30'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let phoneOut = '';
    phone.stdout.on('data', (d) => { phoneOut += d; });
    try {
      for (let i = 0; i < 100 && !phoneOut.includes('baresip is ready'); i++) await sleep(100);
      await page.fill('#dial-to', `sip:bob@127.0.0.1:${phonePort}`);
      await page.click('#dial');
      await page.waitForSelector('#calls li:has-text("answered")', { timeout: 15_000 });
      const inRoom = (await (await fetch(`${url}/api/rooms`)).json())[0].participants.filter((p) => p.kind === 'sip').length;
      log(`the web moderator's call was answered; SIP participants now ${inRoom}`);
      if (inRoom !== 3) fail(`the called phone did not join: ${inRoom} SIP participants`);
      await sleep(1500);
      const withPhone = await page.evaluate(async () => {
        const { ac, an } = window.__an;
        const bins = new Float32Array(an.frequencyBinCount);
        an.getFloatFrequencyData(bins);
        const b = Math.round(1100 / (ac.sampleRate / an.fftSize));
        return Math.max(...bins.slice(b - 2, b + 3));
      });
      log(`Chromium hears the called phone's 1100 Hz at ${withPhone.toFixed(1)} dB (${spectrum[3].toFixed(1)} before it joined)`);
      if (!(withPhone > spectrum[3] + 20)) fail('Chromium does not hear the called phone');
      await page.locator('#calls li button', { hasText: 'Hang up' }).click();
      await page.waitForSelector('#calls li:has-text("ended")', { timeout: 10_000 });
    } finally {
      phone.kill('SIGTERM');
      fs.rmSync(phoneDir, { recursive: true, force: true });
    }
    log('PASS: Chromium hears both callers; each caller hears the browser and the other caller, not itself; the web moderator mutes a caller, sets a PIN, and calls a phone in and hangs it up');
  } finally {
    callers.forEach((c) => { try { c.hangUp(); } catch { /* already gone */ } });
    await sleep(300);
    callers.forEach((c) => c.close());
    await browser.close();
    proc.kill('SIGTERM');
  }
}

main().catch((e) => fail(e.stack || String(e)));
