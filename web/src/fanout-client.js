// Fanout's browser client: socket.io-client + mediasoup-client for the Fanout protocol
// (docs/protocol.md), so an app can join a room, publish its camera and microphone and get
// every other participant's tracks without knowing the event names.
//
//   import { connect } from './fanout-client.js';
//
//   const client = await connect({ url: 'https://sfu.example.com', token });
//   client.on('remote-track', ({ participantId, track, kind }) => show(participantId, track));
//   client.on('remote-track-ended', ({ producerId }) => hide(producerId));
//   const { participantId, participants } = await client.join('maths-101');
//   const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
//   for (const track of stream.getTracks()) await client.publish(track);
//   ...
//   client.on('chat-message', ({ from, text }) => say(from.fullName, text));
//   await client.sendChat('hello');
//   const channel = await client.publishData({ label: 'reactions' });   // a data channel
//   client.on('data-message', ({ participantId, label, data }) => react(participantId, data));
//   channel.send('👍');
//   await client.leave();
//
// Requests use Socket.IO acknowledgements; a refusal rejects with a FanoutError carrying the
// server's stable `code` (e.g. ROOM_NOT_ALLOWED, WORKER_UNAVAILABLE) and a sentence to show.
// Work the client does on its own (subscribing to new producers, rejoining after a migration
// or a reconnect, replacing a transport the server closed) reports failures through the
// 'error' event instead.
//
// Events (client.on(name, listener)):
//   'remote-track'         {participantId, producerId, consumerId, kind, track, appData, paused, consumer}
//   'remote-track-ended'   {participantId, producerId, consumerId, kind, reason}
//   'remote-track-paused'  {participantId, producerId, kind}     the sender muted it
//   'remote-track-resumed' {participantId, producerId, kind}
//   'remote-track-layers'  {participantId, producerId, consumerId, spatialLayer, temporalLayer, state}
//                          the layers a simulcast/SVC track is received at changed; no layers
//                          while state is 'paused', 'producerPaused', 'producerInactive',
//                          'noLayerFits' (the downlink carries none) or 'waitingForKeyframe'
//   'remote-track-score'   {participantId, producerId, consumerId, score, producerScore, producerScores}
//   'producer-score'       {producerId, scores: [{encodingIdx, rid, ssrc, score}]}   own producers, 0-10
//   'participant-joined'   {participantId, userId, fullName, role, appData}
//   'participant-left'     {participantId}
//   'joined'               the join answer, also after an automatic rejoin; its `chat` is the
//                          room's recent chat history, oldest first (also in client.chat)
//   'chat-message'         {roomId, messageId, from: {participantId, userId, fullName, role}, text, at}
//                          once per message, own ones included; `at` is ms since the epoch
//   'chat-message-deleted' {roomId, messageId, by: {participantId, userId, fullName, role}}
//   'rejoining'            {reason: 'room-migrated' | 'reconnected' | 'removed', code?}
//   'rejoin-retrying'      {code, waitMs}  the rejoin's join was refused for now (the room is
//                          being placed or moved: ROOM_PENDING, WORKER_UNAVAILABLE,
//                          SHUTTING_DOWN); it is tried again after waitMs, for up to 30 s
//   'left'                 {roomId, reason, code?}  reason 'left', 'room-closed',
//                          'transport-failed' or 'rejoin-failed' (the rejoin gave up; 'error'
//                          has why)
//   'transport-closed'     {direction, transportId, code, reason}  the server closed a media
//                          transport (ICE_CONSENT_LOST, DTLS_FAILED, ...); the client replaces
//                          it and publishes and subscribes again on the new one
//   'transport-state'      {direction, transportId, state}  mediasoup-client's connection
//                          state ('connecting', 'connected', 'failed', ...)
//   'transport-failed'     {direction, transportId, code, reason}  a media transport could not
//                          be set up (no network path to the media worker works: ICE_FAILED
//                          when the browser gave up first, else the server's ICE_TIMEOUT,
//                          DTLS_FAILED, ...); once per transport. It is not replaced: that
//                          direction stays off until the next join (without a listener, this
//                          goes to 'error')
//   'republished'          {producer, previousProducerId, kind}  a track published again on a
//                          new transport (after 'transport-closed' or a rejoin)
//   'remote-data'          {participantId, dataProducerId, dataConsumerId, label, protocol, appData, dataConsumer}
//                          another participant's data channel (publishData) is subscribed to
//   'data-message'         {participantId, dataProducerId, label, protocol, data}  a message on one
//                          (data: a string, or an ArrayBuffer for binary messages)
//   'remote-data-ended'    {participantId, dataProducerId, reason}  its publisher closed it or left
//   'data-closed'          {dataProducer, reason}  one of our own data channels closed without
//                          unpublishData (its transport closed, or the room was left/rejoined)
//   'disconnected'         {reason}            the connection ended and will not come back
//   'error'                FanoutError         something the client did on its own failed

import { io } from 'socket.io-client';
import { Device } from 'mediasoup-client';

/** Default time to wait for a request's acknowledgement. */
const REQUEST_TIMEOUT_MS = 15000;

/** Transports of one direction replaced in a row, none connecting, before giving up. */
const MAX_RECOVERIES = 3;

/**
 * The server's codes for a transport that never got media through: the same network would
 * fail a new one the same way, so it is reported, not replaced.
 */
const SETUP_FAILURES = new Set(['ICE_TIMEOUT', 'DTLS_FAILED', 'DTLS_FINGERPRINT_MISMATCH']);

/** Chat messages the client keeps (client.chat), the oldest dropped first. */
const MAX_CHAT_MESSAGES = 1000;

/** The server's data-consumer-closed reasons as 'remote-data-ended' gives them. */
const DATA_CLOSE_REASONS = { producerClosed: 'producer-closed', transportClosed: 'transport-closed' };

/** Room notifications kept while a join is in flight, at most (see `_early`). */
const MAX_EARLY_EVENTS = 1000;

