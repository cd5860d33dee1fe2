// The demo page: join a room with a development token, publish camera and microphone, see and
// hear everybody else, with a small stats overlay per remote stream.
//
// URL parameters (all optional): room, name, codec (VP8, VP9, H264), token (skip the development
// token endpoint), server (signalling URL; default: this page's origin), autojoin=1,
// simulcast=1 (the camera as three simulcast encodings, a quarter, half and full size),
// scalabilityMode (one SVC encoding, e.g. L3T3_KEY with codec=VP9), width and height (the
// camera size asked for, default 640x480), publish=0 (watch only: no camera, no microphone),
// role (the role of the development token, e.g. teacher: a chat moderator by default).
//
// window.fanoutDemo exposes the client and the figures the end-to-end tests read.

import { FanoutClient, FanoutError } from './fanout-client.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const server = params.get('server') || location.origin;

const state = {
  /** @type {FanoutClient | null} */
  client: null,
  localStream: null,
  /** Own producers by kind. */
  producers: new Map(),
  /** Remote participants' tiles by participant id. */
  tiles: new Map(),
  statsTimer: null,
  joinStartedAt: null,
  firstRemoteFrameAt: null,
  /** Transports the server closed: [{direction, code, at}], for the tests. */
  transportCloses: [],
  /** Transports that could not be set up: [{direction, code, reason, afterJoinMs}]. */
  transportFailures: [],
};

// ---- messages ------------------------------------------------------------------------

/** What a person should read for a failure, by the server's stable code. */
function describe(err) {
  const code = err?.code ?? err?.name;
  const text = err?.message ?? String(err);
  switch (code) {
    case 'TOKEN_MISSING':
    case 'TOKEN_MALFORMED':
    case 'TOKEN_EXPIRED':
    case 'TOKEN_INVALID_SIGNATURE':
    case 'TOKEN_INVALID':
      return `Your access token was refused (${code}): ${text}`;
    case 'ROOM_NOT_ALLOWED':
      return `Your token does not allow joining this room (${code}).`;
    case 'ROOM_FULL':
      return `This room is full (${code}); try another room or try again later.`;
    case 'ROOM_NOT_FOUND':
      return `This room does not exist or is not ready yet (${code}): ${text}`;
    case 'WORKER_UNAVAILABLE':
    case 'SHUTTING_DOWN':
    case 'PORTS_EXHAUSTED':
      return `The media server is unavailable right now (${code}); try again shortly.`;
    case 'PUBLISH_NOT_ALLOWED':
      return `You may watch but not publish in this room (${code}).`;
    case 'NO_DEV_TOKEN':
      return text;
    case 'SERVER_UNREACHABLE':
      return `Cannot reach the Fanout server at ${server}. Is it running?`;
    case 'TRANSPORT_FAILED':
      return `The media connection failed (${code}): ${text}`;
    case 'INVALID_ROOM_ID':
      return `That room name cannot be used (${code}): ${text}`;
    case 'DEV_TOKENS_UNAVAILABLE':
      return `${text} (${code})`;
    case 'ICE_TIMEOUT':
    case 'ICE_CONSENT_LOST':
    case 'DTLS_FAILED':
    case 'DTLS_FINGERPRINT_MISMATCH':
      return `The media connection could not be kept up (${code}): ${text}`;
    case 'CHAT_MESSAGE_TOO_LONG':
      return `That message is too long to send (${code}): ${text}`;
    case 'CHAT_MESSAGE_EMPTY':
      return 'Type a message first.';
    case 'RATE_LIMITED':
      return `You are sending too fast (${code}): ${text}`;
    case 'CHAT_DELETE_NOT_ALLOWED':
    case 'CHAT_MESSAGE_NOT_FOUND':
      return `${text} (${code})`;
    case 'NotAllowedError':
      return 'Camera and microphone access was denied; allow it in the browser and join again.';
    case 'NotFoundError':
      return 'No camera or microphone was found; joining to watch only.';
    default:
      return code ? `${text} (${code})` : text;
  }
}

function showMessage(text, kind = 'error') {
  const box = $('message');
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
}

