// The ciolake dashboard: fetch each panel's rows from /dashboard/data/<panel> and draw them.
// Charts are Vega-Lite specs built by Altair on the server; the rows are put in as their data.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const form = document.getElementById("filters");
  const status = document.getElementById("status");
  // Read by the browser test: what each panel shows.
  const state = { loaded: false, generation: 0, panels: {}, errors: [] };
  window.ciolakeDashboard = state;

  const number = new Intl.NumberFormat("en-US");
  const percent = new Intl.NumberFormat("en-US", { style: "percent", maximumFractionDigits: 1 });
  const seconds = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

  function query() {
    const params = new URLSearchParams(new FormData(form));
    for (const [key, value] of [...params]) {
      if (!value) params.delete(key);
    }
    return params.toString();
  }

  function message(element, text, isError) {
    element.replaceChildren();
    const div = document.createElement("div");
    div.className = isError ? "message error" : "message";
    div.textContent = text;
    element.appendChild(div);
  }

  function countMarks(item) {
    // Items of every mark in a Vega scenegraph, group marks excluded.
    let count = 0;
    const items = item.items || [];
    for (const child of items) {
      if (child.marktype === "group" || child.items) {
        count += countMarks(child);
      } else {
        count += 1;
      }
    }
    return count;
  }

  async function drawChart(element, name, rows) {
    // Rows may name a variant of the chart: per hour rather than per day, say.
    const variant = rows[0].variant || rows[0].grain;
    const spec = structuredClone(config.specs[`${name}:${variant}`] || config.specs[name]);
    // The spec's data is named "rows" (at the top or in each layer): provide it by name.
    spec.datasets = { rows: rows };
    const result = await vegaEmbed(element, spec, { actions: false, renderer: "svg" });
    return countMarks(result.view.scenegraph().root);
  }

  function formatCell(column, value) {
    if (value === null || value === undefined) return "–";
    if (column.format === "percent") return percent.format(value);
    if (column.format === "number") return number.format(value);
    if (column.format === "seconds") return `${seconds.format(value)} s`;
    return String(value);
  }

  function drawTable(element, panel, rows) {
    const table = document.createElement("table");
    table.className = "cohorts";
    const head = table.createTHead().insertRow();
    for (const column of panel.columns) {
      const th = document.createElement("th");
      th.textContent = column.title;
      if (column.className) th.className = column.className;
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      for (const column of panel.columns) {
        const td = tr.insertCell();
        td.textContent = formatCell(column, row[column.field]);
        if (column.format === "percent" && typeof row[column.field] === "number") {
          const bar = document.createElement("span");
          bar.className = "bar";
          bar.style.width = `${Math.round(Math.min(1, row[column.field]) * 40)}px`;
          td.appendChild(bar);
        }
        if (column.className) td.className = column.className;
      }
    }
    const scroll = document.createElement("div");
    scroll.className = "scroll";
    scroll.appendChild(table);
    element.replaceChildren(scroll);
    return rows.length;
  }

  function drawTiles(element, rows) {
    element.replaceChildren();
    for (const tile of rows) {
      const div = document.createElement("div");
      div.className = "tile";
      const label = document.createElement("div");
      label.className = "label";
      label.textContent = tile.title;
      const value = document.createElement("div");
      value.className = "value";
      value.textContent = formatCell(tile, tile.value);
      const note = document.createElement("div");
      note.className = "note";
      note.textContent = tile.note || "";
      div.append(label, value, note);
      element.appendChild(div);
    }
    return rows.length;
  }

  async function loadPanel(panel, params, generation) {
    const element = document.querySelector(`[data-panel="${panel.name}"] .panel-body`);
    element.classList.add("loading");
    const shown = { rows: 0, marks: 0, error: null };
    try {
      const response = await fetch(`${config.base}/data/${panel.name}?${params}`);
      const payload = await response.json().catch(() => ({}));
      if (generation !== state.generation) return;
      if (!response.ok) throw new Error(payload.error || `${response.status} ${response.statusText}`);
      shown.rows = payload.rows.length;
      if (panel.kind === "tiles") {
        shown.marks = drawTiles(element, payload.rows);
      } else if (!payload.rows.length) {
        message(element, "No data for these filters.", false);
      } else if (panel.kind === "table") {
        shown.marks = drawTable(element, panel, payload.rows);
      } else {
        shown.marks = await drawChart(element, panel.name, payload.rows);
      }
    } catch (error) {
      shown.error = String(error.message || error);
      state.errors.push(`${panel.name}: ${shown.error}`);
      message(element, `Could not load: ${shown.error}`, true);
    } finally {
      element.classList.remove("loading");
    }
    state.panels[panel.name] = shown;
  }

  async function loadAll() {
    state.generation += 1;
    const generation = state.generation;
    state.loaded = false;
    state.errors = [];
    status.textContent = "Loading…";
    const params = query();
    history.replaceState(null, "", params ? `?${params}` : location.pathname);
    await Promise.all(config.panels.map((panel) => loadPanel(panel, params, generation)));
    if (generation !== state.generation) return;
    state.loaded = true;
    const stamp = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    status.textContent = state.errors.length ? `Loaded with errors at ${stamp}` : `Updated ${stamp}`;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    loadAll();
  });
  form.querySelector("select[name=channel]").addEventListener("change", () => loadAll());
  if (config.refresh_seconds > 0) {
    setInterval(() => {
      if (document.visibilityState === "visible") loadAll();
    }, config.refresh_seconds * 1000);
  }
  loadAll();
})();