/**
 * Join refusals during a rejoin that mean "not yet" rather than "no": the room is being
 * placed or moved (`ROOM_PENDING`), or the worker it still points at is going away
 * (`WORKER_UNAVAILABLE`, `SHUTTING_DOWN`). A worker stopped gracefully puts its peers out with
 * `WORKER_SHUTDOWN` before the placement has moved the room, so the first joins hit these.
 */
const RETRYABLE_REJOIN = new Set(['WORKER_UNAVAILABLE', 'ROOM_PENDING', 'SHUTTING_DOWN']);
/** A rejoin retries those this long in all, waiting 250 ms, then twice as long, up to 2 s. */
const REJOIN_DEADLINE_MS = 30000;
const REJOIN_FIRST_WAIT_MS = 250;
const REJOIN_MAX_WAIT_MS = 2000;

/** A refusal from the server, or a failure of the client, with a stable code. */
export class FanoutError extends Error {
  /**
   * @param {string} code stable code, e.g. TOKEN_INVALID_SIGNATURE, ROOM_NOT_FOUND
   * @param {string} message a sentence a person can act on
   * @param {string} [event] the request that failed (e.g. 'join-room'), or 'connection'
   */
  constructor(code, message, event) {
    super(message);
    this.name = 'FanoutError';
    this.code = code;
    this.event = event;
  }
}

/**
 * A refused connection's `connect_error` message is `CODE: sentence`; anything else (the
 * server is down, a proxy answered) has no code of ours.
 */
export function connectErrorToFanoutError(err) {
  const message = String(err?.message ?? err);
  const match = /^([A-Z][A-Z0-9_]+): (.*)$/s.exec(message);
  if (match) return new FanoutError(match[1], match[2], 'connection');
  if (err?.type === 'TransportError' || /xhr poll error|websocket error|timeout/i.test(message)) {
    return new FanoutError('SERVER_UNREACHABLE', `cannot reach the signalling server (${message})`, 'connection');
  }
  return new FanoutError('CONNECTION_REFUSED', message, 'connection');
}

/** Connects and resolves with a ready {@link FanoutClient}; rejects with a FanoutError. */
export async function connect(options) {
  const client = new FanoutClient();
  await client.connect(options);
  return client;
}

/** A participant's connection to Fanout: at most one room at a time. */
export class FanoutClient {
  constructor() {
    /** @type {import('socket.io-client').Socket | null} */
    this.socket = null;
    /** @type {Device | null} */
    this.device = null;
    /** The joined room's id, or null. */
    this.roomId = null;
    /** This participant's id in the room (the server's), or null. */
    this.participantId = null;
    /** Everybody in the room by participant id, this participant included. */
    this.participants = new Map();
    /** Own producers by producer id. */
    this.producers = new Map();
    /** Remote tracks by producer id: {consumer, participantId, kind, appData}. */
    this.consumers = new Map();
    /** Own data channels (mediasoup DataProducers) by data producer id. */
    this.dataProducers = new Map();
    /**
     * Other participants' data channels by data producer id: {dataConsumer, participantId,
     * label, protocol, appData}, or {pending: true, ...} while subscribing.
     */
    this.dataConsumers = new Map();
    /** The room's chat, oldest first: the history sent on join, then what was said since. */
    this.chat = [];
    // Whether this participant may delete anybody's chat message (the join answer says).
    this._chatModerator = false;
    this._listeners = new Map();
    this._sendTransport = null;
    this._recvTransport = null;
    this._sendTransportPromise = null;
    this._recvTransportPromise = null;
    // Local tracks published, so a rejoin can publish them again.
    this._published = new Map();
    this._displayName = undefined;
    this._wasConnected = false;
    this._rejoining = null;
    /** Bumped by leave() and close(): a rejoin waiting to retry gives up when it changes. */
    this._rejoinGeneration = 0;
    // Bumped on every join and leave: work started for an older session drops its result.
    this._session = 0;
    // Room notifications that arrive while a join is in flight, handled once it is in: the
    // server sends what happens in the room from the moment it adds this socket, before the
    // join's answer, and a producer announced then would otherwise never be subscribed to.
    this._early = null;
    // Transports replaced in a row per direction, without one connecting in between.
    this._recoveries = { send: 0, recv: 0 };
    // Subscriptions whose consumers the worker closed with their transport, until the
    // transport-closed that follows resubscribes them: producerId -> subscription.
    this._orphaned = new Map();
    // Directions whose transport failed to set up, until the next join: direction -> FanoutError.
    this._failed = new Map();
    // Ids of transports reported failed (each once, whoever tells first), and of those that
    // connected once (their closes are recovered from, whatever the code).
    this._failedIds = new Set();
    this._connectedIds = new Set();
    // `enableUdp`, `enableTcp`, `preferUdp`, `preferTcp` for every create-transport.
    this._transportProtocols = {};
  }

  // ---- events ------------------------------------------------------------------------

  /** Adds a listener; returns a function that removes it. */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  _emit(event, payload) {
    for (const listener of [...(this._listeners.get(event) ?? [])]) {
      try {
        listener(payload);
      } catch (err) {
        console.error(`fanout: a '${event}' listener threw`, err);
      }
    }
  }

  _fail(error) {
    const err = error instanceof FanoutError ? error : new FanoutError('CLIENT_ERROR', String(error?.message ?? error));
    if (this._listeners.get('error')?.size) this._emit('error', err);
    else console.error('fanout:', err);
  }

  // ---- connection --------------------------------------------------------------------

