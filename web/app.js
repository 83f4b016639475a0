// Tessera web client: join a room over the WebSocket protocol (docs/protocol.md), send
// camera + mic on sendrecv transceivers, and play the one composite stream the MCU sends.
'use strict';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// An access token may come in the page URL (`?token=…`, from `tessera token`); it is kept in
// memory and taken out of the address bar so that it does not end up in screenshots.
const accessToken = params.get('token') || '';
if (accessToken) {
  const clean = new URL(location.href);
  clean.searchParams.delete('token');
  history.replaceState(null, '', clean);
}
const state = {
  ws: null, pc: null, local: null, me: null, participants: new Map(), calls: new Map(),
  speaker: null, leaving: false, micMuted: false, camMuted: false, pendingCandidates: [],
};
window.tessera = state; // for tests and debugging

function setStatus(text, ok) { const s = $('status'); s.textContent = text; s.classList.toggle('ok', !!ok); }
function showError(text) { const e = $('error'); e.textContent = text; e.hidden = !text; }
function send(msg) { if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg)); }

const ERROR_TEXT = {
  room_full: 'This room is full.', invalid_room: 'Room names may use letters, digits, "-", "_" and ".".',
  invalid_name: 'Please enter a display name (up to 64 characters).', bad_sdp: 'Your browser sent a session description the server could not use.',
  negotiation_failed: 'Could not establish the media connection.', unknown_layout: 'That layout does not exist.',
  pin_required: 'This room needs its PIN.', room_locked: 'This room is locked by its moderator.',
  not_moderator: 'Only a moderator can do that.',
  floor_taken: 'Someone else is presenting; ask them (or a moderator) to stop first.',
  unauthorized: 'This server needs an invitation link (access token) for this room.',
};

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, ids] of [['videoinput', ['camera', 'camera-in-call']], ['audioinput', ['mic', 'mic-in-call']]]) {
    for (const id of ids) {
      const sel = $(id);
      const keep = [...sel.options].filter((o) => o.value === '' || o.value === 'none').map((o) => o.cloneNode(true));
      sel.replaceChildren(...keep);
      devices.filter((d) => d.kind === kind).forEach((d, i) => sel.add(new Option(d.label || `${kind} ${i + 1}`, d.deviceId)));
    }
  }
}

function constraint(value, fallback) {
  if (value === 'none') return false;
  return value ? { deviceId: { exact: value } } : fallback;
}

async function getMedia(camera, mic) {
  const video = constraint(camera, { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } });
  const audio = constraint(mic, true);
  if (!video && !audio) return new MediaStream();
  return navigator.mediaDevices.getUserMedia({ video, audio });
}

function isModerator() {
  const me = state.participants.get(state.me);
  return Boolean(me && me.moderator);
}

function moderate(action) { send({ type: 'moderate', ...action }); }

// Calls placed from this room (moderators see them and can hang up while they run).
function renderCalls() {
  const ul = $('calls');
  ul.replaceChildren();
  for (const c of state.calls.values()) {
    const li = document.createElement('li');
    const code = c.code ? ` (${c.code})` : '';
    li.textContent = `${c.name} ${c.to}: ${c.state.replace('_', ' ')}${code} `;
    if (['dialing', 'ringing', 'answered'].includes(c.state)) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = 'Hang up';
      b.addEventListener('click', () => moderate({ action: 'hangUp', callId: c.id }));
      li.append(b);
    }
    ul.append(li);
  }
}

function renderParticipants() {
  const ul = $('participants');
  const mod = isModerator();
  $('moderator').hidden = !mod;
  $('stop-presentation').hidden = !(mod && state.presenter && state.presenter !== state.me);
  $('lock').textContent = state.locked ? 'Unlock room' : 'Lock room';
  ul.replaceChildren(...[...state.participants.values()].map((p) => {
    const li = document.createElement('li');
    li.textContent = p.name;
    li.dataset.id = p.id;
    if (p.id === state.me) li.classList.add('me');
    if (p.id === state.speaker) li.classList.add('speaker');
    const flags = [p.id === state.presenter && 'presenting', p.kind === 'sip' && 'phone', p.moderator && 'moderator', p.audioMuted && 'mic off', p.videoMuted && 'camera off'].filter(Boolean).join(', ');
    if (flags) { const s = document.createElement('span'); s.className = 'flags'; s.textContent = flags; li.append(s); }
    if (mod && p.id !== state.me) {
      const mute = document.createElement('button');
      mute.type = 'button'; mute.className = 'small';
      mute.textContent = p.audioMuted ? 'Unmute' : 'Mute';
      mute.onclick = () => moderate({ action: 'mute', participantId: p.id, muted: !p.audioMuted });
      const kick = document.createElement('button');
      kick.type = 'button'; kick.className = 'small danger'; kick.textContent = 'Remove';
      kick.onclick = () => moderate({ action: 'kick', participantId: p.id });
      li.append(mute, kick);
    }
    return li;
  }));
}