function clearMessage() {
  $('message').hidden = true;
  $('message').textContent = '';
}

function setStatus(text, pageState) {
  $('status').textContent = text;
  $('status').dataset.state = pageState;
  document.body.dataset.state = pageState;
}

// ---- joining and leaving -------------------------------------------------------------

/**
 * A development token from the server that served this page (`GET /dev/token`, embedded mode
 * only), standing in for the application backend that issues tokens in a real deployment.
 */
async function devToken(room, name) {
  const url = new URL('dev/token', location.href);
  url.searchParams.set('name', name);
  url.searchParams.set('room', room);
  if (params.get('role')) url.searchParams.set('role', params.get('role'));
  let response;
  try {
    response = await fetch(url);
  } catch {
    throw new FanoutError('SERVER_UNREACHABLE', `cannot reach ${url.origin}`);
  }
  if (response.status === 404 || response.status === 405) {
    throw new FanoutError(
      'NO_DEV_TOKEN',
      'This server does not hand out development tokens: it is not running in embedded (local) mode. ' +
        'Start it with ./scripts/run-local.sh, or paste a token from your application under Options.',
    );
  }
  if (!response.ok) {
    const text = await response.text();
    let refusal;
    try {
      refusal = JSON.parse(text).error;
    } catch {
      // Not ours: say what came back.
    }
    if (refusal?.code) throw new FanoutError(refusal.code, refusal.message ?? text);
    throw new FanoutError('NO_DEV_TOKEN', `The development token endpoint answered ${response.status}: ${text}`);
  }
  const type = response.headers.get('content-type') ?? '';
  if (type.includes('json')) {
    const body = await response.json();
    return body.token ?? body.accessToken;
  }
  return (await response.text()).trim();
}

function codecFromInput(value) {
  if (!value) return '';
  const name = value.includes('/') ? value.split('/')[1] : value;
  return `video/${name.toUpperCase()}`;
}

/**
 * A room id from what a person typed: room ids are lowercase letters, digits and '-' (1-63,
 * beginning and ending with a letter or digit; docs/protocol.md), the same on every server, so
 * "Maths 101" becomes "maths-101". Empty when nothing usable is left.
 */
export function roomIdFromInput(value) {
  return value
    .trim()
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
}

async function join(event) {
  event?.preventDefault();
  const typed = $('room').value;
  const room = roomIdFromInput(typed);
  const name = $('name').value.trim();
  if (!room) {
    showMessage('Enter a room name: letters, digits and dashes (for example maths-101).', 'warning');
    $('room').focus();
    return;
  }
  if (!name) {
    showMessage('Enter your name: the others see it next to your video.', 'warning');
    $('name').focus();
    return;
  }
  clearMessage();
  if (room !== typed.trim()) {
    // Said, not done silently: "Maths" and "maths" are one room.
    $('room').value = room;
    // A 'notice' stays up after the join (an 'info' one is cleared by it).
    showMessage(`Room names are lowercase letters, digits and dashes: joining "${room}".`, 'notice');
  }
  $('join').disabled = true;
  setStatus('joining…', 'joining');
  state.joinStartedAt = performance.now();
  state.firstRemoteFrameAt = null;
  const client = new FanoutClient();
  try {
    const token = $('token').value.trim() || (await devToken(room, name));
    const size = { width: Number(params.get('width')) || 640, height: Number(params.get('height')) || 480 };
    let media;
    if (params.get('publish') === '0') media = Promise.resolve(null);
    else if (!navigator.mediaDevices) {
      // Browsers give pages the camera only on https:// or localhost.
      showMessage('This page is not a secure origin (https:// or localhost), so the browser gives it no camera or microphone: you can watch and listen only.', 'warning');
      media = Promise.resolve(null);
    } else {
      media = navigator.mediaDevices.getUserMedia({ audio: true, video: size }).catch((err) => {
        showMessage(describe(err), 'warning');
        return null;
      });
    }
    await client.connect({ url: server, token });
    state.client = client;
    wire(client);
    await client.join(room, { displayName: name });
    showCall(room, name);
    state.localStream = await media;
    if (state.localStream) await publishLocal(client, state.localStream);
    setStatus(`in room ${room}`, 'joined');
  } catch (err) {
    console.error('fanout demo: join failed', err);
    showMessage(describe(err));
    await teardown();
    setStatus('not connected', 'error');
  } finally {
    $('join').disabled = false;
  }
}

