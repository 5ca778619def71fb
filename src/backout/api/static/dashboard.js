// The dashboard's pages: the overview's rows and the model page's live view follow
// server-sent events; the model page runs the action buttons (a confirmation naming what
// happens, then the control API). Text from the store is set with textContent only; the
// charts are SVG, and the overview's rows HTML, that the server rendered with every piece
// of text escaped.
"use strict";
(function () {
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function when(at) {
    return new Date(at * 1000).toISOString().slice(11, 19);
  }
  function flash(text, bad) {
    const f = document.getElementById("flash");
    if (!f) return;
    f.hidden = false;
    f.className = bad ? "flash error" : "flash";
    f.textContent = text;
  }
  async function post(path, body) {
    const r = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    let doc = null;
    try { doc = await r.json(); } catch (e) { doc = null; }
    if (!r.ok) {
      const msg = doc && doc.error ? doc.error.message : "the server answered " + r.status;
      throw new Error(msg);
    }
    return doc;
  }

  function renderActions(d) {
    const box = document.getElementById("actions");
    const keys = d.actions.map((a) => a.key + a.confirm).join("|");
    if (box.dataset.keys === keys) return; // unchanged: keep the buttons (and focus) as they are
    box.dataset.keys = keys;
    box.replaceChildren();
    for (const a of d.actions) {
      const b = el("button", a.danger ? "danger" : "", a.label);
      b.type = "button";
      b.dataset.action = a.key;
      b.addEventListener("click", async () => {
        if (!window.confirm(a.confirm)) return;
        b.disabled = true;
        try {
          await post(a.path, a.body);
          flash(a.label + ": done");
        } catch (e) {
          flash(a.label + ": " + e.message, true);
        } finally {
          b.disabled = false;
        }
      });
      box.append(b);
    }
  }

  function render(d) {
    document.getElementById("phase").textContent = d.phase;
    const ps = document.getElementById("public-status");
    ps.textContent = d.status_label;
    ps.className = "cstatus st-" + d.status;
    const warn = document.getElementById("warning");
    warn.hidden = !d.warning;
    warn.textContent = d.warning || "";
    const fr = document.getElementById("frozen");
    fr.hidden = !d.frozen;
    fr.textContent = d.frozen ? "FROZEN: " + d.frozen : "";
    const op = d.operation;
    document.getElementById("operation").textContent = op
      ? `${op.kind} ${op.stable} → ${op.target}: ${op.phase}, step ${op.step} of ${op.steps}, ` +
        `${op.seconds_in_step} s in step — ${op.reason} (by ${op.actor})`
      : "no operation in progress";
    document.getElementById("weights").textContent =
      Object.entries(d.weights).map(([v, w]) => `${v}=${w}%`).join("  ") || "-";
    document.getElementById("pins").textContent =
      Object.entries(d.pins).map(([k, v]) => `${k}→${v}`).join(" ") || "-";
    const gate = document.getElementById("gate");
    const judges = document.querySelector("#judges tbody");
    judges.replaceChildren();
    if (d.gate) {
      gate.textContent = "gate verdict: " + d.gate.verdict;
      for (const j of d.gate.judgements) {
        const tr = el("tr");
        tr.append(el("td", "mono", j.judge), el("td", "verdict-" + j.verdict, j.verdict),
          el("td", "muted", j.summary));
        judges.append(tr);
      }
    } else {
      gate.textContent = "no gate running";
    }
    for (const k of ["weights", "errors", "latency"]) {
      const box = document.getElementById("chart-" + k);
      if (box && box.dataset.svg !== d.charts[k]) {
        box.dataset.svg = d.charts[k];
        box.innerHTML = d.charts[k]; // drawn by the server, every label escaped
      }
    }
    const card = document.getElementById("incident-card");
    card.hidden = !d.incident;
    if (d.incident) {
      const link = document.getElementById("incident-link");
      link.href = "/dashboard/incidents/" + d.incident.id;
      link.textContent = "#" + d.incident.id + " " + d.incident.title;
      const last = d.incident.updates[d.incident.updates.length - 1];
      document.getElementById("incident-status").textContent =
        d.incident.status + (last ? " — " + last.message : "");
    }
    const tl = document.querySelector("#timeline tbody");
    tl.replaceChildren();
    for (const e of d.timeline) {
      const tr = el("tr");
      tr.dataset.kind = e.kind;
      tr.append(el("td", "mono", when(e.at)), el("td", "mono", e.kind), el("td", "", e.actor),
        el("td", "muted", e.reason));
      tl.append(tr);
    }
    renderActions(d);
    document.body.dataset.seq = d.seq;
  }

  function follow(model) {
    const src = new EventSource("/dashboard/models/" + encodeURIComponent(model) + "/stream");
    src.addEventListener("live", (ev) => render(JSON.parse(ev.data)));
    src.onerror = () => { /* EventSource reconnects by itself */ };
  }

  function incidentForm() {
    const form = document.getElementById("incident-form");
    if (!form) return;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const model = form.dataset.model;
      const status = document.getElementById("incident-new-status").value;
      const message = document.getElementById("incident-message").value;
      if (!window.confirm(`Post "${status}: ${message}" to the public status page?`)) return;
      try {
        await post("/api/v1/models/" + encodeURIComponent(model) + "/incident/updates",
          { status: status, message: message });
        flash("update posted");
        if (document.getElementById("incident")) window.location.reload();
      } catch (e) {
        flash("update refused: " + e.message, true);
      }
    });
  }

  // The overview: its rows, rendered (and escaped) by the server, replaced as they come.
  function followOverview(body) {
    const src = new EventSource("/dashboard/stream");
    src.addEventListener("rows", (ev) => {
      body.innerHTML = ev.data;
      document.body.dataset.updated = String(Date.now());
    });
    src.onerror = () => { /* EventSource reconnects by itself */ };
  }

  const rows = document.getElementById("models-rows");
  if (rows) followOverview(rows);

  const main = document.getElementById("model");
  if (main) {
    render(JSON.parse(main.dataset.initial));
    follow(main.dataset.model);
  }
  incidentForm();
})();