function preferCodec(transceiver, codec) {
  if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
  const caps = RTCRtpReceiver.getCapabilities('video').codecs;
  const is = {
    h264: (c) => c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || ''),
    vp8: (c) => c.mimeType === 'video/VP8',
    av1: (c) => c.mimeType === 'video/AV1',
    // Profile 0 (8-bit 4:2:0) is what the server decodes.
    vp9: (c) => c.mimeType === 'video/VP9' && !/profile-id=[123]/.test(c.sdpFmtpLine || ''),
  };
  // The chosen codec first (what this browser sends), then everything else the server
  // takes: H.264 and VP8 must stay in the list, they are what it sends back (a browser
  // without H.264 — Firefox without the OpenH264 plugin — gets VP8). Never assume a codec
  // exists: only formats this browser lists are kept.
  const first = is[codec] ? codec : 'h264';
  const order = [first, ...['h264', 'vp8', 'av1', 'vp9'].filter((c) => c !== first)].map((c) => is[c]);
  // Keep the retransmission format too: without it the browser offers no RTX and NACKed
  // packets cannot be repaired on their own stream.
  const isRtx = (c) => c.mimeType === 'video/rtx';
  const prefs = [...order, isRtx].flatMap((f) => caps.filter(f));
  if (prefs.length) transceiver.setCodecPreferences(prefs);
}

// Tell the server how large the composite is shown (device pixels), so it sends no rung
// larger than needed; again whenever that changes (debounced).
let sizeTimer = null;
let sentSize = '';
function reportVideoSize() {
  const v = $('remote');
  const dpr = window.devicePixelRatio || 1;
  const width = Math.round(v.clientWidth * dpr), height = Math.round(v.clientHeight * dpr);
  const key = `${width}x${height}`;
  if (!width || !height || key === sentSize) return;
  sentSize = key;
  send({ type: 'videoSize', width, height });
}
if (window.ResizeObserver) {
  new ResizeObserver(() => { clearTimeout(sizeTimer); sizeTimer = setTimeout(reportVideoSize, 300); }).observe($('remote'));
}

async function startPeer(iceServers) {
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  state.pc = pc;
  const remote = new MediaStream();
  $('remote').srcObject = remote;
  pc.ontrack = (e) => {
    remote.addTrack(e.track);
    $('remote').play().catch(() => {});
    const v = $('remote');
    if (e.track.kind === 'video' && v.requestVideoFrameCallback) {
      v.requestVideoFrameCallback(() => { state.firstFrameMs = performance.now() - state.joinStartedAt; });
    }
  };
  pc.onicecandidate = (e) => { if (e.candidate) send({ type: 'candidate', candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex }); };
  pc.onconnectionstatechange = () => {
    setStatus(`media ${pc.connectionState}`, pc.connectionState === 'connected');
    if (pc.connectionState === 'failed') showError('The media connection failed (check the network or the TURN server).');
  };
  const audioTrack = state.local.getAudioTracks()[0];
  const videoTrack = state.local.getVideoTracks()[0];
  // Always sendrecv-capable so the composite and mix come back even without a camera/mic.
  pc.addTransceiver(audioTrack || 'audio', { direction: audioTrack ? 'sendrecv' : 'recvonly', streams: [state.local] });
  const vt = pc.addTransceiver(videoTrack || 'video', { direction: videoTrack ? 'sendrecv' : 'recvonly', streams: [state.local] });
  preferCodec(vt, $('codec').value || params.get('codec'));
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  send({ type: 'offer', sdp: pc.localDescription.sdp });
}