/** The camera's encodings the URL asks for (simulcast=1, scalabilityMode=...), or undefined. */
function videoEncodings() {
  if (params.get('simulcast') === '1') {
    // Modest caps on the lower two, so that Chrome sends the top one as soon as its bandwidth
    // estimate reaches about 0.4 Mbps (it enables a layer once the layers below get theirs).
    return [
      { scaleResolutionDownBy: 4, maxBitrate: 80000 },
      { scaleResolutionDownBy: 2, maxBitrate: 200000 },
      { scaleResolutionDownBy: 1, maxBitrate: 900000 },
    ];
  }
  const scalabilityMode = params.get('scalabilityMode');
  return scalabilityMode ? [{ scalabilityMode }] : undefined;
}

async function publishLocal(client, stream) {
  $('local-video').srcObject = stream;
  const codecName = codecFromInput($('codec').value);
  for (const track of stream.getTracks()) {
    const options = { appData: { source: track.kind === 'video' ? 'camera' : 'microphone' } };
    if (track.kind === 'video' && codecName) {
      const codec = client.sendCodec(codecName);
      if (!codec) throw new FanoutError('UNSUPPORTED_CODEC', `neither this browser nor the room supports ${codecName}`);
      options.codec = codec;
    }
    if (track.kind === 'video') {
      const encodings = videoEncodings();
      if (encodings) options.encodings = encodings;
    }
    try {
      const producer = await client.publish(track, options);
      state.producers.set(track.kind, producer);
    } catch (err) {
      showMessage(describe(err), 'warning');
    }
  }
  updateControls();
}

async function leave() {
  const client = state.client;
  await teardown();
  if (client) showMessage('You left the room.', 'info');
  setStatus('not connected', 'idle');
}

async function teardown() {
  clearInterval(state.statsTimer);
  state.statsTimer = null;
  const client = state.client;
  state.client = null;
  try {
    await client?.close();
  } catch (err) {
    console.warn('fanout demo: leaving', err);
  }
  state.localStream?.getTracks().forEach((t) => t.stop());
  state.localStream = null;
  state.producers.clear();
  for (const id of [...state.tiles.keys()]) removeTile(id);
  $('local-video').srcObject = null;
  $('call').hidden = true;
  $('join-form').hidden = false;
  renderParticipants(null);
  renderChat(null);
  showChatError(null);
}