  /**
   * Opens the Socket.IO connection with a JWT from the app's backend.
   * @param {{url?: string, token: string, socketOptions?: object, timeoutMs?: number, transportProtocols?: object}} options
   *   `url` defaults to the page's origin; `socketOptions` go to socket.io-client's `io()`;
   *   `transportProtocols` ({enableUdp, enableTcp, preferUdp, preferTcp}, each optional) go
   *   with every create-transport (the media worker's defaults otherwise).
   */
  connect({ url, token, socketOptions = {}, timeoutMs = REQUEST_TIMEOUT_MS, transportProtocols = {} } = {}) {
    if (this.socket) throw new FanoutError('ALREADY_CONNECTED', 'this client is connected already; create another one');
    this.requestTimeoutMs = timeoutMs;
    this._transportProtocols = transportProtocols;
    const socket = io(url ?? globalThis.location?.origin, {
      auth: { token },
      // WebSocket first (one round trip less); long polling where a proxy blocks WebSockets.
      transports: ['websocket', 'polling'],
      tryAllTransports: true,
      ...socketOptions,
    });
    this.socket = socket;
    this._listenToServer(socket);
    return new Promise((resolve, reject) => {
      const onConnect = () => {
        socket.off('connect_error', onError);
        resolve(this);
      };
      const onError = (err) => {
        socket.off('connect', onConnect);
        // A refused token will be refused again: do not let socket.io retry in the background.
        socket.disconnect();
        this.socket = null;
        reject(connectErrorToFanoutError(err));
      };
      socket.once('connect', onConnect);
      socket.once('connect_error', onError);
    });
  }

  _listenToServer(socket) {
    socket.on('connect', () => {
      if (this._wasConnected && this.roomId) {
        // A new connection is a new participant to the server; the old one has left.
        this._rejoin('reconnected');
      }
      this._wasConnected = true;
    });
    socket.on('disconnect', (reason) => {
      // 'io server disconnect' (e.g. the token expired) and 'io client disconnect' are final;
      // socket.io reconnects by itself after the others.
      if (reason === 'io server disconnect' || reason === 'io client disconnect') {
        this._dropRoomState('disconnected');
        this._emit('disconnected', { reason });
      }
    });
    socket.on('error', (payload) => {
      // Refusals of our own requests arrive through their acks too; only session-level errors
      // (e.g. TOKEN_EXPIRED) need reporting from here.
      if (payload?.event === 'connection') {
        this._fail(new FanoutError(payload.code, payload.message, payload.event));
      }
    });
    const onRoomEvent = (name, handler) =>
      socket.on(name, (p) => {
        const early = this._early;
        if (early && (p?.roomId === undefined || p.roomId === early.roomId)) {
          // Bounded: a join answers within seconds, and a room's events in that time are few.
          if (early.events.length < MAX_EARLY_EVENTS) early.events.push(() => handler(p));
          return;
        }
        handler(p);
      });
    onRoomEvent('participant-joined', (p) => {
      if (!this._inRoom(p)) return;
      this.participants.set(p.participantId, p);
      this._emit('participant-joined', p);
    });
    onRoomEvent('participant-left', (p) => {
      if (!this._inRoom(p)) return;
      for (const [producerId, entry] of this.consumers) {
        if (entry.participantId === p.participantId) this._dropConsumer(producerId, 'participant-left');
      }
      for (const [dataProducerId, entry] of this.dataConsumers) {
        if (entry.participantId === p.participantId) this._dropDataConsumer(dataProducerId, 'participant-left');
      }
      this.participants.delete(p.participantId);
      this._emit('participant-left', { participantId: p.participantId });
    });
    onRoomEvent('new-producer', (p) => {
      if (!this._inRoom(p) || p.participantId === this.participantId) return;
      this._subscribe(p, this._session);
    });
    onRoomEvent('producer-closed', (p) => {
      if (!this._inRoom(p)) return;
      if (this.consumers.has(p.producerId)) this._dropConsumer(p.producerId, 'producer-closed');
    });
    socket.on('consumer-closed', (p) => {
      if (!this._inRoom(p)) return;
      const entry = this.consumers.get(p.producerId);
      if (!entry) return;
      // The worker closes a transport's consumers before it says the transport closed: what
      // they received is subscribed to again on the transport that replaces it.
      if (p.reason === 'transportClosed') this._orphaned.set(p.producerId, subscription(p.producerId, entry));
      this._dropConsumer(p.producerId, p.reason ?? 'consumer-closed');
    });
    socket.on('consumer-layers-changed', (p) => {
      const entry = this._entryOfConsumer(p);
      if (!entry) return;
      entry.layers = p.spatialLayer === undefined || p.spatialLayer === null ? null : { spatialLayer: p.spatialLayer, temporalLayer: p.temporalLayer };
      entry.layerState = p.state;
      this._emit('remote-track-layers', {
        participantId: entry.participantId,
        producerId: p.producerId,
        consumerId: p.consumerId,
        spatialLayer: entry.layers?.spatialLayer ?? null,
        temporalLayer: entry.layers?.temporalLayer ?? null,
        state: p.state,
      });
    });
    socket.on('consumer-score', (p) => {
      const entry = this._entryOfConsumer(p);
      if (!entry) return;
      entry.score = { score: p.score, producerScore: p.producerScore, producerScores: p.producerScores };
      this._emit('remote-track-score', { participantId: entry.participantId, producerId: p.producerId, consumerId: p.consumerId, ...entry.score });
    });
    socket.on('producer-score', (p) => {
      if (!this._inRoom(p) || !this.producers.has(p.producerId)) return;
      this._emit('producer-score', { producerId: p.producerId, scores: p.scores });
    });
    onRoomEvent('new-data-producer', (p) => {
      if (!this._inRoom(p) || p.participantId === this.participantId) return;
      this._subscribeData(p, this._session);
    });
    onRoomEvent('data-producer-closed', (p) => {
      if (this._inRoom(p)) this._dropDataConsumer(p.dataProducerId, 'producer-closed');
    });
    socket.on('data-consumer-closed', (p) => {
      if (this._inRoom(p)) this._dropDataConsumer(p.dataProducerId, DATA_CLOSE_REASONS[p.reason] ?? 'consumer-closed');
    });
    onRoomEvent('chat-message', (p) => {
      if (this._inRoom(p)) this._addChat(p);
    });
    onRoomEvent('chat-message-deleted', (p) => {
      if (this._inRoom(p)) this._removeChat(p);
    });
    onRoomEvent('producer-paused', (p) => this._remotePaused(p, true));
    onRoomEvent('producer-resumed', (p) => this._remotePaused(p, false));
    socket.on('room-migrated', (p) => {
      if (this._inRoom(p)) this._rejoin('room-migrated');
    });
    socket.on('room-closed', (p) => {
      if (!this._inRoom(p)) return;
      const roomId = this.roomId;
      this._published.clear();
      this._dropRoomState('room-closed');
      this._emit('left', { roomId, reason: 'room-closed' });
    });
    socket.on('transport-closed', (p) => {
      if (this._inRoom(p)) this._transportClosed(p);
    });
    socket.on('transport-failed', (p) => {
      if (this._inRoom(p)) this._transportFailed(p);
    });
    socket.on('left-room', (p) => {
      // The answer to our own leave-room has no code; this is the server putting us out (the
      // media worker removed us: its transports closed, or the room closed).
      if (!p?.code || !this._inRoom(p)) return;
      if (p.code === 'ROOM_CLOSED') return; // 'room-closed' follows and ends the session.
      if (SETUP_FAILURES.has(p.code) && this._failed.size > 0) {
        // Its last transport never worked ('transport-failed' said so): joining again would
        // only fail again on this network.
        const roomId = this.roomId;
        this._published.clear();
        this._dropRoomState('transport-failed');
        this._emit('left', { roomId, reason: 'transport-failed', code: p.code });
        return;
      }
      this._rejoin('removed', p.code);
    });
  }

