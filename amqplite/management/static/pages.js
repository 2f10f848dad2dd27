/* Pages of the web UI: overview, lists, queue and exchange detail, node. */
"use strict";

const Pages = (() => {
  const { api, enc, h, num, rate, bytes, age, attempt, Table, link, form } = UI;
  const RANGES = { "1 min": 60e3, "5 min": 300e3, "15 min": 900e3, "1 h": 3600e3 };
  const settings = { range: 300e3 };
  const overviewHistory = new Charts.History(3600e3);
  const queueHistories = new Map();

  function rangePicker(onchange) {
    const select = h("select", { name: "range" }, Object.entries(RANGES).map(([label, ms]) =>
      h("option", { value: ms, selected: ms === settings.range }, label)));
    select.addEventListener("change", () => { settings.range = Number(select.value); onchange(); });
    return h("label", {}, "Time range ", select);
  }

  function tile(label, value, id) { return h("div.tile", { id }, h("b", {}, value), h("span", {}, label)); }

  /* Overview: totals, message rates and queued messages over the chosen time range. */
  function overview(main) {
    const tiles = h("div.tiles"), ratesBox = h("div", { id: "chart-rates" }),
      queuedBox = h("div", { id: "chart-queued" });
    const draw = () => {
      Charts.render(ratesBox, { id: "rates", title: "Message rates", unit: "msg/s", series: [
        { key: "publish", label: "Publish", color: "#d35400" },
        { key: "deliver", label: "Deliver / get", color: "#2e7d32" },
        { key: "ack", label: "Ack", color: "#1565c0" }] }, overviewHistory, settings.range);
      Charts.render(queuedBox, { id: "queued", title: "Queued messages", unit: "msgs", series: [
        { key: "ready", label: "Ready", color: "#d35400" },
        { key: "unacked", label: "Unacked", color: "#1565c0" },
        { key: "total", label: "Total", color: "#6b7280" }] }, overviewHistory, settings.range);
    };
    main.append(h("h1", {}, "Overview"), tiles, h("div.toolbar", {}, rangePicker(draw)),
      h("div.charts", {}, ratesBox, queuedBox));
    return {
      async refresh(data) {
        const o = data || await api("GET", "/api/overview");
        const t = o.object_totals || {}, q = o.queue_totals || {};
        tiles.replaceChildren(
          tile("Ready", num(q.messages_ready || 0), "tile-ready"),
          tile("Unacked", num(q.messages_unacknowledged || 0), "tile-unacked"),
          tile("Connections", num(t.connections), "tile-connections"),
          tile("Channels", num(t.channels)), tile("Exchanges", num(t.exchanges)),
          tile("Queues", num(t.queues), "tile-queues"), tile("Consumers", num(t.consumers)),
          tile("Node", o.node || ""), tile("Version", o.product_version || ""));
        draw();
      },
    };
  }

  /* Called by the app on every tick, whatever page is shown: the overview's history. */
  async function sampleOverview() {
    const o = await api("GET", "/api/overview");
    const s = o.message_stats || {}, q = o.queue_totals || {};
    const r = (k) => (s[k + "_details"] ? s[k + "_details"].rate : 0);
    overviewHistory.add({ publish: r("publish"), deliver: r("deliver_get"), ack: r("ack"),
      ready: q.messages_ready || 0, unacked: q.messages_unacknowledged || 0,
      total: q.messages || 0 });
    return o;
  }

  const queueHref = (q) => `#/queues/${enc(q.vhost)}/${enc(q.name)}`;
  const exchangeHref = (e) => `#/exchanges/${enc(e.vhost)}/${enc(e.name || "amq.default")}`;

  function listPage(title, table, ...extra) {
    return (main) => {
      main.append(h("h1", {}, title), table.node, ...extra);
      return { refresh: () => table.load() };
    };
  }

  function connections(main) {
    const table = new Table({ id: "connections", path: "/api/connections", rowName: (c) => c.name,
      columns: [
        { key: "name", label: "Name" }, { key: "user", label: "User" },
        { key: "vhost", label: "Virtual host" }, { key: "state", label: "State" },
        { key: "channels", label: "Channels", num: true },
        { key: "recv_oct", label: "From client", num: true, render: (c) => rate(c, "recv_oct") },
        { key: "send_oct", label: "To client", num: true, render: (c) => rate(c, "send_oct") },
        { key: "close", label: "", sort: false, render: (c) => h("button.danger", { type: "button",
          onclick: () => attempt("Connection closed", () =>
            api("DELETE", "/api/connections/" + enc(c.name))).then(() => table.load()) }, "Close") },
      ] });
    return listPage("Connections", table)(main);
  }

  function channels(main) {
    const table = new Table({ id: "channels", path: "/api/channels", rowName: (c) => c.name,
      columns: [
        { key: "name", label: "Channel" }, { key: "user", label: "User" },
        { key: "vhost", label: "Virtual host" }, { key: "mode", label: "Mode", sort: false,
          render: (c) => (c.confirm ? "confirm" : "") + (c.transactional ? " tx" : "") },
        { key: "prefetch_count", label: "Prefetch", num: true },
        { key: "consumer_count", label: "Consumers", num: true },
        { key: "messages_unacknowledged", label: "Unacked", num: true },
        { key: "messages_unconfirmed", label: "Unconfirmed", num: true },
      ] });
    return listPage("Channels", table)(main);
  }

  function exchanges(main) {
    const table = new Table({ id: "exchanges", path: "/api/exchanges",
      rowName: (e) => e.vhost + "/" + e.name, columns: [
        { key: "name", label: "Name", render: (e) => link(exchangeHref(e), e.name || "(AMQP default)") },
        { key: "vhost", label: "Virtual host" }, { key: "type", label: "Type" },
        { key: "durable", label: "Durable", render: (e) => (e.durable ? "D" : "") },
        { key: "message_stats.publish_in_details.rate", label: "Rate in", num: true,
          render: (e) => rate(e.message_stats, "publish_in") },
        { key: "message_stats.publish_out_details.rate", label: "Rate out", num: true,
          render: (e) => rate(e.message_stats, "publish_out") },
      ] });
    const add = form("declare-exchange", [
      { name: "vhost", label: "Virtual host", value: "/" }, { name: "name", label: "Name" },
      { name: "type", label: "Type", options: ["direct", "fanout", "topic", "headers"] },
      { name: "durable", label: "Durable", options: ["true", "false"] }], "Add exchange",
      async (v) => {
        await attempt(`Exchange ${v.name} declared`, () => api("PUT",
          `/api/exchanges/${enc(v.vhost)}/${enc(v.name)}`, { type: v.type,
            durable: v.durable === "true" }));
        table.load();
      });
    return listPage("Exchanges", table, h("h2", {}, "Add an exchange"), add)(main);
  }

  function queues(main) {
    const table = new Table({ id: "queues", path: "/api/queues", rowName: (q) => q.vhost + "/" + q.name,
      columns: [
        { key: "name", label: "Name", render: (q) => link(queueHref(q), q.name) },
        { key: "vhost", label: "Virtual host" }, { key: "state", label: "State" },
        { key: "messages_ready", label: "Ready", num: true },
        { key: "messages_unacknowledged", label: "Unacked", num: true },
        { key: "messages", label: "Total", num: true },
        { key: "consumers", label: "Consumers", num: true },
        { key: "head_message_timestamp", label: "Oldest ready", num: true,
          render: (q) => (q.head_message_timestamp ? age(Date.now() / 1000 - q.head_message_timestamp) : "") },
        { key: "message_stats.publish_details.rate", label: "In", num: true,
          render: (q) => rate(q.message_stats, "publish") },
        { key: "message_stats.deliver_get_details.rate", label: "Out", num: true,
          render: (q) => rate(q.message_stats, "deliver_get") },
      ] });
    const add = form("declare-queue", [
      { name: "vhost", label: "Virtual host", value: "/" }, { name: "name", label: "Name" },
      { name: "durable", label: "Durable", options: ["true", "false"] },
      { name: "arguments", label: "Arguments (JSON)", value: "{}" }], "Add queue", async (v) => {
      await attempt(`Queue ${v.name} declared`, () => api("PUT",
        `/api/queues/${enc(v.vhost)}/${enc(v.name)}`, { durable: v.durable === "true",
          arguments: JSON.parse(v.arguments || "{}") }));
      table.load();
    });
    return listPage("Queues", table, h("h2", {}, "Add a queue"), add)(main);
  }

  function props(pairs) {
    return h("dl.props", {}, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { prop: k } }, v)]));
  }

  function simpleTable(id, headings, rows) {
    return h("table", { id }, h("thead", {}, h("tr", {}, headings.map((x) => h("th", {}, x)))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
        : h("tr", {}, h("td", { colspan: headings.length }, "none"))));
  }

  return { overview, sampleOverview, connections, channels, exchanges, queues, rangePicker,
    settings, queueHistories, props, simpleTable, queueHref, exchangeHref, tile };
})();