function wire(client) {
  client.on('joined', () => {
    // Also after an automatic rejoin: its "rejoining…" notice is done.
    if ($('message').dataset.kind === 'info') clearMessage();
    renderParticipants(client);
    renderChat(client);
  });
  client.on('chat-message', () => renderChat(client));
  client.on('chat-message-deleted', () => renderChat(client));
  client.on('participant-joined', (p) => {
    tileFor(p.participantId);
    renderParticipants(client);
  });
  client.on('participant-left', ({ participantId }) => {
    removeTile(participantId);
    renderParticipants(client);
  });
  client.on('remote-track', addRemoteTrack);
  client.on('remote-track-ended', removeRemoteTrack);
  client.on('remote-track-paused', ({ participantId, producerId }) => setRemotePaused(participantId, producerId, true));
  client.on('remote-track-resumed', ({ participantId, producerId }) => setRemotePaused(participantId, producerId, false));
  client.on('rejoining', ({ reason, code }) => {
    const why = {
      'room-migrated': 'The room moved to another media server; rejoining…',
      removed: `The media server dropped this call (${code}); rejoining…`,
    };
    showMessage(why[reason] ?? 'Reconnected; rejoining the room…', 'info');
    for (const id of [...state.tiles.keys()]) removeTile(id);
  });
  client.on('rejoin-retrying', ({ code, waitMs }) => {
    showMessage(`The room is moving to another media server (${code}); trying again in ${(waitMs / 1000).toFixed(1)} s…`, 'info');
  });
  client.on('transport-closed', ({ direction, code, reason }) => {
    state.transportCloses.push({ direction, code, at: performance.now() });
    const what = direction === 'send' ? 'sending' : 'receiving';
    showMessage(`The ${what} media connection closed (${code}: ${reason}); reconnecting…`, 'info');
  });
  client.on('transport-failed', ({ direction, code, reason }) => {
    state.transportFailures.push({ direction, code, reason, afterJoinMs: performance.now() - state.joinStartedAt });
    const what = direction === 'send' ? 'Sending your camera and microphone' : 'Receiving the others';
    showMessage(`${what} failed: the media connection could not be set up (${code}): ${reason}`);
  });
  client.on('transport-state', ({ state: connection }) => {
    const box = $('message');
    if (connection === 'connected' && !box.hidden && box.textContent.endsWith('reconnecting…')) {
      showMessage(box.textContent.replace(/reconnecting…$/, 'reconnected.'), 'info');
    }
  });
  client.on('republished', ({ producer, kind }) => {
    state.producers.set(kind, producer);
    updateControls();
  });
  client.on('error', (err) => showMessage(describe(err)));
  client.on('left', ({ reason }) => {
    if (reason === 'room-closed') {
      showMessage('The room was closed.', 'info');
      teardown();
    }
    if (reason === 'rejoin-failed') {
      // The 'error' before it said why; its message stays up.
      teardown();
      setStatus('rejoining failed', 'error');
    }
    if (reason === 'transport-failed') {
      // The message of 'transport-failed' stays up: it says why.
      teardown();
      setStatus('media connection failed', 'error');
    }
  });
  client.on('disconnected', ({ reason }) => {
    if (state.client !== client) return;
    showMessage(`Disconnected from the server (${reason}).`);
    teardown();
    setStatus('not connected', 'error');
  });
}

function showCall(room, name) {
  $('join-form').hidden = true;
  $('call').hidden = false;
  $('local-name').textContent = `${name} (you)`;
  document.title = `${room} · Fanout`;
  clearInterval(state.statsTimer);
  state.statsTimer = setInterval(updateStats, 1000);
}

// ---- controls ------------------------------------------------------------------------

async function toggle(kind) {
  const producer = state.producers.get(kind);
  if (!producer || !state.client) return;
  try {
    if (producer.paused) await state.client.resume(producer);
    else await state.client.pause(producer);
  } catch (err) {
    showMessage(describe(err));
  }
  updateControls();
}

function updateControls() {
  const mic = state.producers.get('audio');
  const cam = state.producers.get('video');
  $('toggle-mic').disabled = !mic;
  $('toggle-camera').disabled = !cam;
  $('toggle-mic').textContent = mic?.paused ? 'Unmute microphone' : 'Mute microphone';
  $('toggle-mic').dataset.on = String(!mic?.paused);
  $('toggle-camera').textContent = cam?.paused ? 'Start camera' : 'Stop camera';
  $('toggle-camera').dataset.on = String(!cam?.paused);
  const badges = [];
  if (mic?.paused) badges.push('muted');
  if (cam?.paused) badges.push('camera off');
  $('local-tile').querySelector('.badges').textContent = badges.join(' · ');
  $('local-tile').classList.toggle('no-video', !cam || cam.paused);
}

// ---- remote tiles --------------------------------------------------------------------

function displayName(participantId) {
  const p = state.client?.participants.get(participantId);
  return p?.fullName || p?.userId || participantId.slice(0, 8);
}