// Presenting: a second connection that carries only the screen (docs/protocol.md,
// `present`). `window.tessera.displayOptions` may replace the getDisplayMedia options.
async function startPresenting() {
  if (state.presentPc) return;
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia(state.displayOptions || { video: { frameRate: { max: 30 } }, audio: false });
  } catch (e) {
    showError(`Screen sharing unavailable or refused (${e.name}).`);
    return;
  }
  const track = stream.getVideoTracks()[0];
  if (!track) return;
  track.contentHint = 'detail'; // text and fine lines over motion
  const pc = new RTCPeerConnection({ iceServers: state.iceServers || [], bundlePolicy: 'max-bundle' });
  Object.assign(state, { presentPc: pc, presentStream: stream });
  const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  preferCodec(t, $('codec').value || params.get('codec'));
  track.onended = () => stopPresenting(false); // the browser's own "Stop sharing"
  pc.onconnectionstatechange = () => { if (pc.connectionState === 'failed') stopPresenting(false); };
  await pc.setLocalDescription(await pc.createOffer());
  // No trickle on this connection: every candidate goes in the offer.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    setTimeout(resolve, 3000);
  });
  if (state.presentPc !== pc) return;
  send({ type: 'present', sdp: pc.localDescription.sdp });
  $('present').textContent = 'Stop presenting';
  $('present').classList.add('off');
}

function stopPresenting(fromServer) {
  const pc = state.presentPc;
  if (!pc) return;
  if (!fromServer) send({ type: 'stopPresenting' });
  pc.close();
  state.presentStream.getTracks().forEach((t) => t.stop());
  Object.assign(state, { presentPc: null, presentStream: null });
  $('present').textContent = 'Present';
  $('present').classList.remove('off');
}

