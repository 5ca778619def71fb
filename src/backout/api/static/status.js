// The public status page refreshes itself from /status/summary.json every two seconds.
// Every value is set with textContent: nothing from the store is ever parsed as HTML.
"use strict";
(function () {
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function when(at) {
    return new Date(at * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  function render(s) {
    const overall = document.getElementById("overall");
    overall.textContent = s.status.description;
    overall.className = "overall indicator-" + s.status.indicator;
    overall.dataset.indicator = s.status.indicator;
    const list = document.getElementById("components");
    list.replaceChildren();
    for (const c of s.components) {
      const li = el("li", "component");
      li.dataset.component = c.id;
      li.append(el("span", "name", c.name), " ");
      const st = el("span", "cstatus st-" + c.status, c.status_label);
      st.dataset.status = c.status;
      li.append(st);
      list.append(li);
    }
    const incidents = document.getElementById("incidents");
    incidents.replaceChildren();
    if (!s.incidents.length) incidents.append(el("p", "quiet", "No incidents in the last 7 days."));
    for (const inc of s.incidents) {
      const a = el("article", "incident");
      a.id = "incident-" + inc.id;
      const h = el("h3", "", inc.title + " ");
      h.append(el("span", "istatus", inc.status));
      a.append(h, el("p", "affected", inc.components.join(", ")));
      const ol = el("ol", "updates");
      for (const u of inc.updates.slice().reverse()) {
        const li = el("li");
        li.append(el("b", "", u.status), " — " + u.message + " ", el("time", "", when(u.at)));
        ol.append(li);
      }
      a.append(ol);
      incidents.append(a);
    }
    document.getElementById("updated").textContent = when(s.page.updated_at);
  }
  async function refresh() {
    try {
      const r = await fetch("/status/summary.json", { cache: "no-store" });
      if (r.ok) render(await r.json());
    } catch (e) {
      /* the next refresh tries again */
    }
  }
  setInterval(refresh, 2000);
})();