function tileFor(participantId) {
  let tile = state.tiles.get(participantId);
  if (tile) return tile;
  const figure = document.createElement('figure');
  figure.className = 'tile remote no-video';
  figure.dataset.participantId = participantId;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // sound comes from the <audio> element
  const audio = document.createElement('audio');
  audio.autoplay = true;
  const placeholder = document.createElement('div');
  placeholder.className = 'placeholder';
  placeholder.textContent = 'no video';
  const stats = document.createElement('pre');
  stats.className = 'stats';
  const caption = document.createElement('figcaption');
  const name = document.createElement('span');
  name.className = 'name';
  const badges = document.createElement('span');
  badges.className = 'badges';
  caption.append(name, ' ', badges);
  // The video's frame holds what overlays it (placeholder, name); the stats go under it, so
  // they hide nothing.
  const frame = document.createElement('div');
  frame.className = 'frame';
  frame.append(video, placeholder, caption);
  figure.append(frame, audio, stats);
  $('tiles').append(figure);
  tile = { figure, video, audio, stats, name, badges, placeholder, tracks: new Map(), previous: new Map() };
  state.tiles.set(participantId, tile);
  name.textContent = displayName(participantId);
  return tile;
}

function removeTile(participantId) {
  const tile = state.tiles.get(participantId);
  if (!tile) return;
  tile.video.srcObject = null;
  tile.audio.srcObject = null;
  tile.figure.remove();
  state.tiles.delete(participantId);
}

function addRemoteTrack({ participantId, producerId, kind, track, consumer, paused }) {
  const tile = tileFor(participantId);
  tile.name.textContent = displayName(participantId);
  tile.tracks.set(producerId, { kind, track, consumer, paused });
  const element = kind === 'video' ? tile.video : tile.audio;
  element.srcObject = new MediaStream([track]);
  element.dataset.producerId = producerId;
  element.play().catch(() => {
    // Autoplay without a user gesture may be refused; the join click usually counts as one.
  });
  if (kind === 'video') {
    tile.videoProducerId = producerId;
    // No frames for a while (the sender's connection is gone): a placeholder, not a frozen
    // picture.
    track.onmute = () => showVideo(tile);
    track.onunmute = () => showVideo(tile);
    watchFirstFrame(tile.video);
  }
  showVideo(tile);
  renderBadges(tile);
}

/** Shows the tile's video, or its placeholder when there is none, it is paused or stalled. */
function showVideo(tile) {
  const entry = tile.videoProducerId && tile.tracks.get(tile.videoProducerId);
  const live = entry && !entry.paused && !entry.track.muted && entry.track.readyState === 'live';
  tile.figure.classList.toggle('no-video', !live);
  tile.placeholder.textContent = entry?.paused ? 'camera off' : entry ? 'video paused' : 'no video';
}

function watchFirstFrame(video) {
  if (state.firstRemoteFrameAt !== null || !('requestVideoFrameCallback' in video)) return;
  video.requestVideoFrameCallback(() => {
    if (state.firstRemoteFrameAt === null) state.firstRemoteFrameAt = performance.now();
  });
}

function removeRemoteTrack({ participantId, producerId, kind }) {
  const tile = state.tiles.get(participantId);
  if (!tile) return;
  tile.tracks.delete(producerId);
  tile.previous.delete(producerId);
  const element = kind === 'video' ? tile.video : tile.audio;
  if (element.dataset.producerId === producerId) {
    element.srcObject = null;
    delete element.dataset.producerId;
    if (kind === 'video') tile.videoProducerId = null;
  }
  showVideo(tile);
  renderBadges(tile);
}

function setRemotePaused(participantId, producerId, paused) {
  const tile = state.tiles.get(participantId);
  const entry = tile?.tracks.get(producerId);
  if (!entry) return;
  entry.paused = paused;
  showVideo(tile);
  renderBadges(tile);
}

function renderBadges(tile) {
  const badges = [];
  for (const { kind, paused } of tile.tracks.values()) {
    if (paused) badges.push(kind === 'audio' ? 'muted' : 'camera off');
  }
  if (![...tile.tracks.values()].some((t) => t.kind === 'audio')) badges.push('no audio');
  tile.badges.textContent = badges.join(' · ');
}

