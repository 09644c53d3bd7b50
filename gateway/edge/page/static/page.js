// sensegate technician's page: refresh the page's cells from "?cells=1" every few seconds.
// The page is complete without this script; it only keeps it current.
(function () {
  "use strict";
  var body = document.body;
  var every = parseInt(body.getAttribute("data-refresh"), 10) || 2000;
  var layout = body.getAttribute("data-layout");
  var live = document.getElementById("live");
  var failures = 0;
  var busy = false;

  function mark(text, stale) {
    live.textContent = text;
    live.className = stale ? "live stale" : "live";
  }

  function apply(doc) {
    if (doc.layout !== layout) { location.reload(); return; }
    for (var id in doc.cells) {
      var el = document.getElementById(id);
      if (el && el.innerHTML !== doc.cells[id]) { el.innerHTML = doc.cells[id]; }
    }
    failures = 0;
    mark("updated " + new Date().toLocaleTimeString(), false);
  }

  function tick() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(location.pathname + "?cells=1", {cache: "no-store", credentials: "same-origin"})
      .then(function (r) {
        if (r.status === 401) { throw new Error("signed out: open ?token=... again"); }
        if (!r.ok) { throw new Error("gateway answered " + r.status); }
        return r.json();
      })
      .then(apply)
      .catch(function (err) {
        failures += 1;
        mark(failures > 1 ? "not updating: " + err.message : "retrying…", failures > 1);
      })
      .then(function () { busy = false; });
  }

  setInterval(tick, every);
  document.addEventListener("visibilitychange", tick);
})();
