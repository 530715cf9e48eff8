// pp_notebook's live dashboard: draws the compact state the kernel syncs
// (pp_notebook/views/state.py) as HTML and SVG. A plain ES module for anywidget: no build step.
// To the kernel it sends {kind: "cancel"} (the Cancel button) and {kind: "traceback", task}
// (a failure clicked); the traceback comes back as a custom message.

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 560, LABEL_W = 40, LANE_H = 14, LANE_GAP = 3, AXIS_H = 16;
const HIST_W = 240, HIST_H = 110;
const FAMILIES = ["ok", "failed", "cancelled"];

/** `0.012 s` style durations, as pp_notebook.fmt.seconds writes them. */
export function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 0.1) return value >= 0.001 ? `${(value * 1000).toFixed(0)} ms`
                                         : `${(value * 1e6).toFixed(0)} µs`;
  if (value < 60) return value >= 1 ? `${value.toFixed(1)} s` : `${value.toFixed(2)} s`;
  if (value < 3600) {
    return `${Math.floor(value / 60)} min ${String(Math.floor(value % 60)).padStart(2, "0")} s`;
  }
  return `${Math.floor(value / 3600)} h ${String(Math.floor(value % 3600 / 60)).padStart(2, "0")} min`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function html(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  return fill(node, attrs, children);
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  return fill(node, attrs, children);
}

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** What a timeline bar stands for, as its tooltip says it. */
export function barTip(timeline, bar) {
  if (timeline.mode === "tasks") {
    const [lane, , duration, status, task, item] = bar;
    return `task ${task} · ${item} · engine ${timeline.lanes[lane]} · ${seconds(duration)} · ${status}`;
  }
  const [, start, duration, , , count, mix] = bar;
  const statuses = Object.entries(mix).sort((a, b) => b[1] - a[1])
    .map(([status, n]) => `${n} ${status}`).join(", ");
  return [`${seconds(start)} – ${seconds(start + duration)}`, plural(count, "task"), statuses]
    .filter(Boolean).join(" · ");
}

function drawTimeline(timeline, selected) {
  const lanes = timeline.lanes || [];
  const span = timeline.span_s || 1;
  const scale = (WIDTH - LABEL_W - 8) / span;
  const height = lanes.length * (LANE_H + LANE_GAP) + AXIS_H;
  const chart = svg("svg", {class: "ppnb-timeline", width: WIDTH, height,
                            viewBox: `0 0 ${WIDTH} ${height}`, role: "img",
                            "aria-label": "task timeline per engine"});
  lanes.forEach((engine, row) => {
    const y = row * (LANE_H + LANE_GAP);
    chart.append(svg("text", {x: 0, y: y + LANE_H - 3}, `e${engine}`),
                 svg("rect", {class: "lane", x: LABEL_W, y, width: WIDTH - LABEL_W - 8,
                              height: LANE_H}));
  });
  const mark = lane => selected === null ? "" : lanes[lane] === selected ? " picked" : " dim";
  for (const bar of timeline.bars || []) {
    const [lane, start, duration, status] = bar;
    chart.append(svg("rect", {
      class: `bar s-${status}${mark(lane)}`,
      x: (LABEL_W + start * scale).toFixed(1), y: lane * (LANE_H + LANE_GAP),
      width: Math.max(duration * scale, 1).toFixed(1), height: LANE_H,
      "fill-opacity": timeline.mode === "bins" ? bar[4] : null,
      "data-tip": barTip(timeline, bar)}));
  }
  for (const [lane, start] of timeline.running || []) {
    chart.append(svg("rect", {
      class: `bar s-running${mark(lane)}`, x: (LABEL_W + start * scale).toFixed(1),
      y: lane * (LANE_H + LANE_GAP) + 2, width: Math.max((span - start) * scale, 1).toFixed(1),
      height: LANE_H - 4, "data-tip": `engine ${lanes[lane]}: running for ${seconds(span - start)}`}));
  }
  chart.append(svg("text", {x: LABEL_W, y: height - 4}, "0"),
               svg("text", {x: WIDTH - 8, y: height - 4, "text-anchor": "end"}, seconds(span)));
  return chart;
}

