// The model list: the Models tab's table and the two pickers (chat models, embedding models), refreshed.

import { getJson } from "./api.js";

const STATE_TEXT = {
  remote: "in the bucket (synced on first use)",
  downloading: "downloading to the volume",
  on_volume: "on the volume, not loaded",
  loading: "loading",
  loaded: "loaded",
  failed: "failed to sync or load",
};

export const stateText = (card) => STATE_TEXT[card.state] || card.state;

function megabytes(bytes) {
  return bytes ? `${(bytes / 1e6).toFixed(0)} MB` : "";
}

function fillPicker(select, cards) {
  const chosen = select.value;
  const names = cards.map((card) => card.id);
  if (names.join("\n") === [...select.options].map((option) => option.value).join("\n")) return;
  select.replaceChildren(...cards.map((card) => new Option(card.id, card.id)));
  if (names.includes(chosen)) select.value = chosen;
}

function fillTable(tbody, cards) {
  tbody.replaceChildren(...cards.map((card) => {
    const row = document.createElement("tr");
    row.dataset.model = card.id;
    for (const text of [card.id, card.kind, stateText(card), megabytes(card.size)]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }));
}

export class ModelList {
  constructor({ chatPicker, embedPicker, table, onChange }) {
    Object.assign(this, { chatPicker, embedPicker, table, onChange });
    this.cards = [];
  }

  async refresh() {
    const { data } = await getJson("/v1/models");
    this.cards = data;
    fillPicker(this.chatPicker, data.filter((card) => card.kind === "chat"));
    fillPicker(this.embedPicker, data.filter((card) => card.kind === "embedding"));
    fillTable(this.table.tBodies[0], data);
    this.onChange();
  }

  card(name) {
    return this.cards.find((card) => card.id === name);
  }
}