  /** The remote track a consumer notification is about, if it is still here. */
  _entryOfConsumer(p) {
    if (!this._inRoom(p)) return null;
    const entry = this.consumers.get(p.producerId);
    return entry && !entry.pending && entry.consumer.id === p.consumerId ? entry : null;
  }

  _inRoom(payload) {
    return this.roomId !== null && (payload?.roomId === undefined || payload.roomId === this.roomId);
  }

  _remotePaused(p, paused) {
    if (!this._inRoom(p)) return;
    const entry = this.consumers.get(p.producerId);
    if (!entry) return;
    entry.remotelyPaused = paused;
    this._emit(paused ? 'remote-track-paused' : 'remote-track-resumed', {
      participantId: entry.participantId,
      producerId: p.producerId,
      kind: entry.kind,
    });
  }

  /**
   * Emits a request and resolves with its acknowledgement; rejects with a FanoutError when the
   * server refuses it (`{error: {code, message}}`) or does not answer in time.
   */
  async request(event, payload = {}) {
    if (!this.socket) throw new FanoutError('NOT_CONNECTED', 'connect() first', event);
    let answer;
    try {
      answer = await this.socket.timeout(this.requestTimeoutMs ?? REQUEST_TIMEOUT_MS).emitWithAck(event, payload);
    } catch {
      throw new FanoutError('TIMEOUT', `the server did not answer '${event}' in time`, event);
    }
    if (answer && typeof answer === 'object' && answer.error) {
      throw new FanoutError(answer.error.code ?? 'UNKNOWN', answer.error.message ?? 'refused', event);
    }
    return answer;
  }

  // ---- room --------------------------------------------------------------------------

  /**
   * Joins a room, loads the mediasoup Device with the room's router capabilities, and
   * subscribes to everything already published there (and, from then on, to everything new).
   *
   * Who the participant is (user id, name, role) comes from the token; `displayName` is sent
   * as the seed's `fullName` for servers that take it from the payload, and ours ignore it.
   * @returns the join answer: {roomId, participantId, participants, mediasoup}
   */
  async join(roomId, { displayName, roomName, isProducer = true } = {}) {
    if (this.roomId) throw new FanoutError('ALREADY_IN_ROOM', `already in room ${this.roomId}; leave() first`, 'join-room');
    this._displayName = displayName;
    const session = ++this._session;
    const early = { roomId, events: [] };
    this._early = early;
    try {
      const joined = await this.request('join-room', {
        roomId,
        roomName,
        isProducer,
        ...(displayName ? { fullName: displayName } : {}),
      });
      if (session !== this._session) throw new FanoutError('LEFT', 'left the room while joining', 'join-room');
      await this._enter(joined, session);
      if (session === this._session) {
        this._early = null;
        for (const handle of early.events) handle();
      }
      return joined;
    } finally {
      if (this._early === early) this._early = null;
    }
  }

  async _enter(joined, session) {
    this.roomId = joined.roomId;
    this.participantId = joined.participantId;
    this.participants = new Map((joined.participants ?? []).map((p) => [p.participantId, p]));
    this.chat = (joined.chat ?? []).slice(-MAX_CHAT_MESSAGES);
    this._chatModerator = joined.chatModerator === true;
    const device = await Device.factory();
    await device.load({ routerRtpCapabilities: joined.mediasoup.rtpCapabilities });
    if (session !== this._session) return;
    this.device = device;
    this._emit('joined', joined);
    for (const producer of joined.mediasoup.producers ?? []) {
      const participantId = producer.participantId ?? producer.peerId;
      if (participantId === this.participantId) continue;
      this._subscribe({ ...producer, participantId }, session);
    }
    for (const dataProducer of joined.mediasoup.dataProducers ?? []) {
      const participantId = dataProducer.participantId ?? dataProducer.peerId;
      if (participantId === this.participantId) continue;
      this._subscribeData({ ...dataProducer, participantId }, session);
    }
  }

  /** Leaves the room: closes every transport, producer and consumer of this participant. */
  async leave() {
    this._rejoinGeneration++;
    if (!this.roomId) return;
    const roomId = this.roomId;
    this._published.clear();
    this._dropRoomState('left');
    try {
      await this.request('leave-room', { roomId });
    } finally {
      this._emit('left', { roomId, reason: 'left' });
    }
  }

  /** Leaves the room if in one and closes the connection. */
  async close() {
    this._rejoinGeneration++;
    try {
      if (this.socket?.connected) await this.leave();
    } finally {
      this.socket?.disconnect();
      this.socket = null;
    }
  }

  /** Closes the room's local objects; the server side is the caller's business. */
  _dropRoomState(reason) {
    this._session++;
    this._orphaned.clear();
    this._failed.clear();
    for (const producerId of [...this.consumers.keys()]) this._dropConsumer(producerId, reason);
    for (const dataProducerId of [...this.dataConsumers.keys()]) this._dropDataConsumer(dataProducerId, reason);
    for (const producer of this.producers.values()) producer.close();
    this.producers.clear();
    for (const dataProducer of [...this.dataProducers.values()]) this._dataProducerGone(dataProducer, reason);
    this._sendTransport?.close();
    this._recvTransport?.close();
    this._sendTransport = this._recvTransport = null;
    this._sendTransportPromise = this._recvTransportPromise = null;
    this.device = null;
    this.roomId = null;
    this.participantId = null;
    this.participants = new Map();
    this.chat = [];
    this._chatModerator = false;
  }

