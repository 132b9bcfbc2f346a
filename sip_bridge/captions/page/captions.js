// sip-bridge live captions: the calls in progress and their captions, from /v1/events.
// A partial line is replaced by its utterance's final. Text from calls (captions, SIP URIs)
// only ever goes in as textContent.
"use strict";

(() => {
  const KEEP_ENDED = 20;
  const calls = new Map(); // call_id -> { el, lines: Map(key -> el), ended }
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

  // --- calls ------------------------------------------------------------------------------

  function card(callId) {
    let call = calls.get(callId);
    if (call) {
      call.orphanSince = null; // heard of: not an orphan of a restart
      return call;
    }
    const el = $("call-template").content.firstElementChild.cloneNode(true);
    el.dataset.callId = callId;
    $("calls").prepend(el);
    call = { el, lines: new Map(), ended: false, orphanSince: null };
    calls.set(callId, call);
    placeLive(call);
    $("empty").hidden = true;
    return call;
  }

  // Live calls stay above ended ones, oldest first.
  function placeLive(call) {
    const firstEnded = $("calls").querySelector(".call.ended");
    $("calls").insertBefore(call.el, firstEnded);
  }

  function describe(call, info) {
    const el = call.el;
    if (info.sip_call_id) el.dataset.sipCallId = info.sip_call_id;
    if (info.tenant) {
      el.dataset.tenant = info.tenant;
      el.querySelector(".tenant").textContent = info.tenant;
    }
    if (info.from || info.to) {
      el.querySelector(".parties").textContent = `${info.from || "?"} → ${info.to || "?"}`;
    }
    const meta = [info.codec, info.started ? new Date(info.started * 1000).toLocaleTimeString() : ""];
    if (info.codec || info.started) {
      el.querySelector(".meta").textContent = meta.filter(Boolean).join(" · ");
    }
    if (!call.ended) el.querySelector(".state").textContent = "live";
  }

  function line(call, key, kind, start, text, utterance) {
    let el = call.lines.get(key);
    if (!el) {
      el = document.createElement("p");
      el.dataset.order = String(start);
      el.append(document.createElement("span"), document.createElement("span"));
      el.firstChild.className = "at";
      el.lastChild.className = "text";
      const box = call.el.querySelector(".captions");
      const after = [...box.children].find((other) => Number(other.dataset.order) > start);
      box.insertBefore(el, after || null);
      call.lines.set(key, el);
    }
    el.className = `line ${kind}`;
    if (utterance !== undefined) el.dataset.utterance = String(utterance);
    el.firstChild.textContent = clock(start);
    el.lastChild.textContent = text;
    return el;
  }

  function dropPartials(call, upTo) {
    for (const [key, el] of call.lines) {
      if (el.classList.contains("partial") && (upTo === undefined || Number(el.dataset.utterance) <= upTo)) {
        el.remove();
        call.lines.delete(key);
      }
    }
  }

  function end(callId, reason) {
    const call = card(callId);
    call.ended = true;
    dropPartials(call);
    call.el.classList.add("ended");
    call.el.querySelector(".state").textContent = `ended: ${reason || "?"}`;
    // Below the live ones, newest ended first.
    const box = $("calls");
    const live = box.querySelectorAll(".call:not(.ended)");
    box.insertBefore(call.el, live.length ? live[live.length - 1].nextSibling : box.firstChild);
    const ended = [...$("calls").querySelectorAll(".call.ended")];
    for (const old of ended.slice(KEEP_ENDED)) {
      calls.delete(old.dataset.callId);
      old.remove();
    }
  }

  function fromView(view) {
    const call = card(view.call_id);
    describe(call, view);
    for (const f of view.finals || []) {
      line(call, `u${f.utterance}`, "final", f.start, f.text, f.utterance);
    }
    if (view.partial) {
      const p = view.partial;
      line(call, `u${p.utterance}`, "partial", p.start, p.text, p.utterance);
    }
    if (view.ended) end(view.call_id, view.reason);
  }

  function reset(views) {
    calls.clear();
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
    "call.started": (d) => describe(card(d.call_id), { ...d, started: d.timestamp }),
    "transcript.partial": (d) => {
      const call = card(d.call_id);
      const el = call.lines.get(`u${d.utterance}`);
      if (el && el.classList.contains("final")) return; // late: the final is in
      line(call, `u${d.utterance}`, "partial", d.start, d.text, d.utterance);
    },
    "transcript.final": (d) => {
      const call = card(d.call_id);
      dropPartials(call, d.utterance - 1);
      line(call, `u${d.utterance}`, "final", d.start, d.text, d.utterance);
    },
    dtmf: (d) => line(card(d.call_id), `d${d.seq}`, "dtmf", d.time, `DTMF ${d.digit}`),
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