function drawHistogram(histogram) {
  const edges = histogram.edges || [];
  if (!edges.length) {
    return svg("svg", {class: "ppnb-hist", width: HIST_W, height: 24},
               svg("text", {x: 0, y: 14}, "no task finished yet"));
  }
  const totals = edges.slice(1).map((_, i) => FAMILIES.reduce((n, f) => n + histogram[f][i], 0));
  const plotH = HIST_H - AXIS_H, barW = HIST_W / totals.length, top = Math.max(...totals);
  const chart = svg("svg", {class: "ppnb-hist", width: HIST_W, height: HIST_H,
                            viewBox: `0 0 ${HIST_W} ${HIST_H}`, role: "img",
                            "aria-label": "histogram of task durations"});
  totals.forEach((total, i) => {
    let base = 0;
    for (const family of FAMILIES) {
      const value = histogram[family][i];
      if (!value) continue;
      const h = Math.max(plotH * value / top, 1);
      chart.append(svg("rect", {class: `s-${family}`, x: (i * barW).toFixed(1),
                                y: (plotH - plotH * base / top - h).toFixed(1),
                                width: Math.max(barW - 1, 1).toFixed(1), height: h.toFixed(1)}));
      base += value;
    }
    if (total) {
      chart.append(svg("rect", {class: "bin", x: (i * barW).toFixed(1), y: 0,
                                width: barW.toFixed(1), height: plotH,
                                "data-tip": `${seconds(edges[i])} – ${seconds(edges[i + 1])}: ${plural(total, "task")}`}));
    }
  });
  chart.append(svg("text", {x: 0, y: HIST_H - 4}, seconds(edges[0])),
               svg("text", {x: HIST_W, y: HIST_H - 4, "text-anchor": "end"},
                   seconds(edges[edges.length - 1])));
  return chart;
}

const ENGINE_COLUMNS = [["id", "engine"], ["host", "host"], ["job", "job"], ["state", "state"],
                        ["done", "done"], ["failed", "failed"], ["load", "load"],
                        ["running", "running"], ["for", "for"], ["cpu", "CPU"],
                        ["memory", "memory"]];

function drawEngines(engines, selected, pick) {
  // the job column only where a scheduler started engines
  const columns = ENGINE_COLUMNS.filter(([key]) => key !== "job" || engines.some(row => row.job));
  return html("table", {class: "ppnb-engines"},
    html("thead", {}, html("tr", {}, columns.map(([, name]) => html("th", {}, name)))),
    html("tbody", {}, engines.map(row => html("tr", {
      class: row.id === selected ? "selected" : null, "data-engine": row.id,
      title: "click: highlight this engine's tasks", onclick: () => pick(row.id)},
      columns.map(([key]) => html("td", {class: `c-${key}`},
        key === "state" ? [html("span", {class: `dot e-${row.state.replace(" ", "-")}`}),
                           row.state]
                        : key === "failed" && row.failed ? html("b", {}, row.failed)
                        : row[key]))))));
}

function drawPreview(preview) {
  const first = preview.first || [], seen = new Set(first.map(row => row[0]));
  const latest = (preview.latest || []).filter(row => !seen.has(row[0]));
  if (!first.length && !latest.length) return null;
  const rows = rows => rows.map(([task, item, status, value]) => html("tr", {},
    html("td", {}, task), html("td", {}, item), html("td", {}, status), html("td", {}, value)));
  return html("div", {class: "ppnb-preview"},
    html("div", {class: "ppnb-caption"}, "Results so far: the first rows, then the latest"),
    html("table", {},
      html("thead", {}, html("tr", {}, ["task", "item", "status", "value"].map(
        name => html("th", {}, name)))),
      html("tbody", {}, rows(first),
           latest.length ? html("tr", {class: "gap"}, html("td", {colspan: 4}, "…")) : null,
           rows(latest))));
}