  /** After a migration or a reconnect: join again and publish the same tracks again. */
  _rejoin(reason, code) {
    if (this._rejoining) return this._rejoining;
    const roomId = this.roomId;
    const published = [...this._published.entries()];
    const displayName = this._displayName;
    this._emit('rejoining', { reason, ...(code ? { code } : {}) });
    this._rejoining = (async () => {
      this._dropRoomState(reason);
      this._published.clear();
      const generation = this._rejoinGeneration;
      try {
        await this._joinAgain(roomId, { displayName }, generation);
        const seen = new Set();
        for (const [previousProducerId, { track, options, producer: previous }] of published) {
          // A track republished on a replaced transport just before is listed twice.
          if (track.readyState !== 'live' || seen.has(track)) continue;
          seen.add(track);
          const producer = await this.publish(track, options);
          if (previous?.paused) await this.pause(producer);
          this._emit('republished', { producer, previousProducerId, kind: producer.kind });
        }
      } catch (err) {
        if (generation !== this._rejoinGeneration) return; // left meanwhile: nothing to report
        this._fail(err);
        if (!this.roomId) this._emit('left', { roomId, reason: 'rejoin-failed', code: err?.code });
      } finally {
        this._rejoining = null;
      }
    })();
    return this._rejoining;
  }

  /** join() for a rejoin: retries the refusals in RETRYABLE_REJOIN with backoff (see there). */
  async _joinAgain(roomId, options, generation) {
    const deadline = Date.now() + REJOIN_DEADLINE_MS;
    for (let wait = REJOIN_FIRST_WAIT_MS; ; wait = Math.min(2 * wait, REJOIN_MAX_WAIT_MS)) {
      try {
        return await this.join(roomId, options);
      } catch (err) {
        if (!(err instanceof FanoutError) || !RETRYABLE_REJOIN.has(err.code) || Date.now() + wait > deadline) throw err;
        this._emit('rejoin-retrying', { code: err.code, waitMs: wait });
        await new Promise((resolve) => setTimeout(resolve, wait));
        if (generation !== this._rejoinGeneration) throw new FanoutError('LEFT', 'left the room while rejoining', 'join-room');
      }
    }
  }

  // ---- chat --------------------------------------------------------------------------

  /**
   * Sends a chat message to the room; resolves with it as the room receives it (the server
   * trims it and sets `from` from the token). Rejects with a FanoutError: CHAT_MESSAGE_EMPTY,
   * CHAT_MESSAGE_TOO_LONG (over the server's limit, 2000 bytes of UTF-8 by default),
   * RATE_LIMITED (more than a few in a row), NOT_IN_ROOM.
   */
  async sendChat(text) {
    if (!this.roomId) throw new FanoutError('NOT_IN_ROOM', 'join a room first', 'chat-message');
    const message = await this.request('chat-message', { roomId: this.roomId, text });
    this._addChat(message);
    return message;
  }

  /**
   * Deletes a chat message of the room: one's own, or anybody's with a moderator role.
   * Rejects with CHAT_DELETE_NOT_ALLOWED or CHAT_MESSAGE_NOT_FOUND.
   */
  async deleteChat(messageId) {
    if (!this.roomId) throw new FanoutError('NOT_IN_ROOM', 'join a room first', 'delete-chat-message');
    const deleted = await this.request('delete-chat-message', { roomId: this.roomId, messageId });
    this._removeChat(deleted);
    return deleted;
  }

  /** Whether this participant may delete `message`: its author, or a moderator. */
  mayDeleteChat(message) {
    const me = this.participants.get(this.participantId);
    return this._chatModerator || (me !== undefined && message?.from?.userId === me.userId);
  }

  // The same message can come as an answer, as an event and in a join's history (one sent
  // while the join was in flight): each is kept and reported once.
  _addChat(message) {
    if (!message?.messageId || this.chat.some((m) => m.messageId === message.messageId)) return;
    this.chat.push(message);
    if (this.chat.length > MAX_CHAT_MESSAGES) this.chat.shift();
    this._emit('chat-message', message);
  }

  _removeChat(deleted) {
    const index = this.chat.findIndex((m) => m.messageId === deleted?.messageId);
    if (index < 0) return;
    this.chat.splice(index, 1);
    this._emit('chat-message-deleted', deleted);
  }

  // ---- data channels -----------------------------------------------------------------

  /**
   * Opens a data channel to the room (mediasoup's `produceData`): every other participant's
   * client subscribes to it and emits 'data-message' for each message sent on it.
   * @param {object} [options] `label`, `protocol`, `appData` (shown to the others), and its
   *   reliability: `ordered` (default true), or unreliable with `maxRetransmits` or
   *   `maxPacketLifeTime` (ms). Messages are at most 256 KiB, a few hundred a second.
   * @returns {Promise<import('mediasoup-client').types.DataProducer>} `send(string | ArrayBuffer)`
   */
  async publishData(options = {}) {
    const { label = '', protocol = '', appData = {}, ...reliability } = options;
    const transport = await this._transport('send');
    const dataProducer = await transport.produceData({ label, protocol, appData, ...reliability });
    this.dataProducers.set(dataProducer.id, dataProducer);
    return dataProducer;
  }

  /** Closes one of our data channels: the others see 'remote-data-ended'. */
  async unpublishData(dataProducer) {
    this.dataProducers.delete(dataProducer.id);
    dataProducer.close();
    await this.request('close-data-producer', { roomId: this.roomId, dataProducerId: dataProducer.id });
  }

  _dataProducerGone(dataProducer, reason) {
    if (!this.dataProducers.delete(dataProducer.id)) return;
    dataProducer.close();
    this._emit('data-closed', { dataProducer, reason });
  }