function renderParticipants(client) {
  const list = $('participants');
  list.replaceChildren();
  const participants = client ? [...client.participants.values()] : [];
  for (const p of participants) {
    const item = document.createElement('li');
    item.dataset.participantId = p.participantId;
    item.textContent = p.fullName || p.userId || p.participantId;
    if (p.participantId === client.participantId) item.textContent += ' (you)';
    if (p.role) {
      const role = document.createElement('small');
      role.textContent = ` ${p.role}`;
      item.append(role);
    }
    list.append(item);
  }
  $('participant-count').textContent = String(participants.length);
  for (const [id, tile] of state.tiles) tile.name.textContent = displayName(id);
}

// ---- chat ----------------------------------------------------------------------------

/** The room's chat as the client has it; a delete button where this participant may delete. */
function renderChat(client) {
  const list = $('chat-messages');
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
  list.replaceChildren();
  for (const message of client?.chat ?? []) {
    const item = document.createElement('li');
    item.dataset.messageId = message.messageId;
    item.dataset.userId = message.from.userId;
    const from = document.createElement('span');
    from.className = 'from';
    from.textContent = message.from.fullName || message.from.userId;
    if (message.from.participantId === client.participantId) from.textContent += ' (you)';
    const when = document.createElement('small');
    when.textContent = ` ${new Date(message.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`;
    from.append(when);
    // textContent, never HTML: the text is whatever another participant typed.
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = message.text;
    item.append(from, text);
    if (client.mayDeleteChat(message)) {
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'delete';
      remove.textContent = '×';
      remove.title = 'Delete this message for everybody';
      remove.setAttribute('aria-label', 'Delete message');
      remove.addEventListener('click', () => deleteChat(client, message.messageId));
      item.append(remove);
    }
    list.append(item);
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function showChatError(err) {
  const box = $('chat-error');
  box.hidden = !err;
  box.textContent = err ? describe(err) : '';
  if (err) box.dataset.code = err.code ?? '';
  else delete box.dataset.code;
}

async function sendChat(event) {
  event.preventDefault();
  const client = state.client;
  const input = $('chat-text');
  if (!client || !input.value.trim()) return;
  $('chat-send').disabled = true;
  try {
    await client.sendChat(input.value);
    input.value = '';
    showChatError(null);
  } catch (err) {
    // The text stays in the box, to shorten or send again.
    showChatError(err);
  } finally {
    $('chat-send').disabled = false;
    input.focus();
  }
}

async function deleteChat(client, messageId) {
  try {
    await client.deleteChat(messageId);
    showChatError(null);
  } catch (err) {
    showChatError(err);
  }
}

// ---- stats ---------------------------------------------------------------------------

/** The figures of one remote stream from its consumer's getStats(). */
async function streamStats(consumer) {
  const report = await consumer.getStats();
  let inbound;
  let rtt;
  let pairRtt;
  const codecs = new Map();
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === consumer.kind) inbound = s;
    else if (s.type === 'remote-outbound-rtp' && s.roundTripTime !== undefined) rtt = s.roundTripTime;
    else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && s.currentRoundTripTime !== undefined) pairRtt = s.currentRoundTripTime;
    else if (s.type === 'codec') codecs.set(s.id, s.mimeType);
  });
  if (!inbound) return null;
  return {
    consumerId: consumer.id,
    kind: consumer.kind,
    timestamp: inbound.timestamp,
    bytesReceived: inbound.bytesReceived ?? 0,
    packetsReceived: inbound.packetsReceived ?? 0,
    packetsLost: inbound.packetsLost ?? 0,
    framesDecoded: inbound.framesDecoded ?? 0,
    framesDropped: inbound.framesDropped ?? 0,
    frameWidth: inbound.frameWidth,
    frameHeight: inbound.frameHeight,
    framesPerSecond: inbound.framesPerSecond,
    audioLevel: inbound.audioLevel,
    totalAudioEnergy: inbound.totalAudioEnergy,
    codec: codecs.get(inbound.codecId),
    roundTripTime: rtt ?? pairRtt,
  };
}

/** Every remote stream's figures: [{participantId, producerId, kind, ...streamStats}]. */
async function allStats() {
  const rows = [];
  for (const [participantId, tile] of state.tiles) {
    for (const [producerId, { consumer }] of tile.tracks) {
      const s = await streamStats(consumer).catch(() => null);
      if (s) rows.push({ participantId, producerId, ...s });
    }
  }
  return rows;
}

