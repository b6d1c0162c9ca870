// shrewd-tf retrieval page: pick a database image or upload one, POST it to
// /v1/search and show the neighbours. Plain JS, no build step.
// `?query=<id>` searches with database item <id> on load (used by tests).
// With a class-distance matrix on the server (`--class-distances`), each
// result is coloured by its class similarity to the query's class.
// document.body.dataset.state: "searching", then "results" or "error".
"use strict";

const $ = (id) => document.getElementById(id);

// {num_classes, class_names} of the server's class-distance matrix, or null.
let classes = null;
// The last search's arguments, rerun when the query class is changed.
let lastQuery = null;

// Viridis stops: similarity 0 (unrelated class) .. 1 (same class). A
// sequential, colour-blind-safe scale, so the hierarchy's levels read as
// steps and not only as same-class / other-class.
const SCALE = [
  [0.0, [68, 1, 84]],
  [0.25, [59, 82, 139]],
  [0.5, [33, 145, 140]],
  [0.75, [94, 201, 98]],
  [1.0, [253, 231, 37]],
];

// The least similarity between two classes of the matrix: the scale spans
// [low, 1], so a matrix whose similarities lie in [0.56, 1] (Fashion-MNIST,
// WUP) uses all of it.
function scaleLow() {
  const low = classes ? classes.min_similarity : 0;
  return typeof low === "number" && low >= 0 && low < 1 ? low : 0;
}

// "rgb(r, g, b)" of a similarity (linear between the stops over
// [scaleLow(), 1]).
function similarityColour(similarity) {
  const low = scaleLow();
  const s = Math.min(1, Math.max(0, (similarity - low) / (1 - low)));
  for (let i = 1; i < SCALE.length; i++) {
    const [s1, c1] = SCALE[i];
    if (s <= s1) {
      const [s0, c0] = SCALE[i - 1];
      const t = (s - s0) / (s1 - s0);
      const c = c0.map((v, j) => Math.round(v + t * (c1[j] - v)));
      return "rgb(" + c.join(", ") + ")";
    }
  }
  return "rgb(" + SCALE[SCALE.length - 1][1].join(", ") + ")";
}

// "exact", or "approximate (recall@k 0.993)" when the server measured the
// index's recall against exact search, else "approximate".
function exactnessText(answer) {
  if (answer.exact) return "exact";
  if (typeof answer.recall === "number") {
    return "approximate (recall@k " + answer.recall.toFixed(3) + ")";
  }
  return "approximate";
}

function className(label) {
  const names = classes && classes.class_names;
  if (names && label >= 0 && label < names.length) {
    return names[label] + " (" + label + ")";
  }
  return "class " + label;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "muted";
}

// "Pullover (2)" with a label_name column or the class-distance matrix's
// class names, else "label 2".
function describe(metadata) {
  if (!metadata || metadata.label === undefined || metadata.label === null) return "";
  if (metadata.label_name) return metadata.label_name + " (" + metadata.label + ")";
  if (classes && classes.class_names) return className(metadata.label);
  return "label " + metadata.label;
}

function card(item, extra) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.id = String(item.id);
  if (item.image_url) {
    const img = document.createElement("img");
    img.src = item.image_url;
    img.alt = "item " + item.id;
    div.appendChild(img);
  } else {
    const empty = document.createElement("div");
    empty.className = "noimage";
    empty.textContent = "no image";
    div.appendChild(empty);
  }
  const id = document.createElement("div");
  id.textContent = "id " + item.id;
  div.appendChild(id);
  const label = document.createElement("div");
  label.className = "label";
  label.textContent = describe(item.metadata);
  div.appendChild(label);
  if (item.metadata && item.metadata.caption) {
    const caption = document.createElement("div");
    caption.className = "caption";
    caption.textContent = item.metadata.caption;
    caption.title = item.metadata.caption;
    div.appendChild(caption);
  }
  if (extra) {
    const more = document.createElement("div");
    more.className = "distance";
    more.textContent = extra;
    div.appendChild(more);
  }
  return div;
}

// A result card, coloured by its class similarity when the answer has one.
function resultCard(hit, answer) {
  const div = card(hit, answer.distance + " " + hit.distance);
  div.classList.add("result");
  if (typeof hit.similarity === "number") {
    const colour = similarityColour(hit.similarity);
    div.dataset.similarity = String(hit.similarity);
    div.style.borderColor = colour;
    div.style.setProperty("--similarity-colour", colour);
    const line = document.createElement("div");
    line.className = "similarity";
    line.textContent = "similarity " + hit.similarity.toFixed(2);
    div.appendChild(line);
  } else if (answer.query_label !== undefined) {
    div.classList.add("unlabelled");  // no label: no similarity
  }
  return div;
}

