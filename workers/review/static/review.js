/* inspector review: the queue's live refresh, the part view's layer keys and the brush. No framework. */
"use strict";

function isoFromNs(ns) {
  const ms = Number(BigInt(ns) / 1000000n);
  return ms > 0 ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "";
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function queueRow(e) {
  const tr = document.createElement("tr");
  tr.className = e.decision ? "decided" : "open";
  tr.dataset.url = e.url;
  const link = document.createElement("a");
  link.href = e.url;
  link.textContent = String(e.seq);
  const seq = document.createElement("td");
  seq.appendChild(link);
  const verdict = document.createElement("td");
  const badge = document.createElement("span");
  badge.className = "verdict verdict-" + e.verdict;
  badge.textContent = e.verdict;
  verdict.appendChild(badge);
  const model = cell(e.model_name + " ");
  const sha = document.createElement("code");
  sha.textContent = (e.model_sha256 || "").slice(0, 12);
  model.appendChild(sha);
  const decided = e.decision
    ? e.decision.replace("_", " ") + " → " + e.decided_verdict + " by " + e.decided_by
    : "—";
  tr.append(cell(isoFromNs(e.capture_ts_ns), "ts"), cell(e.camera_id), seq, cell(e.part_id || ""), verdict,
            cell(String(e.cracks)), model,
            cell(e.source + (e.shadow_verdict ? ": shadow says " + e.shadow_verdict : "")), cell(decided));
  return tr;
}

function startQueue() {
  const body = document.getElementById("queue-body");
  const backlog = document.getElementById("backlog");
  document.querySelectorAll("td.ts").forEach((td) => { td.textContent = isoFromNs(td.dataset.ns); });
  body.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-url]");
    if (row && event.target.tagName !== "A") window.location.href = row.dataset.url;
  });
  let last = null;
  async function refresh() {
    try {
      const answer = await fetch("/api/queue", { headers: { Accept: "application/json" }, cache: "no-store" });
      if (answer.status === 401) { window.location.href = "/signin?next=/"; return; }
      if (!answer.ok) return;
      const text = await answer.text();
      if (text === last) return; /* unchanged: keep the rows (and what the pointer is on) as they are */
      last = text;
      const data = JSON.parse(text);
      backlog.textContent = String(data.backlog);
      const rows = data.entries.map(queueRow);
      if (!rows.length) {
        const tr = document.createElement("tr");
        tr.className = "empty";
        const td = cell("Nothing to review.");
        td.colSpan = 9;
        tr.appendChild(td);
        rows.push(tr);
      }
      body.replaceChildren(...rows);
    } catch (err) {
      /* the station restarted or the network blinked: try again at the next tick */
    }
  }
  setInterval(refresh, 2000);
}

function startPart() {
  const stage = document.getElementById("stage");
  if (!stage) return;
  const state = document.getElementById("layer-state");
  const layers = Array.from(stage.querySelectorAll("[data-key]"));
  function describe() {
    state.textContent = "Showing: " + layers.filter((l) => !l.classList.contains("off")).map((l) => l.id.replace("layer-", "")).join(", ");
  }
  const canvas = document.getElementById("brush");
  const strokesField = document.getElementById("strokes");
  const widthField = document.getElementById("brush-width");
  const count = document.getElementById("stroke-count");
  const strokes = [];
  let current = null;

  function draw() {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = "rgba(255, 64, 160, 0.85)";
    ctx.fillStyle = "rgba(255, 64, 160, 0.85)";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const s of current ? strokes.concat([current]) : strokes) {
      ctx.lineWidth = s.width_px;
      ctx.beginPath();
      s.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      if (s.points.length === 1) {
        ctx.arc(s.points[0][0], s.points[0][1], s.width_px / 2, 0, 2 * Math.PI);
        ctx.fill();
      } else {
        ctx.stroke();
      }
    }
    if (strokesField) strokesField.value = JSON.stringify(strokes);
    if (count) count.textContent = strokes.length + (strokes.length === 1 ? " stroke" : " strokes");
  }
  function pixel(event) {
    const box = canvas.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * canvas.width;
    const y = ((event.clientY - box.top) / box.height) * canvas.height;
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }
  if (canvas && strokesField) {
    canvas.addEventListener("pointerdown", (event) => {
      if (!stage.classList.contains("brushing")) return;
      canvas.setPointerCapture(event.pointerId);
      current = { points: [pixel(event)], width_px: Math.max(1, Number(widthField.value) || 6) };
      draw();
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!current) return;
      const p = pixel(event);
      const last = current.points[current.points.length - 1];
      if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= 1.5 && current.points.length < 4000) current.points.push(p);
      draw();
    });
    const finish = () => { if (current) { strokes.push(current); current = null; draw(); } };
    canvas.addEventListener("pointerup", finish);
    canvas.addEventListener("pointercancel", finish);
    document.getElementById("clear-strokes").addEventListener("click", () => { strokes.length = 0; draw(); });
  }
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.toLowerCase();
    const layer = layers.find((l) => l.dataset.key === key);
    if (layer) {
      layer.classList.toggle("off");
      describe();
    } else if (key === "b" && strokesField) {
      stage.classList.toggle("brushing");
      state.textContent = stage.classList.contains("brushing") ? "Brush on: draw missed cracks (b to stop)" : "";
      if (!stage.classList.contains("brushing")) describe();
    }
  });
  describe();
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "queue") startQueue();
  if (page === "part") startPart();
});