  async _subscribeData({ dataProducerId, participantId, label = '', protocol = '', appData = {} }, session) {
    if (this.dataConsumers.has(dataProducerId)) return;
    let mine = { pending: true, participantId, label, protocol, appData };
    this.dataConsumers.set(dataProducerId, mine);
    const current = () => session === this._session && this.dataConsumers.get(dataProducerId) === mine;
    let transport;
    try {
      transport = await this._transport('recv');
      if (!current()) return;
      const created = await this.request('consume-data', { roomId: this.roomId, transportId: transport.id, dataProducerId });
      if (!current()) return;
      const dataConsumer = await transport.consumeData({
        id: created.id ?? created.dataConsumerId,
        dataProducerId,
        sctpStreamParameters: created.sctpStreamParameters,
        label: created.label ?? label,
        protocol: created.protocol ?? protocol,
        appData: { participantId, ...appData },
      });
      if (!current()) {
        dataConsumer.close();
        return;
      }
      mine = { dataConsumer, participantId, label: dataConsumer.label, protocol: dataConsumer.protocol, appData };
      this.dataConsumers.set(dataProducerId, mine);
      dataConsumer.binaryType = 'arraybuffer';
      dataConsumer.on('message', (data) => {
        this._emit('data-message', { participantId, dataProducerId, label: dataConsumer.label, protocol: dataConsumer.protocol, data });
      });
      this._emit('remote-data', {
        participantId,
        dataProducerId,
        dataConsumerId: dataConsumer.id,
        label: dataConsumer.label,
        protocol: dataConsumer.protocol,
        appData,
        dataConsumer,
      });
    } catch (err) {
      const superseded = !current();
      if (!superseded) this.dataConsumers.delete(dataProducerId);
      if (!superseded && !transport?.closed && err?.code !== 'DATA_PRODUCER_NOT_FOUND') this._fail(err);
    }
  }

  _dropDataConsumer(dataProducerId, reason) {
    const entry = this.dataConsumers.get(dataProducerId);
    if (!entry) return;
    this.dataConsumers.delete(dataProducerId);
    if (entry.pending) return;
    entry.dataConsumer.close();
    this._emit('remote-data-ended', { participantId: entry.participantId, dataProducerId, reason });
  }

  // ---- transports --------------------------------------------------------------------

  _transport(direction) {
    const failed = this._failed.get(direction);
    if (failed) return Promise.reject(failed);
    const key = direction === 'send' ? '_sendTransportPromise' : '_recvTransportPromise';
    if (!this[key]) {
      this[key] = this._createTransport(direction).catch((err) => {
        this[key] = null;
        throw err;
      });
    }
    return this[key];
  }

