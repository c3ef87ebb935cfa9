// vidloom annotate: keyboard and mouse labelling of one task (see evaluation/annotate_page.py).
// Keys: 1-5 score the focused cell (then focus moves on), arrows move (left/right: other video, up/down:
// other dimension; Tab works too), b / w mark the focused video best / worst, Enter submits, s skips.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("task-data").textContent);
  const state = { scores: {}, best: null, worst: null, sending: false, done: false };
  window.annotate = { data: data, state: state };
  const cells = Array.from(document.querySelectorAll(".cell"));
  const status = document.getElementById("status");
  const rubricRows = {};
  document.querySelectorAll("#rubric tr[data-dim]").forEach(function (tr) { rubricRows[tr.dataset.dim] = tr; });
  data.playable.forEach(function (v) { state.scores[v] = {}; });

  function say(text, cls) { status.textContent = text; status.className = cls || ""; }
  function cellAt(vid, dim) { return cells.find(function (c) { return c.dataset.vid === vid && c.dataset.dim === dim; }); }
  function focused() { const a = document.activeElement; return a && a.classList && a.classList.contains("cell") ? a : null; }

  function setScore(cell, n) {
    state.scores[cell.dataset.vid][cell.dataset.dim] = n;
    cell.querySelectorAll("button").forEach(function (b) { b.classList.toggle("on", Number(b.dataset.score) === n); });
    cell.querySelector(".level").textContent = n + ": " + data.levels[cell.dataset.dim][String(n)];
  }
  function mark(kind, vid) {
    const other = kind === "best" ? "worst" : "best";
    state[kind] = state[kind] === vid ? null : vid;
    if (state[kind] && state[other] === state[kind]) state[other] = null;
    if (data.playable.length === 2 && state[kind] && !state[other]) {
      state[other] = data.playable.find(function (v) { return v !== state[kind]; });
    }
    document.querySelectorAll("section.video").forEach(function (s) {
      s.classList.toggle("is-best", s.dataset.vid === state.best);
      s.classList.toggle("is-worst", s.dataset.vid === state.worst);
    });
  }
  function move(cell, dv, dd) {
    const vi = data.playable.indexOf(cell.dataset.vid), di = data.rubric.indexOf(cell.dataset.dim);
    const v = data.playable[(vi + dv + data.playable.length) % data.playable.length];
    const d = data.rubric[(di + dd + data.rubric.length) % data.rubric.length];
    cellAt(v, d).focus();
  }
  function nextCell(cell) {
    const i = cells.indexOf(cell);
    if (i + 1 < cells.length) cells[i + 1].focus();
  }
  function missing() {
    for (const c of cells) { if (!state.scores[c.dataset.vid][c.dataset.dim]) return c; }
    return null;
  }

  function send(body) {
    if (state.sending || state.done) return;
    state.sending = true;
    say("saving…");
    fetch("/api/label", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
      .then(function (res) {
        const code = res[0], j = res[1];
        state.sending = false;
        document.body.dataset.lastStatus = String(code);
        if (code === 200 || code === 409) {
          state.done = true;
          say(code === 200 ? (body.skipped ? "skipped" : "recorded") + " — next task…" : "already recorded — next task…",
              "good");
          setTimeout(function () { window.location.href = data.next_url; }, code === 200 ? 250 : 1200);
        } else {
          say("not saved: " + (j.field ? j.field + ": " : "") + (j.message || j.error || code), "bad");
        }
      })
      .catch(function (e) { state.sending = false; say("not saved: " + e, "bad"); });
  }
  function submit() {
    if (data.playable.length < 2) { say("fewer than two playable videos: skip this task (s)", "bad"); return; }
    const gap = missing();
    if (gap) { gap.focus(); say("score every dimension of every video first", "bad"); return; }
    if (!state.best || !state.worst) { say("mark the best (b) and the worst (w) video", "bad"); return; }
    send({ task_id: data.task_id, labeller: data.labeller, skipped: false, scores: state.scores,
      best: state.best, worst: state.worst });
  }
  function skip() { send({ task_id: data.task_id, labeller: data.labeller, skipped: true }); }

  cells.forEach(function (c) {
    c.addEventListener("focus", function () {
      Object.values(rubricRows).forEach(function (tr) { tr.classList.toggle("focus", tr.dataset.dim === c.dataset.dim); });
    });
    c.querySelectorAll("button").forEach(function (b) {
      b.addEventListener("click", function () { setScore(c, Number(b.dataset.score)); c.focus(); });
    });
  });
  document.querySelectorAll("section.video").forEach(function (s) {
    const b = s.querySelector(".picks .best"), w = s.querySelector(".picks .worst");
    if (b) b.addEventListener("click", function () { mark("best", s.dataset.vid); });
    if (w) w.addEventListener("click", function () { mark("worst", s.dataset.vid); });
    const video = s.querySelector("video");
    if (video) {
      video.addEventListener("error", function () { s.querySelector(".error").hidden = false; });
      video.play().catch(function () { /* autoplay policy: muted videos may still be refused */ });
    }
  });
  document.getElementById("submit").addEventListener("click", submit);
  document.getElementById("skip").addEventListener("click", skip);

  document.addEventListener("keydown", function (e) {
    if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA")) return;
    if (e.target && e.target.closest && e.target.closest("#who")) return;  // the labeller form's own keys
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const cell = focused();
    const vid = cell ? cell.dataset.vid : null;
    if (e.key >= "1" && e.key <= "5") {
      const target = cell || missing() || cells[0];
      if (!target) return;
      setScore(target, Number(e.key));
      nextCell(target);
    } else if (e.key === "ArrowRight" || e.key === "ArrowLeft" || e.key === "ArrowUp" || e.key === "ArrowDown") {
      if (!cell) { if (cells[0]) cells[0].focus(); } else {
        move(cell, e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0,
          e.key === "ArrowDown" ? 1 : e.key === "ArrowUp" ? -1 : 0);
      }
    } else if (e.key === "b" || e.key === "w") {
      if (!vid) { say("focus a video's score first (Tab or arrows), then press " + e.key, "bad"); return; }
      mark(e.key === "b" ? "best" : "worst", vid);
    } else if (e.key === "Enter") {
      submit();
    } else if (e.key === "s") {
      skip();
    } else {
      return;
    }
    e.preventDefault();
  });
  if (cells[0]) cells[0].focus();
})();
