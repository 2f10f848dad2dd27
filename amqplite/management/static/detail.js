/* Detail pages: one queue (charts, age, bindings, consumers, actions), one exchange, the node. */
"use strict";

const Detail = (() => {
  const { api, enc, h, num, rate, bytes, age, attempt, form, toast } = UI;
  const { props, simpleTable, rangePicker, settings, queueHistories } = Pages;

  function queue(main, [vhost, name]) {
    const path = `/api/queues/${enc(vhost)}/${enc(name)}`;
    const key = vhost + "\u0000" + name;
    if (!queueHistories.has(key)) queueHistories.set(key, new Charts.History(3600e3));
    const history = queueHistories.get(key);
    const info = h("div", { id: "queue-info" }), chartBox = h("div", { id: "chart-queue" });
    const consumers = h("div"), bindings = h("div"), got = h("div", { id: "got" });
    const draw = () => Charts.render(chartBox, { id: "queue", title: "Messages in this queue",
      unit: "msgs", series: [{ key: "ready", label: "Ready", color: "#d35400" },
        { key: "unacked", label: "Unacked", color: "#1565c0" }] }, history, settings.range);
    const publish = form("publish", [
      { name: "payload", label: "Payload", type: "textarea" },
      { name: "delivery_mode", label: "Delivery mode", options: ["2 (persistent)", "1 (transient)"] },
      { name: "headers", label: "Headers (JSON)", value: "{}" }], "Publish message", async (v, node) => {
      const properties = { delivery_mode: Number(v.delivery_mode[0]),
        timestamp: Math.floor(Date.now() / 1000), headers: JSON.parse(v.headers || "{}") };
      const result = await attempt("Message published", () => api("POST",
        `/api/exchanges/${enc(vhost)}/amq.default/publish`, { routing_key: name, payload: v.payload,
          payload_encoding: "string", properties }));
      if (result && !result.routed) toast("Message published but not routed", true);
      node.querySelector("textarea").value = "";
      refresh();
    });
    const getForm = form("get", [
      { name: "ackmode", label: "Ack mode", options: ["ack_requeue_true", "reject_requeue_true",
        "ack_requeue_false", "reject_requeue_false"] },
      { name: "count", label: "Messages", value: "1", size: 4 }], "Get messages", async (v) => {
      const messages = await attempt("Got messages", () => api("POST", path + "/get", {
        count: Number(v.count), ackmode: v.ackmode, encoding: "auto", truncate: 50000 }));
      if (messages === undefined) return;
      got.replaceChildren(h("p", { dataset: { count: messages.length } },
        `${messages.length} message(s)`), ...messages.map((m, i) => h("div.message", {},
        h("h3", {}, `Message ${i + 1}`), props([["Exchange", m.exchange || "(AMQP default)"],
          ["Routing key", m.routing_key], ["Redelivered", String(m.redelivered)],
          ["Properties", JSON.stringify(m.properties)], ["Payload", `${m.payload_bytes} bytes, ` +
            m.payload_encoding]]), h("pre.payload", {}, m.payload))));
      refresh();
    });
    const purge = h("button.danger", { type: "button", id: "purge", onclick: async () => {
      if (!confirm(`Purge every ready message of ${name}?`)) return;
      await attempt("Queue purged", () => api("DELETE", path + "/contents"));
      refresh();
    } }, "Purge messages");
    const remove = h("button.danger", { type: "button", id: "delete", onclick: async () => {
      if (!confirm(`Delete queue ${name}?`)) return;
      if (await attempt("Queue deleted", () => api("DELETE", path)) !== undefined) location.hash = "#/queues";
    } }, "Delete queue");
    const bind = form("bind", [{ name: "exchange", label: "From exchange" },
      { name: "routing_key", label: "Routing key" }], "Bind", async (v) => {
      await attempt("Binding added", () => api("POST",
        `/api/bindings/${enc(vhost)}/e/${enc(v.exchange)}/q/${enc(name)}`,
        { routing_key: v.routing_key, arguments: {} }));
      refresh();
    });
    main.append(h("h1", {}, `Queue ${name}`, h("small", {}, ` in virtual host ${vhost}`)), info,
      h("div.toolbar", {}, rangePicker(draw)), chartBox,
      h("h2", {}, "Consumers"), consumers, h("h2", {}, "Bindings"), bindings, bind,
      h("h2", {}, "Publish a message"), publish, h("h2", {}, "Get messages"), getForm, got,
      h("h2", {}, "Purge or delete"), h("div.toolbar", {}, purge, remove));

    async function refresh() {
      const q = await api("GET", path);
      history.add({ ready: q.messages_ready || 0, unacked: q.messages_unacknowledged || 0 });
      const head = q.head_message_timestamp;
      info.replaceChildren(h("div.tiles", {},
        Pages.tile("Ready", num(q.messages_ready), "q-ready"),
        Pages.tile("Unacked", num(q.messages_unacknowledged), "q-unacked"),
        Pages.tile("Total", num(q.messages), "q-total"),
        Pages.tile("Oldest ready message", head ? age(Date.now() / 1000 - head) : "\u2013", "q-age"),
        Pages.tile("Consumers", num(q.consumers)),
        Pages.tile("Bytes ready", bytes(q.message_bytes_ready)),
        Pages.tile("In", rate(q.message_stats, "publish") || "0/s"),
        Pages.tile("Out", rate(q.message_stats, "deliver_get") || "0/s")),
      props([["State", q.state], ["Durable", String(q.durable)], ["Auto-delete", String(q.auto_delete)],
        ["Exclusive", String(q.exclusive)], ["Arguments", JSON.stringify(q.arguments)],
        ["Policy", q.policy || ""], ["Consumer utilisation", num(q.consumer_utilisation)]]));
      consumers.replaceChildren(simpleTable("consumers", ["Tag", "Channel", "Ack", "Prefetch"],
        (q.consumer_details || []).map((c) => [c.consumer_tag, (c.channel_details || {}).name || "",
          c.ack_required ? "manual" : "auto", String(c.prefetch_count)])));
      const list = await api("GET", path + "/bindings");
      bindings.replaceChildren(simpleTable("bindings", ["From", "Routing key", "Arguments", ""],
        list.map((b) => [b.source || "(AMQP default)", b.routing_key, JSON.stringify(b.arguments),
          b.source ? h("button", { type: "button", onclick: async () => {
            await attempt("Binding removed", () => api("DELETE", `/api/bindings/${enc(vhost)}/e/` +
              `${enc(b.source)}/q/${enc(name)}/${enc(b.properties_key)}`));
            refresh();
          } }, "Unbind") : ""])));
      draw();
      main.dataset.loaded = "true";
    }
    return { refresh };
  }

  function exchange(main, [vhost, name]) {
    const path = `/api/exchanges/${enc(vhost)}/${enc(name)}`;
    const info = h("div"), bindings = h("div");
    const publish = form("publish", [{ name: "routing_key", label: "Routing key" },
      { name: "payload", label: "Payload", type: "textarea" }], "Publish message", async (v) => {
      const result = await attempt("Message published", () => api("POST", path + "/publish", {
        routing_key: v.routing_key, payload: v.payload, payload_encoding: "string",
        properties: { timestamp: Math.floor(Date.now() / 1000) } }));
      if (result && !result.routed) toast("Message published but not routed", true);
    });
    const remove = h("button.danger", { type: "button", onclick: async () => {
      if (!confirm(`Delete exchange ${name}?`)) return;
      if (await attempt("Exchange deleted", () => api("DELETE", path)) !== undefined) {
        location.hash = "#/exchanges";
      }
    } }, "Delete exchange");
    main.append(h("h1", {}, `Exchange ${name}`), info, h("h2", {}, "Bindings from here"), bindings,
      h("h2", {}, "Publish a message"), publish, remove);
    return {
      async refresh() {
        const e = await api("GET", path);
        info.replaceChildren(props([["Type", e.type], ["Durable", String(e.durable)],
          ["Internal", String(e.internal)], ["Arguments", JSON.stringify(e.arguments)],
          ["Rate in", rate(e.message_stats, "publish_in") || "0/s"],
          ["Rate out", rate(e.message_stats, "publish_out") || "0/s"]]));
        const list = await api("GET", path + "/bindings/source");
        bindings.replaceChildren(simpleTable("bindings", ["To", "Type", "Routing key"],
          list.map((b) => [b.destination_type === "queue" ? UI.link(Pages.queueHref(
            { vhost, name: b.destination }), b.destination) : b.destination, b.destination_type,
          b.routing_key])));
      },
    };
  }

  function usage(label, used, limit, format, id) {
    const share = limit ? Math.min(1, used / limit) : 0;
    return h("tr", { id }, h("th", {}, label), h("td", {}, h("span.bar", {}, h("i", {
      class: share > 0.8 ? "high" : undefined, style: `width:${(share * 100).toFixed(1)}%` }))),
    h("td.num", {}, `${format(used)} of ${limit ? format(limit) : "?"}`));
  }

  function node(main) {
    const box = h("div");
    main.append(h("h1", {}, "Node"), box);
    return {
      async refresh() {
        const [n] = await api("GET", "/api/nodes");
        const alarms = [];
        if (n.mem_alarm) alarms.push("memory");
        if (n.disk_free_alarm) alarms.push("disk");
        const plain = (v) => num(v);
        box.replaceChildren(
          h("p", { id: "alarms" }, alarms.length ? h("span.alarm", {},
            `Resource alarm: ${alarms.join(", ")} (publishers are blocked)`)
            : h("span.ok", {}, "No resource alarms")),
          h("table", { id: "node-usage" }, h("tbody", {},
            usage("Memory", n.mem_used, n.mem_limit, bytes, "mem"),
            usage("File descriptors", n.fd_used, n.fd_total, plain, "fd"),
            usage("Sockets", n.sockets_used, n.sockets_total, plain, "sockets"),
            usage("Processes / tasks", n.proc_used, n.proc_total, plain, "proc"),
            h("tr", { id: "disk" }, h("th", {}, "Disk free"), h("td", {}, n.disk_free_alarm
              ? h("span.alarm", {}, "below limit") : "above limit"),
            h("td.num", {}, `${bytes(n.disk_free)} free, limit ${bytes(n.disk_free_limit)}`)))),
          h("h2", {}, "Node"), props([["Name", n.name], ["Uptime", age((n.uptime || 0) / 1000)],
            ["OS pid", n.os_pid], ["Exchange types", (n.exchange_types || []).map((t) => t.name).join(", ")],
            ["Auth mechanisms", (n.auth_mechanisms || []).filter((m) => m.enabled).map((m) => m.name)
              .join(", ")]]));
      },
    };
  }

  return { queue, exchange, node };
})();
