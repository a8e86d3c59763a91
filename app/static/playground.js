// The playground: plain JavaScript over the public API, no build step and no CDN.
// Every call goes through api(), so a 4xx/5xx JSON error always reaches the user.
"use strict";

const $ = (id) => document.getElementById(id);
const LM_KINDS = ["char-lm", "word-lm", "byte-lm", "ngram", "mixture"];

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

// An Error carrying the service's {"error": {message, param, code}} text.
async function apiError(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const error = (await response.json()).error;
    message = `${response.status}: ${error.message}` + (error.param ? ` (field: ${error.param})` : "");
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) $("key-box").hidden = false;
  return new Error(message);
}

// GET without a body; POST a body object as JSON.
async function api(path, body, init = {}) {
  const response = await fetch(path, body === undefined
    ? { headers: headers(false), ...init }
    : { method: "POST", headers: headers(), body: JSON.stringify(body), ...init });
  if (!response.ok) throw await apiError(response);
  return response;
}

// Runs a form's action with its button disabled; any failure is shown in `errorId`.
function bind(formId, errorId, action) {
  const form = $(formId);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    $(errorId).textContent = "";
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      if (error.name !== "AbortError") $(errorId).textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });
}

// A number when the box holds one; the raw text otherwise, so the server's 422 names it.
function num(id) {
  const text = $(id).value.trim();
  return text !== "" && Number.isFinite(Number(text)) ? Number(text) : text;
}

function list(id) {
  return $(id).value.split(",").map((s) => s.trim()).filter(Boolean)
    .map((s) => (Number.isFinite(Number(s)) ? Number(s) : s));
}

async function loadModels() {
  $("models-error").textContent = "";
  const select = $("model");
  select.replaceChildren();
  try {
    const cards = (await (await api("/v1/models")).json()).data;
    const boxes = $("cmp-models");
    boxes.replaceChildren();
    for (const card of cards.filter((c) => LM_KINDS.includes(c.kind))) {
      const ppl = card.val_perplexity ? `, val ppl ${card.val_perplexity.toFixed(2)}` : "";
      const what = card.architecture || (card.order ? `${card.smoothing} ${card.order}-gram` : card.kind);
      const option = new Option(`${card.id} (${what}${ppl})`, card.id);
      option.selected = card.default;
      select.add(option);
      const box = document.createElement("label");
      box.innerHTML = `<input type="checkbox" value="${escape(card.id)}"> ${escape(card.id)}`;
      box.firstChild.checked = boxes.children.length < 2;
      boxes.append(box);
    }
    if (!select.options.length) $("models-error").textContent = "no language model is loaded";
  } catch (error) {
    $("models-error").textContent = error.message;
  }
  await showTraining();
}

// The named corpora (every *.txt in the service's data dir, and the book) for the n-grams.
async function loadCorpora() {
  const select = $("ng-corpus");
  const chosen = select.value || "timemachine";
  try {
    const corpora = (await (await api("/v1/corpora")).json()).data;
    select.replaceChildren();
    for (const c of corpora) {
      const size = c.size === null ? "not fetched yet" : `${(c.size / 1024).toFixed(0)} KiB`;
      const option = new Option(`${c.name} (${size})`, c.name);
      option.selected = c.name === chosen;
      select.add(option);
    }
  } catch (error) {
    $("ng-error").textContent = error.message;
  }
}

// Server-sent events from a fetch body, parsed as they arrive: one JSON object per event.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended early (server time limit or disconnect)");
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, cut).split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      buffer = buffer.slice(cut + 2);
      if (data === "[DONE]") return;
      if (!data) continue;
      yield JSON.parse(data);
    }
  }
}

let generation = null; // the AbortController of the running generation
const DIST_TOP = 30; // alternatives asked per token: a character model's whole vocabulary
let tokens = []; // the generated tokens' logprobs ({token, id, logprob, top}), by span index