  async _createTransport(direction) {
    const roomId = this.roomId;
    const device = this.device;
    if (!device) throw new FanoutError('NOT_IN_ROOM', 'join a room first', 'create-transport');
    // With SCTP every transport can carry data channels; the worker holds no SCTP state for
    // one until the browser opens the association (its first data channel). mediasoup-client
    // 3.24 has no sctpCapabilities to send: enableSctp asks for the default stream counts.
    const created = await this.request('create-transport', {
      roomId,
      direction,
      enableSctp: true,
      ...(device.sctpCapabilities ? { sctpCapabilities: device.sctpCapabilities } : {}),
      ...this._transportProtocols,
    });
    if (device !== this.device) throw new FanoutError('LEFT', 'left the room meanwhile', 'create-transport');
    const options = {
      id: created.transportId ?? created.id,
      iceParameters: created.iceParameters,
      iceCandidates: created.iceCandidates,
      dtlsParameters: created.dtlsParameters,
      // STUN/TURN servers with this participant's credentials, for networks that block the
      // worker's UDP and TCP ports (docs/protocol.md, ICE over TCP and TURN).
      iceServers: created.iceServers ?? [],
      ...(created.iceTransportPolicy ? { iceTransportPolicy: created.iceTransportPolicy } : {}),
      ...(created.sctpParameters ? { sctpParameters: created.sctpParameters } : {}),
    };
    const transport = direction === 'send' ? device.createSendTransport(options) : device.createRecvTransport(options);
    transport.on('connect', ({ dtlsParameters }, callback, errback) => {
      this.request('connect-transport', { roomId, transportId: transport.id, dtlsParameters })
        .then(() => callback())
        .catch(errback);
    });
    if (direction === 'send') {
      transport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
        this.request('produce', { roomId, transportId: transport.id, kind, rtpParameters, appData })
          .then((answer) => callback({ id: answer.id ?? answer.producerId }))
          .catch(errback);
      });
      transport.on('producedata', ({ sctpStreamParameters, label, protocol, appData }, callback, errback) => {
        this.request('produce-data', { roomId, transportId: transport.id, sctpStreamParameters, label, protocol, appData })
          .then((answer) => callback({ id: answer.id ?? answer.dataProducerId }))
          .catch(errback);
      });
    }
    transport.on('connectionstatechange', (state) => {
      this._emit('transport-state', { direction, transportId: transport.id, state });
      if (state === 'connected') {
        this._connectedIds.add(transport.id);
        this._recoveries[direction] = 0;
      }
      if (state !== 'failed') return;
      if (!this._connectedIds.has(transport.id)) {
        // The browser tried every candidate pair (UDP, TCP, TURN relays) and none answered.
        this._transportFailed({
          direction,
          transportId: transport.id,
          code: 'ICE_FAILED',
          reason:
            'no network path to the media worker works: UDP and TCP to it are blocked here and no TURN relay got through; try another network, or ask the operator for a TURN server on TCP 443',
        });
        return;
      }
      // It worked and broke (network change): the server's transport-closed replaces it.
      this._fail(new FanoutError('TRANSPORT_FAILED', `the ${direction} media connection failed after it worked (ICE/DTLS); reconnecting`, 'connect-transport'));
    });
    if (direction === 'send') this._sendTransport = transport;
    else this._recvTransport = transport;
    return transport;
  }

  /** Forgets the transport of `direction`: the next use makes a new one. */
  _forgetTransport(direction) {
    if (direction === 'send') {
      this._sendTransport = null;
      this._sendTransportPromise = null;
    } else {
      this._recvTransport = null;
      this._recvTransportPromise = null;
    }
  }

  /**
   * The server closed one of our transports (`transport-closed`): close it here too, then
   * replace it and publish or subscribe again what ran on it. A transport that closes again
   * and again without connecting is given up after a few tries, with an error.
   */
  _transportClosed({ transportId, direction, code, reason }) {
    const transport = direction === 'send' ? this._sendTransport : this._recvTransport;
    if (!transport || transport.id !== transportId) return;
    this._emit('transport-closed', { direction, transportId, code, reason });
    if (SETUP_FAILURES.has(code) && !this._connectedIds.has(transportId)) {
      this._transportFailed({ transportId, direction, code, reason });
      return;
    }
    const session = this._session;
    // What ran on it, before closing it drops it.
    const published = [...this._published.entries()].filter(([producerId]) => this.producers.has(producerId));
    const subscribed = new Map(this._orphaned);
    this._orphaned.clear();
    for (const [producerId, e] of this.consumers) subscribed.set(producerId, subscription(producerId, e));
    const subscribedData = [...this.dataConsumers.entries()].map(([dataProducerId, e]) => dataSubscription(dataProducerId, e));
    this._forgetTransport(direction);
    transport.close();
    if (direction === 'recv') {
      // Subscriptions still on their way on the closed transport: their replacements below.
      for (const [producerId, entry] of [...this.consumers]) if (entry.pending) this.consumers.delete(producerId);
      // Data channels on it closed with it, quietly: they are subscribed to again below.
      for (const entry of this.dataConsumers.values()) entry.dataConsumer?.close();
      this.dataConsumers.clear();
    } else {
      // An own data channel is the app's object: it is told, and publishes again if it wants.
      for (const dataProducer of [...this.dataProducers.values()]) this._dataProducerGone(dataProducer, 'transport-closed');
    }
    if (++this._recoveries[direction] > MAX_RECOVERIES) {
      this._fail(new FanoutError(code ?? 'TRANSPORT_CLOSED', `the ${direction} media connection keeps closing (${reason || code}); leave and join again`, 'connect-transport'));
      return;
    }
    // After the events already received: a `left-room` right behind this one (it was our last
    // transport) rejoins instead, and this recovery sees the new session and stands down.
    setTimeout(() => {
      if (session !== this._session) return;
      if (direction === 'recv') {
        for (const p of subscribed.values()) this._subscribe(p, session);
        for (const p of subscribedData) this._subscribeData(p, session);
        return;
      }
      (async () => {
        for (const [previousProducerId, { track, options, producer: previous }] of published) {
          if (session !== this._session) return;
          if (track.readyState !== 'live') {
            this._published.delete(previousProducerId);
            continue;
          }
          const producer = await this.publish(track, options);
          // Forgotten only now: a rejoin meanwhile republishes from what is still listed.
          this._published.delete(previousProducerId);
          if (session !== this._session) return;
          // Muted before, muted again (the others see it paused, as they did).
          if (previous?.paused) await this.pause(producer);
          this._emit('republished', { producer, previousProducerId, kind: producer.kind });
        }
      })().catch((err) => {
        if (session === this._session) this._fail(err);
      });
    }, 0);
  }

  /**
   * One of our transports never got media through (the browser's ICE gave up, or the server
   * said so with `transport-failed`): reported once, closed, and that direction is off until
   * the next join, since a new transport on the same network would fail the same way.
   */
  _transportFailed({ transportId, direction, code, reason }) {
    // One that connected once is replaced instead (its transport-closed did that).
    if (this._failedIds.has(transportId) || this._connectedIds.has(transportId)) return;
    const transport = direction === 'send' ? this._sendTransport : this._recvTransport;
    if (!transport || transport.id !== transportId) return;
    this._failedIds.add(transportId);
    const error = new FanoutError(code, `the ${direction === 'send' ? 'sending' : 'receiving'} media connection could not be set up: ${reason}`, 'connect-transport');
    this._failed.set(direction, error);
    this._forgetTransport(direction);
    if (direction === 'recv') {
      for (const [producerId, entry] of [...this.consumers]) if (entry.pending) this.consumers.delete(producerId);
    }
    transport.close();
    if (this._listeners.get('transport-failed')?.size) this._emit('transport-failed', { direction, transportId, code, reason });
    else this._fail(error);
  }

  // ---- publishing --------------------------------------------------------------------

  /**
   * Publishes a local track (camera, microphone, screen).
   * @param {MediaStreamTrack} track
   * @param {object} [options] `appData` (shown to the others, e.g. {source: 'screen'}), and any
   *   mediasoup-client produce option: `codec` (one of `device.sendRtpCapabilities.codecs`),
   *   `encodings`, `codecOptions`. Several `encodings` publish simulcast, lowest first (e.g.
   *   `[{scaleResolutionDownBy: 4, maxBitrate: 150000}, {scaleResolutionDownBy: 2},
   *   {maxBitrate: 1500000}]`); one with a `scalabilityMode` publishes SVC (with
   *   `codec: client.sendCodec('video/VP9')` and e.g. `scalabilityMode: 'L3T3_KEY'`). Each
   *   subscriber then gets the layers its preference and its downlink allow.
   * @returns {Promise<import('mediasoup-client').types.Producer>}
   */
  async publish(track, options = {}) {
    const { appData = {}, ...produceOptions } = options;
    const transport = await this._transport('send');
    const producer = await transport.produce({ track, appData, stopTracks: false, ...produceOptions });
    this.producers.set(producer.id, producer);
    this._published.set(producer.id, { track, options, producer });
    producer.observer.on('close', () => {
      this.producers.delete(producer.id);
    });
    return producer;
  }

  /** The codec capability of this device matching a MIME type (e.g. 'video/VP9'), for publish({codec}). */
  sendCodec(mimeType) {
    return this.device?.sendRtpCapabilities.codecs.find((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
  }

  /** Stops publishing a track: the others see 'remote-track-ended'. */
  async unpublish(producer) {
    this._published.delete(producer.id);
    producer.close();
    this.producers.delete(producer.id);
    await this.request('close-producer', { roomId: this.roomId, producerId: producer.id });
  }

  /** Mutes a published track for everyone (the producer stops sending). */
  async pause(producer) {
    producer.pause();
    await this.request('pause-producer', { roomId: this.roomId, producerId: producer.id });
  }

  /** Unmutes a track muted with {@link pause}. */
  async resume(producer) {
    producer.resume();
    await this.request('resume-producer', { roomId: this.roomId, producerId: producer.id });
  }

  // ---- subscribing -------------------------------------------------------------------

  async _subscribe({ producerId, participantId, kind, appData = {}, paused = false }, session) {
    if (this.consumers.has(producerId)) return;
    // Reserved before any await so a duplicate notification does not consume twice; the
    // entry's identity tells this subscription from a later one for the same producer (after
    // its transport was replaced).
    let mine = { pending: true, participantId, kind, appData };
    this.consumers.set(producerId, mine);
    const current = () => session === this._session && this.consumers.get(producerId) === mine;
    let transport;
    try {
      transport = await this._transport('recv');
      if (!current()) return;
      const created = await this.request('consume', {
        roomId: this.roomId,
        transportId: transport.id,
        producerId,
        rtpCapabilities: this.device.recvRtpCapabilities,
        paused: true,
      });
      if (!current()) return;
      const consumer = await transport.consume({
        id: created.id,
        producerId: created.producerId ?? producerId,
        kind: created.kind,
        rtpParameters: created.rtpParameters,
        appData: { participantId, ...appData },
      });
      if (!current()) {
        consumer.close();
        return;
      }
      const entry = {
        consumer,
        participantId,
        kind: consumer.kind,
        appData,
        remotelyPaused: Boolean(created.producerPaused ?? paused),
      };
      this.consumers.set(producerId, entry);
      mine = entry;
      consumer.on('transportclose', () => this._dropConsumer(producerId, 'transport-closed'));
      // Paused on the server until the local consumer exists, so the first packet is usable.
      await this.request('resume-consumer', { roomId: this.roomId, consumerId: consumer.id });
      this._emit('remote-track', {
        participantId,
        producerId,
        consumerId: consumer.id,
        kind: consumer.kind,
        track: consumer.track,
        appData,
        paused: entry.remotelyPaused,
        consumer,
      });
    } catch (err) {
      const superseded = !current();
      if (!superseded) {
        this.consumers.delete(producerId);
        mine.consumer?.close();
      }
      // A producer that closed while we were subscribing is not worth an error, nor is a
      // transport that closed meanwhile (its replacement subscribes again).
      if (!superseded && !transport?.closed && err?.code !== 'PRODUCER_NOT_FOUND') this._fail(err);
    }
  }

  _dropConsumer(producerId, reason) {
    const entry = this.consumers.get(producerId);
    if (!entry) return;
    this.consumers.delete(producerId);
    if (entry.pending) return;
    entry.consumer.close();
    this._emit('remote-track-ended', {
      participantId: entry.participantId,
      producerId,
      consumerId: entry.consumer.id,
      kind: entry.kind,
      reason,
    });
  }

  /**
   * Asks for other layers of a simulcast or SVC remote track (mediasoup's setPreferredLayers):
   * `spatialLayer` 0 is the smallest encoding; `temporalLayer` left out means its highest. The
   * track moves there at the next keyframe, if the publisher sends that layer and the downlink
   * carries it; 'remote-track-layers' says when. Resolves with the layers as kept.
   * @param {string} producerId the remote track's producer
   */
  async setPreferredLayers(producerId, { spatialLayer, temporalLayer } = {}) {
    const entry = this.consumers.get(producerId);
    if (!entry || entry.pending) throw new FanoutError('CONSUMER_NOT_FOUND', `no remote track of producer ${producerId}`, 'set-consumer-preferred-layers');
    const payload = { roomId: this.roomId, consumerId: entry.consumer.id, spatialLayer };
    if (temporalLayer !== undefined && temporalLayer !== null) payload.temporalLayer = temporalLayer;
    const answer = await this.request('set-consumer-preferred-layers', payload);
    return { spatialLayer: answer.spatialLayer, temporalLayer: answer.temporalLayer };
  }

  /**
   * Sets a remote track's priority, 1 (the default) to 255: when the downlink cannot carry
   * every track at its preferred layers, higher priorities are served first.
   * @param {string} producerId the remote track's producer
   */
  async setPriority(producerId, priority) {
    const entry = this.consumers.get(producerId);
    if (!entry || entry.pending) throw new FanoutError('CONSUMER_NOT_FOUND', `no remote track of producer ${producerId}`, 'set-consumer-priority');
    const answer = await this.request('set-consumer-priority', { roomId: this.roomId, consumerId: entry.consumer.id, priority });
    return answer.priority;
  }

  /** The mediasoup-client transport of `direction` ('send' or 'recv'), or null before its first use. */
  transport(direction) {
    return (direction === 'send' ? this._sendTransport : this._recvTransport) ?? null;
  }

  /** Remote tracks now: [{participantId, producerId, kind, track, consumer}]. */
  remoteTracks() {
    return [...this.consumers.entries()]
      .filter(([, e]) => !e.pending)
      .map(([producerId, e]) => ({
        participantId: e.participantId,
        producerId,
        kind: e.kind,
        track: e.consumer.track,
        consumer: e.consumer,
        layers: e.layers ?? null,
        layerState: e.layerState ?? null,
      }));
  }
}

/** What `_subscribeData` needs to subscribe to a data producer again, from a dataConsumers entry. */
function dataSubscription(dataProducerId, entry) {
  return { dataProducerId, participantId: entry.participantId, label: entry.label, protocol: entry.protocol, appData: entry.appData };
}

/** What `_subscribe` needs to subscribe to a producer again, from a consumers entry. */
function subscription(producerId, entry) {
  return {
    producerId,
    participantId: entry.participantId,
    kind: entry.kind,
    appData: entry.appData,
    paused: entry.remotelyPaused,
  };
}