function formatStats(row, previous) {
  const seconds = previous ? (row.timestamp - previous.timestamp) / 1000 : 0;
  const kbps = seconds > 0 ? Math.round(((row.bytesReceived - previous.bytesReceived) * 8) / seconds / 1000) : 0;
  const total = row.packetsReceived + row.packetsLost;
  const loss = total > 0 ? ((100 * row.packetsLost) / total).toFixed(1) : '0.0';
  const rtt = row.roundTripTime !== undefined ? `${Math.round(row.roundTripTime * 1000)} ms` : '–';
  const codec = row.codec ? row.codec.split('/')[1] : row.kind;
  if (row.kind === 'video') {
    const size = row.frameWidth ? `${row.frameWidth}×${row.frameHeight}` : '–';
    const fps = row.framesPerSecond !== undefined ? ` ${Math.round(row.framesPerSecond)} fps` : '';
    return `${codec} ${size}${fps}\n${kbps} kbps · loss ${loss}% · rtt ${rtt}`;
  }
  const level = row.audioLevel !== undefined ? ` · level ${row.audioLevel.toFixed(2)}` : '';
  return `${codec} ${kbps} kbps · loss ${loss}%${level}`;
}

async function updateStats() {
  for (const tile of state.tiles.values()) {
    const lines = [];
    for (const [producerId, { consumer }] of tile.tracks) {
      const row = await streamStats(consumer).catch(() => null);
      if (!row) continue;
      lines[row.kind === 'video' ? 'unshift' : 'push'](formatStats(row, tile.previous.get(producerId)));
      tile.previous.set(producerId, row);
    }
    tile.stats.textContent = lines.join('\n');
  }
}

// ---- start ---------------------------------------------------------------------------

window.fanoutDemo = {
  get client() {
    return state.client;
  },
  get producers() {
    return state.producers;
  },
  stats: allStats,
  /** The own camera's outbound-rtp figures, one row per encoding: [{rid, frameWidth, ...}]. */
  async outboundVideoStats() {
    const producer = state.producers.get('video');
    if (!producer) return [];
    const rows = [];
    let availableOutgoingBitrate;
    const report = await producer.getStats();
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate !== undefined) availableOutgoingBitrate = s.availableOutgoingBitrate;
    });
    report.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      rows.push({
        rid: s.rid,
        ssrc: s.ssrc,
        scalabilityMode: s.scalabilityMode,
        frameWidth: s.frameWidth,
        frameHeight: s.frameHeight,
        framesEncoded: s.framesEncoded ?? 0,
        bytesSent: s.bytesSent ?? 0,
        active: s.active,
        qualityLimitationReason: s.qualityLimitationReason,
        availableOutgoingBitrate,
      });
    });
    return rows.sort((a, b) => String(a.rid).localeCompare(String(b.rid)));
  },
  get transportCloses() {
    return state.transportCloses;
  },
  get transportFailures() {
    return state.transportFailures;
  },
  /** Milliseconds from the Join click to the first remote video frame, or null. */
  get joinToFirstRemoteFrameMs() {
    return state.firstRemoteFrameAt === null ? null : state.firstRemoteFrameAt - state.joinStartedAt;
  },
};

$('room').value = params.get('room') || 'demo';
$('name').value = params.get('name') || `guest-${Math.random().toString(36).slice(2, 6)}`;
$('codec').value = codecFromInput(params.get('codec') ?? '');
$('token').value = params.get('token') ?? '';
if (params.get('codec') || params.get('token')) $('join-form').querySelector('details').open = true;
$('join-form').addEventListener('submit', join);
$('toggle-mic').addEventListener('click', () => toggle('audio'));
$('toggle-camera').addEventListener('click', () => toggle('video'));
$('leave').addEventListener('click', leave);
$('chat-form').addEventListener('submit', sendChat);
window.addEventListener('pagehide', () => state.client?.socket?.disconnect());
setStatus('not connected', 'idle');
if (params.get('autojoin') === '1') join();
