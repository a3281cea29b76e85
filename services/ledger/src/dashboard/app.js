// Live updates: the page listens to the ledger's Server-Sent Events and re-renders its <main>
// from the server when something it shows changed. No framework, no reload.
(() => {
  const main = document.querySelector("main");
  const live = main && main.dataset.live;
  const status = document.getElementById("live-status");
  if (!live || !window.EventSource) return;
  let busy = false;
  let again = false;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const answer = await fetch(location.href, { headers: { accept: "text/html" } });
      const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = doc.querySelector("main");
      if (fresh) {
        main.innerHTML = fresh.innerHTML;
        main.dataset.updates = String(Number(main.dataset.updates || 0) + 1);
        if (status) status.textContent = "Updated " + new Date().toLocaleTimeString();
      }
    } catch (_) {
      if (status) status.textContent = "Live updates interrupted; retrying";
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };
  const feed = new EventSource("/api/events");
  feed.addEventListener("open", () => { if (status) status.textContent = "Live"; });
  feed.addEventListener("deployment", (ev) => {
    if (live === "all") { refresh(); return; }
    try { if (JSON.parse(ev.data).id === live) refresh(); } catch (_) { /* ignore */ }
  });
  feed.addEventListener("reload", refresh);
})();