function showQueryInfo(answer, ms) {
  $("query-mode").textContent = answer.mode + " mode (" + answer.distance + ")";
  $("query-exact").textContent = exactnessText(answer);
  $("query-time").textContent = ms.toFixed(1) + " ms";
  $("query-model").textContent = answer.model === null ? "none" :
    answer.model + (answer.model_version ? " v" + answer.model_version : "");
  if (answer.query_label !== undefined) {
    $("query-class").textContent = "· query class " + className(answer.query_label);
  } else if (classes) {
    $("query-class").textContent =
      "· query class unknown (the model has no logits): choose a query class";
  } else {
    $("query-class").textContent = "";
  }
  $("query-info").hidden = false;
  $("legend").hidden = answer.query_label === undefined;
}

async function fetchJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function bytesToBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

// Searches with image bytes. The query's class, sent when the server has
// class distances: the one chosen under "Query class", else `label` (a
// database item's), else none (the server predicts it from the logits).
async function search(imageBuffer, queryUrl, label) {
  lastQuery = [imageBuffer, queryUrl, label];
  const query = $("query");
  query.replaceChildren();
  if (queryUrl) {
    const img = document.createElement("img");
    img.src = queryUrl;
    img.alt = "query";
    query.appendChild(img);
  }
  const body = {
    image: { b64: bytesToBase64(imageBuffer) },
    k: parseInt($("k").value, 10) || 12,
  };
  if ($("mode").value) body.mode = $("mode").value;
  if ($("model").value.trim()) body.model = $("model").value.trim();
  const chosen = $("query-label").value;
  if (classes && chosen !== "") body.label = parseInt(chosen, 10);
  else if (
    classes && Number.isInteger(label) && label >= 0 &&
    label < classes.num_classes
  ) body.label = label;  // Unlabelled (-1) or unknown classes: no label.
  document.body.dataset.state = "searching";
  setStatus("Searching…");
  $("results").replaceChildren();
  $("query-info").hidden = true;
  $("legend").hidden = true;
  try {
    const started = performance.now();
    const answer = await fetchJson("/v1/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const ms = performance.now() - started;
    for (const hit of answer.results) {
      $("results").appendChild(resultCard(hit, answer));
    }
    setStatus(answer.results.length + " results", false);
    showQueryInfo(answer, ms);
    document.body.dataset.state = "results";
  } catch (error) {
    setStatus("Search failed: " + error.message, true);
    document.body.dataset.state = "error";
  }
}

async function searchDatabaseItem(item) {
  try {
    const response = await fetch(item.image_url);
    if (!response.ok) throw new Error("image " + item.id + ": HTTP " + response.status);
    const label = item.metadata ? item.metadata.label : undefined;
    await search(await response.arrayBuffer(), item.image_url, label);
  } catch (error) {
    setStatus("Search failed: " + error.message, true);
    document.body.dataset.state = "error";
  }
}

async function loadDatabase() {
  let page;
  try {
    page = await fetchJson("/v1/database?limit=24");
  } catch (error) {
    $("index-info").textContent = "No database: " + error.message;
    $("index-info").className = "error";
    return;
  }
  classes = page.classes || null;
  if (classes) {
    for (let c = 0; c < classes.num_classes; c++) {
      const option = document.createElement("option");
      option.value = String(c);
      option.textContent = className(c);
      $("query-label").appendChild(option);
    }
    $("query-label-control").hidden = false;
  }
  $("legend-bar").style.background = "linear-gradient(to right, " +
    SCALE.map(([, c]) => "rgb(" + c.join(", ") + ")").join(", ") + ")";
  $("legend-low").textContent = scaleLow().toFixed(2) + " least related";
  const modes = Object.keys(page.indexes);
  for (const mode of modes) {
    const option = document.createElement("option");
    option.value = mode;
    option.textContent = mode + " (" + page.indexes[mode].distance + ")";
    $("mode").appendChild(option);
  }
  $("index-info").textContent = page.count + " database items; indexes: " +
    modes.map((m) => m + " " + page.indexes[m].code_bits + "-bit " +
      page.indexes[m].index_type).join(", ");
  const gallery = $("gallery");
  for (const item of page.items) {
    const div = card(item);
    if (item.image_url) {
      div.classList.add("pickable");
      div.addEventListener("click", () => searchDatabaseItem(item));
    }
    gallery.appendChild(div);
  }
  const wanted = new URLSearchParams(window.location.search).get("query");
  if (wanted !== null) {
    // Items beyond the first page are fetched by id from /v1/images/.
    let item = page.items.find((it) => String(it.id) === wanted);
    if (!item) {
      const url = "/v1/images/" + encodeURIComponent(wanted);
      const probe = await fetch(url, { method: "HEAD" });
      if (probe.ok) item = { id: wanted, image_url: url };
    }
    if (item && item.image_url) {
      await searchDatabaseItem(item);
    } else {
      setStatus("No database image with id " + wanted, true);
    }
  }
}

$("query-label").addEventListener("change", () => {
  if (lastQuery) search(...lastQuery);
});

$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  await search(await file.arrayBuffer(), URL.createObjectURL(file));
});

loadDatabase();
