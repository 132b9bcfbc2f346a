// sip-bridge live captions: the calls in progress and their captions, from /v1/events.
// A partial line is replaced by its utterance's final. Text from calls (captions, SIP URIs,
// speakers' names) only ever goes in as textContent.
//
// One card per conversation: an ordinary call, a SIPREC session (one call, a stream per
// participant), or the legs a PBX tagged with one conversation id (several calls, one card,
// a row per leg in its header). A card's lines are interleaved by time; on a session or legs
// each line starts with who spoke it.
"use strict";

(() => {
  const KEEP_ENDED = 20;
  // call_id -> { id, card, info (its row: the card itself, or its leg's row), started, ended,
  //              streams: Map(label -> speaker), participants, orphanSince }
  const calls = new Map();
  // key -> { el, lines: Map(key -> el), calls: Set(call_id), legs: bool }
  const cards = new Map();
  const $ = (id) => document.getElementById(id);
  let source = null;

  function setStatus(state, text) {
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text;
  }

  function clock(seconds) {
    const s = Math.max(0, Math.floor(Number(seconds) || 0));
    return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  }

  // Who spoke: the name, else the address, else the stream's label.
  function speakerLabel(speaker, stream) {
    if (speaker && (speaker.name || speaker.aor)) return speaker.name || speaker.aor;
    return stream ? `stream ${stream}` : "";
  }

  // --- calls and cards --------------------------------------------------------------------

  function makeCard(key, legs) {
    const el = $("call-template").content.firstElementChild.cloneNode(true);
    if (legs) {
      el.classList.add("conversation");
      el.querySelector(".legs").hidden = false;
    }
    const card = { el, lines: new Map(), calls: new Set(), legs };
    cards.set(key, card);
    $("calls").prepend(el);
    placeLive(card);
    $("empty").hidden = true;
    return card;
  }

  // The call, made on first sight with its card: legs of one conversation share one.
  function track(callId, told) {
    let call = calls.get(callId);
    if (call) {
      call.orphanSince = null; // heard of: not an orphan of a restart
      return call;
    }
    const conv = told && told.conversation;
    const legs = Boolean(conv && conv.kind === "legs" && conv.id);
    const key = legs ? `legs:${conv.id}` : `call:${callId}`;
    const card = cards.get(key) || makeCard(key, legs);
    let info = card.el;
    if (legs) {
      info = $("leg-template").content.firstElementChild.cloneNode(true);
      info.dataset.callId = callId;
      card.el.querySelector(".legs").append(info);
      card.el.dataset.conversationId = conv.id;
      card.el.querySelector(".parties").textContent = `conversation ${conv.id}`;
      card.el.querySelector(".state").textContent = "live";
      if (card.el.classList.contains("ended")) {
        card.el.classList.remove("ended");
        placeLive(card);
      }
    } else {
      card.el.dataset.callId = callId;
    }
    call = { id: callId, card, info, started: null, ended: false, streams: new Map(),
             participants: [], orphanSince: null };
    card.calls.add(callId);
    calls.set(callId, call);
    return call;
  }

  // Live cards stay above ended ones, oldest first.
  function placeLive(card) {
    const firstEnded = $("calls").querySelector(".call.ended");
    $("calls").insertBefore(card.el, firstEnded);
  }

  function describe(call, info) {
    const el = call.info;
    if (info.sip_call_id) el.dataset.sipCallId = info.sip_call_id;
    if (info.tenant) {
      call.card.el.dataset.tenant = info.tenant;
      call.card.el.querySelector(".tenant").textContent = info.tenant;
    }
    if (info.from || info.to) {
      el.querySelector(".parties").textContent = `${info.from || "?"} → ${info.to || "?"}`;
    }
    if (typeof info.started === "number") call.started = info.started;
    const meta = [info.codec, info.started ? new Date(info.started * 1000).toLocaleTimeString() : ""];
    if (info.codec || info.started) {
      el.querySelector(".meta").textContent = meta.filter(Boolean).join(" · ");
    }
    if (!call.ended) el.querySelector(".state").textContent = "live";
  }

  // Who speaks on which stream (a session), or who speaks on a leg.
  function speakers(call, told) {
    if (Array.isArray(told.participants)) call.participants = told.participants;
    if (Array.isArray(told.streams)) {
      call.streams = new Map(told.streams.map((s) => [s.stream, s.speaker]));
    }
    const who = call.info.querySelector(".speakers");
    if (call.card.legs) {
      who.textContent = call.participants.map((p) => speakerLabel(p)).filter(Boolean).join(", ");
    } else {
      who.textContent = [...call.streams]
        .map(([label, speaker]) => `stream ${label}: ${speakerLabel(speaker, label)}`)
        .join(" · ");
    }
    who.hidden = !who.textContent;
  }

  // The prefix of a line: nothing on an ordinary call (one voice, as before speakers).
  function lineSpeaker(call, stream, speaker) {
    if (stream) return speakerLabel(speaker || call.streams.get(stream), stream);
    if (call.card.legs) return speakerLabel(speaker || call.participants[0]);
    return speaker ? speakerLabel(speaker) : "";
  }

  function line(call, key, kind, start, text, extra = {}) {
    const card = call.card;
    key = `${call.id}|${key}`;
    // Legs count time from their own answers: placed by the clock on the wall.
    const order = card.legs ? (call.started || 0) + Number(start) : Number(start);
    let el = card.lines.get(key);
    if (!el) {
      el = document.createElement("p");
      el.dataset.order = String(order);
      el.dataset.callId = call.id;
      el.append(document.createElement("span"), document.createElement("span"),
                document.createElement("span"));
      el.children[0].className = "at";
      el.children[1].className = "speaker";
      el.children[2].className = "text";
      const box = card.el.querySelector(".captions");
      const after = [...box.children].find((other) => Number(other.dataset.order) > order);
      box.insertBefore(el, after || null);
      card.lines.set(key, el);
    }
    el.className = `line ${kind}`;
    if (extra.utterance !== undefined) el.dataset.utterance = String(extra.utterance);
    if (extra.stream) el.dataset.stream = extra.stream;
    const who = lineSpeaker(call, extra.stream, extra.speaker);
    // Real spaces, not only margins: copied text and screen readers keep the words apart.
    el.children[0].textContent = `${clock(start)} `;
    el.children[1].textContent = who ? `${who}: ` : "";
    el.children[1].hidden = !who;
    el.children[2].textContent = text;
    return el;
  }

  function caption(call, kind, u) {
    const key = `${u.stream || ""}|u${u.utterance}`;
    line(call, key, kind, u.start, u.text, u);
  }

  // A stream's partials up to an utterance (all of a call's when upTo is undefined).
  function dropPartials(call, stream, upTo) {
    for (const [key, el] of call.card.lines) {
      if (el.dataset.callId !== call.id || !el.classList.contains("partial")) continue;
      if (upTo !== undefined && ((el.dataset.stream || null) !== (stream || null)
                                 || Number(el.dataset.utterance) > upTo)) continue;
      el.remove();
      call.card.lines.delete(key);
    }
  }

  function end(callId, reason) {
    const call = track(callId);
    call.ended = true;
    dropPartials(call);
    call.info.querySelector(".state").textContent = `ended: ${reason || "?"}`;
    const card = call.card;
    if ([...card.calls].some((id) => !calls.get(id).ended)) return; // a leg is still live
    if (card.legs) card.el.querySelector(".state").textContent = "ended";
    card.el.classList.add("ended");
    // Below the live ones, newest ended first.
    const box = $("calls");
    const live = box.querySelectorAll(".call:not(.ended)");
    box.insertBefore(card.el, live.length ? live[live.length - 1].nextSibling : box.firstChild);
    const ended = [...box.querySelectorAll(".call.ended")];
    for (const old of ended.slice(KEEP_ENDED)) {
      for (const [key, c] of cards) {
        if (c.el !== old) continue;
        for (const id of c.calls) calls.delete(id);
        cards.delete(key);
      }
      old.remove();
    }
  }

  function fromView(view) {
    const call = track(view.call_id, view);
    describe(call, view);
    speakers(call, view);
    for (const f of view.finals || []) caption(call, "final", f);
    for (const p of view.partials || []) caption(call, "partial", p);
    if (view.ended) end(view.call_id, view.reason);
  }

  function reset(views) {
    calls.clear();
    cards.clear();
    $("calls").replaceChildren();
    for (const view of views) fromView(view);
    $("empty").hidden = calls.size > 0;
  }

  // --- the stream -------------------------------------------------------------------------

  // A snapshot after a reconnection merges into what is shown: the captions server may have
  // restarted and know only what was said since. A live call it does not list is given a few
  // seconds (media processes list their calls every 2 s) before it is shown as ended.
  const ORPHAN_GRACE_MS = 6000;

  function merge(views) {
    const listed = new Set(views.map((v) => v.call_id));
    for (const view of views) fromView(view);
    for (const [callId, call] of calls) {
      if (!listed.has(callId) && !call.ended) call.orphanSince = Date.now();
    }
    setTimeout(() => {
      for (const [callId, call] of calls) {
        if (call.orphanSince && !call.ended && Date.now() - call.orphanSince >= ORPHAN_GRACE_MS) {
          end(callId, "unknown (not heard of since the captions server restarted)");
        }
      }
    }, ORPHAN_GRACE_MS + 100);
    $("empty").hidden = calls.size > 0;
  }

  const handlers = {
    snapshot: (d) => merge(d.calls),
    call: (d) => fromView(d),
    "call.started": (d) => {
      const call = track(d.call_id, d);
      describe(call, { ...d, started: d.timestamp });
      speakers(call, d);
    },
    "conversation.updated": (d) => speakers(track(d.call_id, d), d),
    "transcript.partial": (d) => {
      const call = track(d.call_id, d);
      const el = call.card.lines.get(`${call.id}|${d.stream || ""}|u${d.utterance}`);
      if (el && el.classList.contains("final")) return; // late: the final is in
      caption(call, "partial", d);
    },
    "transcript.final": (d) => {
      const call = track(d.call_id, d);
      dropPartials(call, d.stream, d.utterance - 1);
      caption(call, "final", d);
    },
    dtmf: (d) => line(track(d.call_id, d), `d${d.seq}`, "dtmf", d.time, `DTMF ${d.digit}`),
    "call.ended": (d) => end(d.call_id, d.reason),
    "call.lost": (d) => end(d.call_id, d.reason),
  };

  async function authorised() {
    const r = await fetch("/v1/calls", { credentials: "same-origin" }).catch(() => null);
    return r === null ? null : r.status !== 401;
  }

  function connect() {
    if (source) source.close();
    source = new EventSource("/v1/events");
    source.addEventListener("open", () => setStatus("live", "live"));
    source.addEventListener("error", async () => {
      setStatus("reconnecting", "reconnecting…");
      if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
      if ((await authorised()) === false) {
        showSignIn("Signed out: give the token again.");
        return;
      }
      setTimeout(connect, 2000);
    });
    for (const [type, handle] of Object.entries(handlers)) {
      source.addEventListener(type, (e) => handle(JSON.parse(e.data)));
    }
  }

  // --- signing in -------------------------------------------------------------------------

  function showSignIn(message) {
    if (source) source.close();
    source = null;
    setStatus("signed-out", "signed out");
    $("sign-in").hidden = false;
    $("sign-out").hidden = true;
    $("sign-in-error").hidden = !message;
    $("sign-in-error").textContent = message || "";
  }

  async function signIn(token) {
    const r = await fetch("/v1/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { Authorization: `Bearer ${token}` },
    }).catch(() => null);
    return r !== null && r.ok;
  }

  function started() {
    $("sign-in").hidden = true;
    $("sign-out").hidden = false;
    connect();
  }

  async function start() {
    $("sign-in").addEventListener("submit", async (e) => {
      e.preventDefault();
      if (await signIn($("token").value.trim())) {
        $("token").value = "";
        started();
      } else {
        showSignIn("That token was not accepted.");
      }
    });
    $("sign-out").addEventListener("click", async () => {
      await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" }).catch(() => null);
      reset([]);
      showSignIn("");
    });
    // A link may carry the token after '#' (never sent to any server, removed at once).
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    if (token) {
      history.replaceState(null, "", location.pathname + location.search);
      if (!(await signIn(token))) {
        showSignIn("That token was not accepted.");
        return;
      }
    }
    if ((await authorised()) === false) showSignIn("");
    else started();
  }

  start();
})();