async function generate() {
  const body = {
    model: $("model").value || null,
    prefix: $("prefix").value,
    temperature: num("temperature"),
    top_k: num("top-k"),
    top_p: num("top-p"),
    max_new_tokens: num("max-new-tokens"),
    repetition_penalty: num("repetition-penalty"),
    penalty_window: num("penalty-window"),
    no_repeat_ngram_size: num("no-repeat-ngram-size"),
    stream: true,
  };
  if ($("min-p").value.trim() !== "") body.min_p = num("min-p");
  if ($("show-logprobs").checked) body.logprobs = DIST_TOP;
  // Seeds are at most 2^53 - 1, so a JSON number carries them exactly both ways; a larger
  // typed seed rounds to 2^53 or more, which the server refuses with a 422 naming it.
  if ($("seed").value.trim() !== "") body.seed = num("seed");
  for (const id of ["gen-prefix", "gen-text", "gen-usage"]) $(id).textContent = "";
  $("reuse-seed").hidden = true;
  $("gen-finish").textContent = "…";
  $("dist").hidden = true;
  tokens = [];
  generation = new AbortController();
  $("stop").disabled = false;
  try {
    const response = await api("/v1/generate", body, { signal: generation.signal });
    for await (const event of sseEvents(response)) {
      if (event.prefix !== undefined) {
        $("gen-prefix").textContent = event.prefix;
        $("gen-usage").textContent = `seed ${event.seed}`;
        $("reuse-seed").dataset.seed = String(event.seed);
        $("reuse-seed").hidden = false;
      } else if (event.usage) {
        const u = event.usage;
        $("gen-usage").textContent += ` · ${u.prompt_tokens} prompt + ${u.completion_tokens}` +
          ` generated = ${u.total_tokens} tokens`;
      } else {
        appendText(event);
        if (event.finish_reason) $("gen-finish").textContent = event.finish_reason;
      }
    }
  } catch (error) {
    $("gen-finish").textContent = error.name === "AbortError" ? "stopped" : "error";
    throw error;
  } finally {
    $("stop").disabled = true;
    generation = null;
  }
}

// An event's text: one span per token when its logprobs spell the text exactly, so that
// hovering or clicking a character shows the distribution it was drawn from.
function appendText(event) {
  const out = $("gen-text");
  const logprobs = event.logprobs || [];
  if (!logprobs.length || logprobs.map((t) => t.token).join("") !== event.text) {
    out.append(event.text);
    return;
  }
  for (const t of logprobs) {
    const span = document.createElement("span");
    span.className = "tok";
    span.dataset.i = tokens.length;
    span.textContent = t.token;
    out.append(span);
    tokens.push(t);
  }
}

const shown = (text) => text.replace(/ /g, "␣");

// The distribution at one generated token, as horizontal bars (probability = exp(logprob)).
function showDistribution(span, pin) {
  const t = tokens[Number(span.dataset.i)];
  if (!t) return;
  if (pin) {
    for (const other of document.querySelectorAll("#gen-text .tok.pinned")) other.classList.remove("pinned");
    span.classList.add("pinned");
  }
  $("dist-title").textContent = `token ${Number(span.dataset.i) + 1}: "${shown(t.token)}", ` +
    `p = ${Math.exp(t.logprob).toFixed(3)} (log p = ${t.logprob.toFixed(3)}); ` +
    `the ${t.top.length} likeliest tokens:`;
  const best = Math.exp(t.top.length ? t.top[0].logprob : t.logprob);
  $("dist-bars").replaceChildren(...t.top.map((a) => {
    const row = document.createElement("div");
    row.className = a.id === t.id ? "bar chosen" : "bar";
    row.setAttribute("role", "listitem");
    const p = Math.exp(a.logprob);
    row.innerHTML = `<b></b><i style="width:${(100 * p / best).toFixed(1)}%"></i>` +
      `<span>${(100 * p).toFixed(1)}%</span>`;
    row.querySelector("b").textContent = shown(a.token);
    return row;
  }));
  $("dist").hidden = false;
}

async function score() {
  const body = { model: $("model").value || null, text: $("ppl-text").value };
  for (const id of ["ppl-value", "ppl-bits", "ppl-tokens"]) $(id).textContent = "…";
  try {
    const result = await (await api("/v1/perplexity", body)).json();
    if (result.infinite) {
      const zero = result.zero_probability;
      $("ppl-value").textContent = `infinite: ${JSON.stringify(zero.token)} has probability 0 (${zero.reason})`;
      $("ppl-bits").textContent = "infinite";
    } else {
      $("ppl-value").textContent = result.perplexity.toFixed(3);
      $("ppl-bits").textContent = result.bits_per_token.toFixed(3);
    }
    $("ppl-tokens").textContent = `${result.tokens_scored}` +
      (result.unknown_tokens ? ` (${result.unknown_tokens} unknown)` : "");
  } catch (error) {
    for (const id of ["ppl-value", "ppl-bits", "ppl-tokens"]) $(id).textContent = "-";
    throw error;
  }
}

// Images come through fetch (not <img src>) so that the bearer key is sent with them.
async function showImage(imgId, path, body) {
  const blob = await (await api(path, body)).blob();
  const img = $(imgId);
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
}

function table(t) {
  const rows = t.entries.map((e) =>
    `<tr><td>${escape(e.tokens.join(" "))}</td><td>${e.count}</td><td>${e.frequency.toFixed(4)}</td></tr>`);
  return `<table><caption>n = ${t.n} (${t.unique} distinct of ${t.total})</caption>` +
    `<tr><th>n-gram</th><th>count</th><th>freq</th></tr>${rows.join("")}</table>`;
}

