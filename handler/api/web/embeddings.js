// The embeddings tab: embed a few texts and show how alike each pair is (cosine similarity).

import { postJson } from "./api.js";

function cosine(a, b) {
  let dot = 0;
  let normA = 0;
  let normB = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    normA += a[i] * a[i];
    normB += b[i] * b[i];
  }
  return dot / (Math.sqrt(normA * normB) || 1);
}

function short(text) {
  return text.length > 32 ? `${text.slice(0, 31)}…` : text;
}

export function similarityTable(table, texts, vectors) {
  const head = document.createElement("tr");
  head.append(document.createElement("th"));
  for (const [index, text] of texts.entries()) {
    const cell = document.createElement("th");
    cell.textContent = `${index + 1}`;
    cell.title = text;
    head.append(cell);
  }
  const rows = texts.map((text, row) => {
    const line = document.createElement("tr");
    const label = document.createElement("th");
    label.textContent = `${row + 1}. ${short(text)}`;
    label.title = text;
    line.append(label);
    for (let column = 0; column < texts.length; column += 1) {
      const cell = document.createElement("td");
      const similarity = cosine(vectors[row], vectors[column]);
      cell.textContent = similarity.toFixed(3);
      cell.className = "similarity";
      cell.dataset.level = String(Math.max(0, Math.min(4, Math.floor(similarity * 5))));
      line.append(cell);
    }
    return line;
  });
  table.replaceChildren(head, ...rows);
  table.hidden = false;
}

export function embeddingsBody(ui) {
  const texts = ui.texts.value.split("\n").map((text) => text.trim()).filter(Boolean);
  return { model: ui.model.value, input: texts };
}

export async function compare(ui) {
  const body = embeddingsBody(ui);
  if (!body.input.length) throw new Error("Write at least one text.");
  const started = performance.now();
  const result = await postJson("/v1/embeddings", body);
  const vectors = result.data.sort((a, b) => a.index - b.index).map((item) => item.embedding);
  similarityTable(ui.table, body.input, vectors);
  const seconds = (performance.now() - started) / 1000;
  ui.stats.textContent = `${vectors.length} texts, ${vectors[0].length} dimensions, ` +
    `${result.usage.prompt_tokens} tokens in ${seconds.toFixed(2)} s`;
}
