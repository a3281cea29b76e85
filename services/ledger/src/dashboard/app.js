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

// Operator controls: buttons on the overview act through the control API with the operator's
// token, sent as `Authorization: Bearer` (kept in this tab's session storage, never a cookie, so
// no other site can act in the operator's name). A pause asks why; a redeploy or a rollback asks
// to confirm what it will deploy.
(() => {
  const form = document.getElementById("token-form");
  const input = document.getElementById("operator-token");
  const say = (text) => {
    const status = document.getElementById("action-status");
    if (status) status.textContent = text;
  };
  if (!form || !input) return;
  if (sessionStorage.getItem("conveyor-token")) input.placeholder = "token set";
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (input.value) sessionStorage.setItem("conveyor-token", input.value.trim());
    input.value = "";
    input.placeholder = "token set";
    say("Token set for this tab");
  });
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest && ev.target.closest("button.act");
    if (!button) return;
    const { action, environment, deployment } = button.dataset;
    const body = {};
    if (button.dataset.ask) {
      const reason = window.prompt(button.dataset.ask);
      if (reason === null) return;
      body.reason = reason;
    }
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    if (button.dataset.to) body.to = button.dataset.to;
    const token = sessionStorage.getItem("conveyor-token");
    if (!token) { say("Enter an operator token first"); input.focus(); return; }
    button.disabled = true;
    try {
      const target = deployment
        ? `/api/deployments/${encodeURIComponent(deployment)}/${action}`
        : `/api/environments/${encodeURIComponent(environment)}/${action}`;
      const answer = await fetch(target, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      const reply = await answer.json().catch(() => ({}));
      if (answer.ok) {
        say(`${action} ${environment || deployment}: done${reply.deployment ? " — deployment " + reply.deployment : ""}`);
        const fresh = await fetch(location.href, { headers: { accept: "text/html" } });
        const doc = new DOMParser().parseFromString(await fresh.text(), "text/html");
        const main = document.querySelector("main");
        const next = doc.querySelector("main");
        if (main && next) main.innerHTML = next.innerHTML;
      } else {
        say(`${action} ${environment || deployment} refused (${answer.status}): ${reply.error || answer.statusText}`);
      }
    } catch (e) {
      say(`${action} ${environment || deployment} failed: ${e}`);
    } finally {
      button.disabled = false;
    }
  });
})();