function escape(text) {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

async function countNgrams() {
  const source = document.querySelector("input[name=ng-source]:checked").value;
  const body = { level: $("ng-level").value, n: list("ng-n"), top_k: num("ng-top-k") };
  if (source === "corpus") body.corpus = $("ng-corpus").value;
  else body.text = $("ng-text").value;
  const result = await (await api("/v1/ngrams", body)).json();
  const zipf = result.zipf ? ` · Zipf exponent ${result.zipf.exponent.toFixed(3)}` +
    ` (R² ${result.zipf.r2.toFixed(3)})` : "";
  $("ng-summary").textContent = `${result.tokens} ${result.level} tokens of ${result.source}${zipf}`;
  $("ng-tables").innerHTML = result.tables.map(table).join("");
  await showImage("ng-plot", "/v1/ngrams/plot", { ...body, format: "png", width: 560, height: 420 });
}

// Light (expected) to dark (surprised) over 0-12 bits; black for probability 0.
function surprisalColour(bits) {
  if (bits === null) return "background:#000;color:#fff";
  const t = Math.min(bits / 12, 1);
  return `background:hsl(${60 - 60 * t},90%,${92 - 52 * t}%)`;
}

async function compareModels() {
  const models = [...$("cmp-models").querySelectorAll("input:checked")].map((b) => b.value);
  const body = { models, text: $("cmp-text").value };
  const result = await (await api("/v1/compare", body)).json();
  $("cmp-rows").innerHTML = result.models.map((m) => {
    const cells = result.tokens.map((t, i) => {
      const bits = m.surprisal[i];
      const tip = bits === null ? "probability 0" : `${bits.toFixed(2)} bits`;
      return `<span style="${surprisalColour(bits)}" title="${tip}">${escape(t)}</span>`;
    }).join("");
    const ppl = m.perplexity === null ? "infinite" : m.perplexity.toFixed(3);
    return `<p class="surprisal"><b>${escape(m.model)}</b> (perplexity ${ppl})<br>${cells}</p>`;
  }).join("");
  await showImage("cmp-plot", "/v1/compare/plot", { ...body, format: "png", width: 1000, height: 100 + 60 * models.length });
}

// The selected model's history (GET /v1/models/{id}/training) and its curves.
async function showTraining() {
  const id = $("model").value;
  for (const el of ["tr-summary", "tr-samples", "tr-error"]) $(el).textContent = "";
  const img = $("tr-curves");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.removeAttribute("src");
  if (!id) return;
  try {
    const path = `/v1/models/${encodeURIComponent(id)}`;
    const report = await (await api(`${path}/training`)).json();
    const s = report.settings;
    const last = report.epochs[report.epochs.length - 1];
    const best = report.epochs.find((e) => e.epoch === report.best_epoch) || last;
    const fixed = (v, d = 3) => (v === null || v === undefined ? "-" : v.toFixed(d));
    $("tr-summary").textContent = `${report.epochs.length} epochs of ${s.arch || "?"}` +
      ` (${s.optimizer || "?"}, lr ${s.lr ?? "?"}, clip ${s.clip ?? "-"}, ${s.sampling || "?"} sampling)` +
      ` · weights of epoch ${best.epoch}: train ppl ${fixed(best.train_ppl)},` +
      ` held-out ppl ${fixed(best.val_ppl)} · last epoch ${fixed(last.tokens_per_s, 0)} tokens/s`;
    if (report.samples) $("tr-samples").textContent = Object.values(report.samples).join("\n");
    await showImage("tr-curves", `${path}/curves?format=png&width=560`);
  } catch (error) {
    $("tr-error").textContent = error.message;
  }
}

async function plotForecast() {
  const body = { figure: $("fc-figure").value, k_steps: list("fc-k_steps"), format: "png" };
  for (const f of ["T", "tau", "num_train", "noise", "epochs", "seed"]) body[f] = num(`fc-${f}`);
  await showImage("fc-plot", "/v1/forecast/plot", body);
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.auth === "bearer") $("key-box").hidden = false;
  $("api-key").addEventListener("change", loadModels);
  $("model").addEventListener("change", showTraining);
  $("api-key").addEventListener("change", loadCorpora);
  $("stop").addEventListener("click", () => generation && generation.abort());
  for (const [type, pin] of [["mouseover", false], ["click", true]]) {
    $("gen-text").addEventListener(type, (event) => {
      const span = event.target.closest(".tok");
      const pinned = document.querySelector("#gen-text .tok.pinned");
      if (span && (pin || !pinned)) showDistribution(span, pin);
    });
  }
  // The seed a generation used (a random one included) goes back into the box, so the
  // next run reproduces it.
  $("reuse-seed").addEventListener("click", () => { $("seed").value = $("reuse-seed").dataset.seed; });
  bind("generate-form", "gen-error", generate);
  bind("perplexity-form", "ppl-error", score);
  bind("compare-form", "cmp-error", compareModels);
  bind("ngrams-form", "ng-error", countNgrams);
  bind("forecast-form", "fc-error", plotForecast);
  loadModels();
  loadCorpora();
});
