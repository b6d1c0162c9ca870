// shrewd-tf retrieval page: pick a database image or upload one, POST it to
// /v1/search and show the neighbours. Plain JS, no build step.
// `?query=<id>` searches with database item <id> on load (used by tests).
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "muted";
}

// "Pullover (2)" with a label_name column, else "label 2".
function describe(metadata) {
  if (!metadata || metadata.label === undefined) return "";
  if (metadata.label_name) return metadata.label_name + " (" + metadata.label + ")";
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

async function search(imageBuffer, queryUrl) {
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
  setStatus("Searching…");
  $("results").replaceChildren();
  try {
    const started = performance.now();
    const answer = await fetchJson("/v1/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const ms = Math.round(performance.now() - started);
    for (const hit of answer.results) {
      $("results").appendChild(card(hit, answer.distance + " " + hit.distance));
    }
    setStatus(
      answer.results.length + " results, " + answer.mode + " mode (" +
      answer.distance + (answer.exact ? ", exact" : ", approximate") + "), model " +
      answer.model + (answer.model_version ? " v" + answer.model_version : "") +
      ", " + ms + " ms", false);
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
    await search(await response.arrayBuffer(), item.image_url);
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

$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  await search(await file.arrayBuffer(), URL.createObjectURL(file));
});

loadDatabase();
