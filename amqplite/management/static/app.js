/* The web UI's shell: log in, route by the URL's #fragment, refresh the shown page. */
"use strict";

(() => {
  const { api, auth, h } = UI;
  const routes = [
    [/^\/?$/, Pages.overview], [/^\/connections$/, Pages.connections],
    [/^\/channels$/, Pages.channels], [/^\/exchanges$/, Pages.exchanges],
    [/^\/exchanges\/([^/]+)\/([^/]+)$/, Detail.exchange], [/^\/queues$/, Pages.queues],
    [/^\/queues\/([^/]+)\/([^/]+)$/, Detail.queue], [/^\/node$/, Detail.node],
    [/^\/users$/, Admin.users], [/^\/vhosts$/, Admin.vhosts],
    [/^\/permissions$/, Admin.permissions], [/^\/policies$/, Admin.policies],
    [/^\/definitions$/, Admin.definitions],
  ];
  const main = document.getElementById("app"), loginForm = document.getElementById("login");
  let current = null, timer = null;

  function showLogin(message) {
    auth.clear();
    clearInterval(timer);
    main.hidden = true;
    document.getElementById("nav").hidden = true;
    document.getElementById("logout").hidden = true;
    document.getElementById("who").textContent = "";
    loginForm.hidden = false;
    document.getElementById("login-error").textContent = message || "";
  }

  async function tick() {
    try {
      const overview = await Pages.sampleOverview();
      if (current && current.refresh) await current.refresh(current.isOverview ? overview : undefined);
      main.dataset.refreshed = String(Number(main.dataset.refreshed || 0) + 1);
    } catch (err) {
      if (err.status === 401) showLogin("Your credentials were refused.");
      else UI.toast(err.message, true);
    }
  }

  function route() {
    const path = location.hash.replace(/^#/, "") || "/";
    for (const [pattern, page] of routes) {
      const match = pattern.exec(path);
      if (!match) continue;
      main.replaceChildren();
      delete main.dataset.loaded;
      current = page(main, match.slice(1).map(decodeURIComponent)) || {};
      current.isOverview = page === Pages.overview;
      for (const a of document.querySelectorAll("#nav a")) {
        a.classList.toggle("active", a.getAttribute("href") === "#/" + path.split("/")[1]);
      }
      tick();
      return;
    }
    main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, `No page ${path}.`));
    current = null;
  }

  async function start() {
    let who;
    try {
      who = await api("GET", "/api/whoami");
    } catch (err) {
      showLogin(err.status === 401 ? "Wrong user name or password." : err.message);
      return;
    }
    loginForm.hidden = true;
    main.hidden = false;
    document.getElementById("nav").hidden = false;
    document.getElementById("logout").hidden = false;
    document.getElementById("who").textContent = `${who.name} (${[].concat(who.tags).join(", ")})`;
    route();
    clearInterval(timer);
    timer = setInterval(tick, Number(sessionStorage.getItem("amqplite.refresh") || 5000));
  }

  loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(loginForm);
    auth.set(String(data.get("user")), String(data.get("password")));
    loginForm.reset();
    start();
  });
  document.getElementById("logout").addEventListener("click", () => showLogin("Logged out."));
  window.addEventListener("hashchange", () => { if (auth.get()) route(); });
  if (auth.get()) start(); else showLogin();
})();
