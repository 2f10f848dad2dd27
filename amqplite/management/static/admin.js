/* Admin pages: users, virtual hosts, permissions, policies, definitions import and export. */
"use strict";

const Admin = (() => {
  const { api, enc, h, attempt, form, Table } = UI;

  function deleteButton(label, path, table) {
    return h("button.danger", { type: "button", onclick: async () => {
      if (!confirm(`Delete ${label}?`)) return;
      await attempt(`Deleted ${label}`, () => api("DELETE", path));
      table.load();
    } }, "Delete");
  }

  function page(title, table, formTitle, addForm) {
    return (main) => {
      main.append(h("h1", {}, title), table.node, h("h2", {}, formTitle), addForm);
      return { refresh: () => table.load() };
    };
  }

  function users(main) {
    const table = new Table({ id: "users", path: "/api/users", rowName: (u) => u.name, columns: [
      { key: "name", label: "Name" },
      { key: "tags", label: "Tags", render: (u) => [].concat(u.tags || []).join(", ") },
      { key: "delete", label: "", sort: false,
        render: (u) => deleteButton(`user ${u.name}`, "/api/users/" + enc(u.name), table) }] });
    const add = form("add-user", [{ name: "name", label: "Name" },
      { name: "password", label: "Password", type: "password" },
      { name: "tags", label: "Tags", options: ["administrator", "monitoring", "policymaker",
        "management", ""] }], "Add user", async (v) => {
      await attempt(`User ${v.name} added`, () => api("PUT", "/api/users/" + enc(v.name),
        { password: v.password, tags: v.tags }));
      table.load();
    });
    return page("Users", table, "Add a user", add)(main);
  }

  function vhosts(main) {
    const table = new Table({ id: "vhosts", path: "/api/vhosts", rowName: (v) => v.name, columns: [
      { key: "name", label: "Name" }, { key: "messages", label: "Messages", num: true },
      { key: "messages_ready", label: "Ready", num: true },
      { key: "messages_unacknowledged", label: "Unacked", num: true },
      { key: "delete", label: "", sort: false,
        render: (v) => deleteButton(`virtual host ${v.name}`, "/api/vhosts/" + enc(v.name), table) }] });
    const add = form("add-vhost", [{ name: "name", label: "Name" },
      { name: "description", label: "Description" }], "Add virtual host", async (v) => {
      await attempt(`Virtual host ${v.name} added`, () => api("PUT", "/api/vhosts/" + enc(v.name),
        { description: v.description }));
      table.load();
    });
    return page("Virtual hosts", table, "Add a virtual host", add)(main);
  }

  function permissions(main) {
    const table = new Table({ id: "permissions", path: "/api/permissions",
      rowName: (p) => p.vhost + "/" + p.user, columns: [
        { key: "user", label: "User" }, { key: "vhost", label: "Virtual host" },
        { key: "configure", label: "Configure" }, { key: "write", label: "Write" },
        { key: "read", label: "Read" },
        { key: "delete", label: "", sort: false, render: (p) => deleteButton(
          `permissions of ${p.user} in ${p.vhost}`, `/api/permissions/${enc(p.vhost)}/${enc(p.user)}`,
          table) }] });
    const add = form("set-permission", [{ name: "user", label: "User" },
      { name: "vhost", label: "Virtual host", value: "/" },
      { name: "configure", label: "Configure", value: ".*" }, { name: "write", label: "Write", value: ".*" },
      { name: "read", label: "Read", value: ".*" }], "Set permission", async (v) => {
      await attempt(`Permissions of ${v.user} set`, () => api("PUT",
        `/api/permissions/${enc(v.vhost)}/${enc(v.user)}`,
        { configure: v.configure, write: v.write, read: v.read }));
      table.load();
    });
    return page("Permissions", table, "Set a permission", add)(main);
  }

  function policies(main) {
    const table = new Table({ id: "policies", path: "/api/policies",
      rowName: (p) => p.vhost + "/" + p.name, columns: [
        { key: "name", label: "Name" }, { key: "vhost", label: "Virtual host" },
        { key: "pattern", label: "Pattern" }, { key: "apply-to", label: "Apply to" },
        { key: "definition", label: "Definition", sort: false, render: (p) => JSON.stringify(p.definition) },
        { key: "priority", label: "Priority", num: true },
        { key: "delete", label: "", sort: false, render: (p) => deleteButton(`policy ${p.name}`,
          `/api/policies/${enc(p.vhost)}/${enc(p.name)}`, table) }] });
    const add = form("add-policy", [{ name: "vhost", label: "Virtual host", value: "/" },
      { name: "name", label: "Name" }, { name: "pattern", label: "Pattern", value: ".*" },
      { name: "apply-to", label: "Apply to", options: ["queues", "exchanges", "all"] },
      { name: "priority", label: "Priority", value: "0", size: 4 },
      { name: "definition", label: "Definition (JSON)", type: "textarea",
        placeholder: '{"max-length": 1000}' }], "Add policy", async (v) => {
      await attempt(`Policy ${v.name} added`, () => api("PUT",
        `/api/policies/${enc(v.vhost)}/${enc(v.name)}`, { pattern: v.pattern,
          "apply-to": v["apply-to"], priority: Number(v.priority),
          definition: JSON.parse(v.definition || "{}") }));
      table.load();
    });
    return page("Policies", table, "Add a policy", add)(main);
  }

  function definitions(main) {
    const status = h("p", { id: "definitions-status" });
    const exportButton = h("button", { type: "button", id: "export", onclick: async () => {
      const defs = await attempt("Definitions exported", () => api("GET", "/api/definitions"));
      if (defs === undefined) return;
      const text = JSON.stringify(defs, null, 2);
      const a = h("a", { href: URL.createObjectURL(new Blob([text], { type: "application/json" })),
        download: "amqplite-definitions.json", id: "download" }, "Download amqplite-definitions.json");
      status.replaceChildren(a, ` (${text.length} bytes: ${(defs.queues || []).length} queues, ` +
        `${(defs.exchanges || []).length} exchanges, ${(defs.users || []).length} users)`);
    } }, "Export definitions");
    const file = h("input", { type: "file", accept: ".json,application/json", name: "file" });
    const text = h("textarea", { name: "definitions", rows: 8, cols: 80,
      placeholder: "Paste definitions JSON here or choose a file" });
    file.addEventListener("change", async () => { text.value = await file.files[0].text(); });
    const importForm = h("form.action", { id: "import" }, file, text,
      h("button", { type: "submit" }, "Import definitions"));
    importForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      let body;
      try { body = JSON.parse(text.value); } catch (err) {
        UI.toast("Not JSON: " + err.message, true);
        return;
      }
      if (await attempt("Definitions imported", () => api("POST", "/api/definitions", body))
        !== undefined) status.textContent = "Imported.";
    });
    main.append(h("h1", {}, "Definitions"), h("h2", {}, "Export"), exportButton, status,
      h("h2", {}, "Import"), importForm);
    return {};
  }

  return { users, vhosts, permissions, policies, definitions };
})();