async function onMessage(msg) {
  if (/^presentation|^layoutChanged$|^presentAnswer$/.test(msg.type)) {
    (state.eventLog ||= []).push({ type: msg.type, at: Date.now(), layout: msg.layout, reason: msg.reason });
  }
  switch (msg.type) {
    case 'joined':
      state.me = msg.participantId;
      state.speaker = msg.activeSpeaker;
      state.presenter = msg.presenter;
      state.iceServers = msg.iceServers;
      msg.participants.forEach((p) => state.participants.set(p.id, p));
      $('room-name').textContent = `in ${msg.room}`;
      $('rec').hidden = !msg.recording;
      $('layout').replaceChildren(...msg.layouts.map((l) => new Option(l, l, false, l === msg.layout)));
      $('lobby').hidden = true; $('call').hidden = false;
      renderParticipants();
      sentSize = '';
      reportVideoSize();
      await startPeer(msg.iceServers);
      break;
    case 'answer':
      await state.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      for (const c of state.pendingCandidates.splice(0)) await state.pc.addIceCandidate(c).catch(() => {});
      break;
    case 'candidate': {
      const c = { candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex };
      if (state.pc && state.pc.remoteDescription) await state.pc.addIceCandidate(c).catch(() => {});
      else state.pendingCandidates.push(c);
      break;
    }
    case 'participantJoined': case 'participantUpdated':
      state.participants.set(msg.participant.id, msg.participant); renderParticipants(); break;
    case 'participantLeft':
      state.participants.delete(msg.participantId); renderParticipants(); break;
    case 'participantKicked':
      if (msg.participantId === state.me) { showError('A moderator removed you from the room.'); leave(true); }
      break;
    case 'roomPolicy':
      state.locked = msg.policy.locked; renderParticipants(); break;
    case 'activeSpeaker':
      state.speaker = msg.participantId; renderParticipants(); break;
    case 'layoutChanged':
      $('layout').value = msg.layout; break;
    case 'presentAnswer':
      if (state.presentPc) await state.presentPc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      break;
    case 'presentationStarted':
      state.presenter = msg.participantId; renderParticipants(); break;
    case 'presentationStopped':
      if (state.presenter === msg.participantId) state.presenter = null;
      if (msg.participantId === state.me) {
        stopPresenting(true);
        if (msg.reason === 'moderator') showError('A moderator stopped your presentation.');
        if (msg.reason === 'replaced') showError('Someone else started presenting.');
      }
      renderParticipants();
      break;
    case 'recordingChanged':
      $('rec').hidden = !msg.recording; break;
    case 'callUpdated':
      state.calls.set(msg.call.id, msg.call); renderCalls(); break;
    case 'connectionState':
      break;
    case 'sendLimit':
      state.sendLimit = msg;
      applySendLimit().catch((e) => console.warn('sendLimit', e));
      break;
    case 'redirect': {
      if (state.me || state.hops >= 3 || !/^wss?:\/\//.test(msg.url)) { showError('The server sent an unusable redirect.'); leave(true); break; }
      const old = state.ws;
      connect(msg.url, state.hops + 1);
      old.close();
      break;
    }
    case 'bye':
      showError(`Disconnected: ${msg.reason}`); leave(true); break;
    case 'error':
      if (msg.code === 'floor_taken') stopPresenting(true);
      showError(ERROR_TEXT[msg.code] || msg.message);
      if (!state.me) leave(true);
      break;
  }
}

async function join(room, name, pin) {
  showError('');
  state.leaving = false;
  state.joinStartedAt = performance.now();
  setStatus('getting camera and microphone…');
  try {
    state.local = await getMedia($('camera').value, $('mic').value);
  } catch (e) {
    showError(`Camera/microphone unavailable (${e.name}); joining without them.`);
    state.local = new MediaStream();
  }
  $('self').srcObject = state.local;
  listDevices().catch(() => {});
  setStatus('connecting to server…');
  state.joinRequest = { room, name, pin };
  connect(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`, 0);
}

// Opens the signaling socket at `url` and sends the join. In a cluster the server may answer
// `redirect` (the room lives on another node): the same join is sent there, at most 3 hops.
function connect(url, hops) {
  const { room, name, pin } = state.joinRequest;
  const ws = new WebSocket(url);
  state.ws = ws;
  state.hops = hops;
  ws.onopen = () => { setStatus(hops ? 'joining (room on another server)…' : 'joining…'); const msg = { type: 'join', room, name };
    if (pin) msg.pin = pin;
    if (accessToken) msg.token = accessToken;
    send(msg);
  };
  ws.onmessage = (e) => { let m; try { m = JSON.parse(e.data); } catch { return; }
    if (ws !== state.ws) return; // a socket left behind by a redirect
    onMessage(m).catch((err) => showError(String(err))); };
  ws.onerror = () => { if (!state.leaving && ws === state.ws) showError('The server is unreachable.'); };
  ws.onclose = () => { if (!state.leaving && ws === state.ws) { showError(state.me ? 'Lost the connection to the server.' : 'Could not reach the server.'); leave(true); } };
}

// Watch-only mode (`?watch=1`): no camera, no microphone, not a participant. The page is
// a WHEP client (POST /whep/{room} with a recvonly offer, the answer in the 201, DELETE on
// its Location to stop); it receives the room's audience view and the full mix.
const watchOnly = params.get('watch') === '1';
async function watch(room, pin) {
  showError('');
  setStatus('connecting to server…');
  const pc = new RTCPeerConnection();
  state.pc = pc;
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const remote = new MediaStream();
  $('remote').srcObject = remote;
  pc.ontrack = (e) => { remote.addTrack(e.track); $('remote').play().catch(() => {}); };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'connected') setStatus(`watching ${room}`, true);
    if (pc.connectionState === 'failed') { showError('Lost the connection to the server.'); stopWatching(); }
  };
  await pc.setLocalDescription(await pc.createOffer());
  // Non-trickle: every candidate goes in the offer (WHEP servers need not take PATCH).
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 3000);
  });
  const headers = { 'Content-Type': 'application/sdp' };
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  const q = pin ? `?pin=${encodeURIComponent(pin)}` : '';
  let resp;
  try {
    // In a cluster another node answers 307 to the room's node; fetch follows it.
    resp = await fetch(`/whep/${encodeURIComponent(room)}${q}`, { method: 'POST', headers, body: pc.localDescription.sdp });
  } catch (e) { pc.close(); state.pc = null; return showError('The server is unreachable.'); }
  const body = await resp.text();
  if (resp.status !== 201) { pc.close(); state.pc = null; setStatus('not connected'); return showError(body || `refused (${resp.status})`); }
  state.watchSession = new URL(resp.headers.get('Location'), resp.url).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  $('lobby').hidden = true; $('call').hidden = false;
  $('room-name').textContent = room;
  setStatus('connecting media…');
}
function stopWatching() {
  const url = state.watchSession;
  const headers = accessToken ? { Authorization: `Bearer ${accessToken}` } : {};
  if (url) fetch(url, { method: 'DELETE', headers }).catch(() => {});
  if (state.pc) state.pc.close();
  Object.assign(state, { pc: null, watchSession: null });
  $('call').hidden = true; $('lobby').hidden = false;
  setStatus('not connected');
}
if (watchOnly) {
  document.body.classList.add('watch-only');
  $('join').textContent = 'Watch';
  $('name').required = false;
}

function leave(fromServer) {
  state.leaving = true;
  if (!fromServer) send({ type: 'leave' });
  if (state.ws) state.ws.close();
  if (state.pc) state.pc.close();
  stopPresenting(true);
  if (state.local) state.local.getTracks().forEach((t) => t.stop());
  Object.assign(state, { ws: null, pc: null, local: null, me: null, speaker: null, pendingCandidates: [] });
  state.participants.clear();
  $('call').hidden = true; $('lobby').hidden = false; $('rec').hidden = true;
  setStatus('not connected');
}

// What the server can use of our camera (docs/protocol.md, `sendLimit`): the camera's
// sender is scaled down until its picture just covers width x height (never up), and
// capped in bitrate and frame rate. Applied again when the camera changes.
async function applySendLimit() {
  const l = state.sendLimit;
  const sender = state.pc && state.pc.getSenders().find((s) => s.track && s.track.kind === 'video');
  if (!l || !sender) return;
  const { width, height } = sender.track.getSettings();
  const scale = width && height ? Math.max(1, Math.min(width / l.width, height / l.height)) : 1;
  const p = sender.getParameters();
  if (!p.encodings || !p.encodings.length) return;
  for (const e of p.encodings) {
    e.scaleResolutionDownBy = scale;
    e.maxBitrate = l.maxBitrate;
    e.maxFramerate = l.maxFramerate;
  }
  await sender.setParameters(p);
  state.sendLimitApplied = { scale, maxBitrate: l.maxBitrate, maxFramerate: l.maxFramerate };
}

async function switchDevice(kind, deviceId) {
  if (!state.pc) return;
  const stream = await getMedia(kind === 'video' ? deviceId : 'none', kind === 'audio' ? deviceId : 'none');
  const track = kind === 'video' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
  const sender = state.pc.getSenders().find((s) => s.track && s.track.kind === kind);
  if (sender && track) {
    const old = sender.track;
    await sender.replaceTrack(track);
    old.stop(); state.local.removeTrack(old); state.local.addTrack(track);
    if (kind === 'video') await applySendLimit();
    track.enabled = kind === 'audio' ? !state.micMuted : !state.camMuted;
  }
}

$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (watchOnly) watch($('room').value.trim(), $('pin').value.trim());
  else join($('room').value.trim(), $('name').value.trim(), $('pin').value.trim());
});
$('dial').addEventListener('click', () => {
  const to = $('dial-to').value.trim();
  if (!/^sips?:/.test(to)) { showError('Give a sip: address to call, e.g. sip:bob@pbx.example.com'); return; }
  moderate({ action: 'dial', to });
  $('dial-to').value = '';
});
$('mute-all').addEventListener('click', () => moderate({ action: 'muteAll', muted: true }));
$('unmute-all').addEventListener('click', () => moderate({ action: 'muteAll', muted: false }));
$('lock').addEventListener('click', () => moderate({ action: 'lock', locked: !state.locked }));
$('set-pin').addEventListener('click', () => moderate({ action: 'setPin', pin: $('new-pin').value.trim() || null }));
$('leave').onclick = () => (watchOnly ? stopWatching() : leave(false));
$('present').onclick = () => (state.presentPc ? stopPresenting(false) : startPresenting().catch((err) => showError(String(err))));
$('stop-presentation').onclick = () => moderate({ action: 'stopPresentation' });
$('layout').onchange = (e) => send({ type: 'setLayout', layout: e.target.value });
$('mute-mic').onclick = (e) => {
  state.micMuted = !state.micMuted;
  state.local && state.local.getAudioTracks().forEach((t) => { t.enabled = !state.micMuted; });
  e.target.textContent = state.micMuted ? 'Unmute mic' : 'Mute mic'; e.target.classList.toggle('off', state.micMuted);
  send({ type: 'mute', audio: state.micMuted });
};
$('mute-cam').onclick = (e) => {
  state.camMuted = !state.camMuted;
  state.local && state.local.getVideoTracks().forEach((t) => { t.enabled = !state.camMuted; });
  e.target.textContent = state.camMuted ? 'Start camera' : 'Stop camera'; e.target.classList.toggle('off', state.camMuted);
  send({ type: 'mute', video: state.camMuted });
};
$('camera-in-call').onchange = (e) => switchDevice('video', e.target.value).catch((err) => showError(String(err)));
$('mic-in-call').onchange = (e) => switchDevice('audio', e.target.value).catch((err) => showError(String(err)));

// Connection quality, from the receive side every 2 s: bitrate, loss, picture and frame rate.
let lastQuality = null;
async function updateQuality() {
  const el = $('quality');
  if (!state.pc) { lastQuality = null; return; }
  const s = await state.receiveStats();
  const now = performance.now();
  const bytes = (s.video ? s.video.bytesReceived + s.video.headerBytesReceived : 0) + (s.audio ? s.audio.bytesReceived + s.audio.headerBytesReceived : 0);
  const lost = s.video ? s.video.packetsLost : 0;
  const got = (s.video ? s.video.packetsReceived : 0);
  const frames = s.video ? s.video.framesDecoded : 0;
  if (lastQuality) {
    const dt = (now - lastQuality.at) / 1000;
    const kbps = Math.max(0, (bytes - lastQuality.bytes) * 8 / dt / 1000);
    const dLost = Math.max(0, lost - lastQuality.lost), dGot = Math.max(0, got - lastQuality.got);
    const loss = dLost + dGot > 0 ? (100 * dLost) / (dLost + dGot) : 0;
    const fps = Math.max(0, (frames - lastQuality.frames) / dt);
    const level = kbps < 1 ? 'poor' : loss < 2 && fps >= 20 ? 'good' : loss < 8 && fps >= 10 ? 'fair' : 'poor';
    const size = s.video && s.video.frameHeight ? `${s.video.frameWidth}×${s.video.frameHeight}` : 'no video';
    el.textContent = `● ${level} · ${kbps.toFixed(0)} kbit/s · ${loss.toFixed(1)} % loss · ${size} @ ${fps.toFixed(0)} fps`;
    el.className = `quality ${level}`;
    state.quality = { level, kbps, loss, fps, size };
  }
  lastQuality = { at: now, bytes, lost, got, frames };
}
setInterval(() => { updateQuality().catch(() => {}); }, 2000);

// Test/automation helpers: receive-side stats and a pixel check of the composite.
state.receiveStats = async () => {
  const out = { video: null, audio: null, firstFrameMs: state.firstFrameMs ?? null };
  if (!state.pc) return out;
  (await state.pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      out.video = {
        framesDecoded: r.framesDecoded || 0, frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0,
        bytesReceived: r.bytesReceived || 0, headerBytesReceived: r.headerBytesReceived || 0,
        keyFramesDecoded: r.keyFramesDecoded || 0, totalFreezesDuration: r.totalFreezesDuration || 0,
        freezeCount: r.freezeCount || 0, retransmittedPacketsReceived: r.retransmittedPacketsReceived || 0,
        packetsLost: r.packetsLost || 0, packetsReceived: r.packetsReceived || 0,
        nackCount: r.nackCount || 0, pliCount: r.pliCount || 0,
      };
    }
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      out.audio = {
        totalAudioEnergy: r.totalAudioEnergy || 0, packetsReceived: r.packetsReceived || 0,
        bytesReceived: r.bytesReceived || 0, headerBytesReceived: r.headerBytesReceived || 0,
        concealedSamples: r.concealedSamples || 0, totalSamplesReceived: r.totalSamplesReceived || 0,
      };
    }
  });
  return out;
};
state.pixelSpread = () => {
  const v = $('remote');
  if (!v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = 160; c.height = 90;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0, c.width, c.height);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const colours = new Set();
  for (let i = 0; i < d.length; i += 4) colours.add(((d[i] >> 4) << 8) | ((d[i + 1] >> 4) << 4) | (d[i + 2] >> 4));
  return { distinctColours: colours.size, width: v.videoWidth, height: v.videoHeight };
};

navigator.mediaDevices && listDevices().catch(() => {});
if (params.get('room')) $('room').value = params.get('room');
if (params.get('name')) $('name').value = params.get('name');
if (watchOnly && params.get('autojoin') && params.get('room')) watch(params.get('room'), params.get('pin') || '');
else if (params.get('autojoin') && params.get('room') && params.get('name')) join(params.get('room'), params.get('name'), params.get('pin') || '');
