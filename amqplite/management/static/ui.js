/* Shared pieces of the web UI: the API client, element building, tables paged by the server. */
"use strict";

const UI = (() => {
  const AUTH_KEY = "amqplite.auth";  // sessionStorage: gone when the tab closes; never in a URL

  const auth = {
    get: () => sessionStorage.getItem(AUTH_KEY),
    set: (user, password) => sessionStorage.setItem(AUTH_KEY, btoa(unescape(encodeURIComponent(
      user + ":" + password)))),
    clear: () => sessionStorage.removeItem(AUTH_KEY),
  };

  class ApiError extends Error {
    constructor(status, reason) { super(`HTTP ${status}: ${reason}`); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Basic " + auth.get(), "X-Requested-With": "XMLHttpRequest" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (!response.ok) {
      const reason = data && (data.reason || data.error) ? (data.reason || data.error) : text;
      throw new ApiError(response.status, reason || response.statusText);
    }
    return data;
  }

  const enc = encodeURIComponent;

  /* h("tag.class", {attr: value, onclick: fn}, ...children) */
  function h(spec, attrs, ...children) {
    const [tag, ...classes] = spec.split(".");
    const node = document.createElement(tag);
    if (classes.length) node.className = classes.join(" ");
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function toast(message, isError) {
    const box = document.getElementById("toast");
    box.textContent = message;
    box.className = "show" + (isError ? " error" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.className = ""; }, isError ? 8000 : 3000);
  }

  /* Run an action, tell the user how it went; returns the result or undefined. */
  async function attempt(label, action) {
    try {
      const result = await action();
      toast(label);
      return result;
    } catch (err) {
      toast(`${label} failed: ${err.message}`, true);
      return undefined;
    }
  }

  function num(v) { return v === undefined || v === null ? "" : Charts.formatValue(v); }
  function rate(obj, key) {
    const d = obj && obj[key + "_details"];
    return d ? num(d.rate) + "/s" : "";
  }
  function bytes(v) {
    if (v === undefined || v === null) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : v) + " " + units[i];
  }
  function age(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }
  function get(obj, path) {
    return path.split(".").reduce((o, k) => (o === null || o === undefined ? undefined : o[k]), obj);
  }

  /* A form of labelled inputs; fields: [{name, label, type, value, options, placeholder}]. */
  function form(id, fields, submitLabel, onsubmit) {
    const node = h("form.action", { id });
    for (const f of fields) {
      let input;
      if (f.options) {
        input = h("select", { name: f.name }, f.options.map((o) => h("option", { value: o }, o)));
        if (f.value !== undefined) input.value = f.value;
      } else if (f.type === "textarea") {
        input = h("textarea", { name: f.name, rows: f.rows || 3, cols: f.cols || 40,
          placeholder: f.placeholder });
        input.value = f.value || "";
      } else {
        input = h("input", { name: f.name, type: f.type || "text", placeholder: f.placeholder,
          value: f.value, size: f.size });
      }
      node.append(h("label", {}, f.label, input));
    }
    node.append(h("button", { type: "submit" }, submitLabel));
    node.addEventListener("submit", async (event) => {
      event.preventDefault();
      const values = Object.fromEntries(new FormData(node).entries());
      await onsubmit(values, node);
    });
    return node;
  }

  /* A list of objects, paged, filtered and sorted by the server (?page=&name=&sort=).
     columns: [{key, label, num, sort (false to disable), render(row) -> text|Node}]. */
  class Table {
    constructor(spec) {
      this.spec = spec;
      this.state = { page: 1, pageSize: 50, name: "", regex: false, sort: spec.sort || "name",
        reverse: !!spec.reverse };
      this.table = h("table", { id: spec.id });
      this.info = h("span.info");
      this.pager = h("span.pager");
      const filter = h("input", { type: "search", placeholder: "Filter by name", name: "filter" });
      let timer;
      filter.addEventListener("input", () => {
        clearTimeout(timer);
        timer = setTimeout(() => { this.state.name = filter.value; this.state.page = 1; this.load(); },
          250);
      });
      const regex = h("input", { type: "checkbox", name: "regex" });
      regex.addEventListener("change", () => { this.state.regex = regex.checked; this.load(); });
      const size = h("select", { name: "page_size" },
        [20, 50, 100, 500].map((n) => h("option", { value: n, selected: n === 50 }, n)));
      size.addEventListener("change", () => {
        this.state.pageSize = Number(size.value); this.state.page = 1; this.load();
      });
      this.node = h("section", {},
        h("div.toolbar", {}, filter, h("label", {}, regex, " regex"), size, " per page ",
          this.pager, this.info),
        this.table);
    }

    query() {
      const s = this.state, q = new URLSearchParams({ page: s.page, page_size: s.pageSize });
      if (s.name) { q.set("name", s.name); q.set("use_regex", String(s.regex)); }
      if (s.sort) { q.set("sort", s.sort); q.set("sort_reverse", String(s.reverse)); }
      return q.toString();
    }

    async load() {
      const ticket = (this.ticket = (this.ticket || 0) + 1);
      let data;
      try {
        data = await api("GET", this.spec.path + "?" + this.query());
        if (ticket !== this.ticket) return;  // a later load (new page, sort, filter) answers instead
      } catch (err) {
        this.info.textContent = err.message;
        this.info.className = "info error";
        return;
      }
      if (Array.isArray(data)) {
        data = { items: data, page: 1, page_count: 1, filtered_count: data.length,
          total_count: data.length };
      }
      this.info.className = "info";
      this.info.textContent = `${data.filtered_count} of ${data.total_count} shown in ` +
        `${data.page_count} page(s)`;
      this.renderPager(data);
      this.renderRows(data.items);
      this.table.dataset.loaded = "true";
      this.table.dataset.total = String(data.filtered_count);
      this.table.dataset.filter = this.state.name;
    }

    renderPager(data) {
      const go = (page) => h("button", { type: "button", disabled: page < 1 || page > data.page_count,
        onclick: () => { this.state.page = page; this.load(); } });
      const prev = go(data.page - 1), next = go(data.page + 1);
      prev.textContent = "\u2039"; next.textContent = "\u203A";
      this.pager.replaceChildren(prev, ` page ${data.page} of ${data.page_count} `, next);
    }

    renderRows(items) {
      const head = h("tr", {}, this.spec.columns.map((c) => {
        const sortable = c.sort !== false;
        const key = c.sort || c.key;
        const cls = [c.num ? "num" : "", sortable ? "sortable" : "",
          this.state.sort === key ? (this.state.reverse ? "sorted-desc" : "sorted-asc") : ""];
        return h("th", { class: cls.join(" ").trim(), dataset: { key },
          onclick: sortable ? () => this.sortBy(key) : undefined }, c.label);
      }));
      const rows = items.map((row) => h("tr", { dataset: { name: this.spec.rowName(row) } },
        this.spec.columns.map((c) => {
          const value = c.render ? c.render(row) : get(row, c.key);
          return h("td", { class: c.num ? "num" : undefined, dataset: { col: c.key } },
            c.num && typeof value === "number" ? num(value) : value);
        })));
      this.table.replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
    }

    sortBy(key) {
      if (this.state.sort === key) this.state.reverse = !this.state.reverse;
      else { this.state.sort = key; this.state.reverse = false; }
      this.load();
    }
  }

  function link(hash, text) { return h("a", { href: hash }, text); }

  return { auth, api, ApiError, enc, h, toast, attempt, num, rate, bytes, age, get, form, Table,
    link };
})();