export function render({ model, el }) {
  let selected = null;          // the engine whose tasks are highlighted
  let opened = null;            // the failure whose details are shown
  const tracebacks = new Map(); // task -> traceback text, as the kernel sent it

  const root = html("div", {class: "ppnb-dash"});
  const fillBar = html("div", {class: "ppnb-fill"});
  const bar = html("div", {class: "ppnb-bar", role: "progressbar", "aria-valuemin": 0}, fillBar);
  const percent = html("span", {class: "ppnb-pct"});
  const cancel = html("button", {class: "ppnb-cancel", type: "button",
                                 title: "cancel the run: finished results are kept",
                                 onclick: () => model.send({kind: "cancel"})}, "Cancel");
  const line = html("div", {class: "ppnb-line"});
  const engines = html("div");
  const charts = html("div", {class: "ppnb-charts"});
  const failures = html("div", {class: "ppnb-failures"});
  const preview = html("div");
  const tip = html("div", {class: "ppnb-tip", hidden: true});
  root.append(html("div", {class: "ppnb-head"}, bar, percent, cancel), line, engines, charts,
              failures, preview, tip);
  el.append(root);

  const pick = engine => { selected = selected === engine ? null : engine; draw(); };
  const open = task => {
    opened = opened === task ? null : task;
    if (opened !== null && !tracebacks.has(task)) model.send({kind: "traceback", task});
    drawFailures();
  };

  function drawHead() {
    const p = model.get("progress") || {};
    const share = p.total ? p.completed / p.total : 0;
    fillBar.style.width = `${(100 * share).toFixed(1)}%`;
    fillBar.className = `ppnb-fill${p.failed ? " some-failed" : ""}`;
    bar.setAttribute("aria-valuemax", p.total || 0);
    bar.setAttribute("aria-valuenow", p.completed || 0);
    percent.textContent = `${Math.floor(100 * share)}%`;
    line.textContent = p.line || "";
    const cancelling = model.get("cancelling");
    cancel.disabled = Boolean(p.done || cancelling);
    cancel.textContent = cancelling ? "Cancelling…" : "Cancel";
  }

  function drawFailures() {
    const rows = model.get("failures") || [];
    const more = model.get("failures_more") || 0;
    failures.replaceChildren();
    if (!rows.length) return;
    const total = rows.length + more;
    failures.append(html("div", {class: "ppnb-caption"},
      `${plural(total, "failed task")} (click one for its traceback)`));
    const list = html("ul");
    for (const [task, item, status, error] of rows) {
      list.append(html("li", {class: task === opened ? "open" : null, "data-task": task,
                              onclick: () => open(task)},
                       html("span", {class: "dot s-failed"}), `task ${task} · ${item} · `,
                       html("code", {}, error || status)));
      if (task === opened) {
        const text = tracebacks.get(task);
        list.append(html("li", {class: "ppnb-detail"},
          html("div", {}, html("b", {}, error || status)),
          html("pre", {}, text === undefined ? "loading the traceback…" : text)));
      }
    }
    failures.append(list);
    if (more) failures.append(html("div", {}, `${more} more: run.errors() has every failure`));
  }

  function draw() {
    drawHead();
    engines.replaceChildren(drawEngines(model.get("engines") || [], selected, pick));
    charts.replaceChildren(
      html("div", {}, html("div", {class: "ppnb-caption"}, "Timeline, one lane per engine: ",
        FAMILIES.concat(["running"]).map(f => [html("span", {class: `dot s-${f}`}), `${f} `])),
        drawTimeline(model.get("timeline") || {}, selected)),
      html("div", {}, html("div", {class: "ppnb-caption"}, "Task durations"),
           drawHistogram(model.get("histogram") || {})));
    drawFailures();
    preview.replaceChildren(drawPreview(model.get("preview") || {}) || "");
  }

  const showTip = event => {
    const target = event.target.closest ? event.target.closest("[data-tip]") : null;
    if (!target || !root.contains(target)) { tip.hidden = true; return; }
    const box = root.getBoundingClientRect();
    tip.textContent = target.getAttribute("data-tip");
    tip.style.left = `${event.clientX - box.left + 12}px`;
    tip.style.top = `${event.clientY - box.top + 12}px`;
    tip.hidden = false;
  };
  root.addEventListener("mousemove", showTip);
  root.addEventListener("mouseleave", () => { tip.hidden = true; });

  const onMessage = message => {
    if (message && message.kind === "traceback") {
      tracebacks.set(message.task, message.text);
      drawFailures();
    }
  };
  model.on("msg:custom", onMessage);
  model.on("change", draw);  // once per kernel message, however many traits it changed
  draw();
  return () => {
    model.off("msg:custom", onMessage);
    model.off("change", draw);
  };
}

export default { render };
