// Wires the page: tabs, the API key form, the model list, the chat and embeddings tabs, copy buttons.

import { ApiError, apiKey } from "./api.js";
import { Chat } from "./chat.js";
import { compare, embeddingsBody } from "./embeddings.js";
import { ModelList, stateText } from "./models.js";
import { curlSnippet, pythonSnippet } from "./snippets.js";

const MODEL_REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function handle(error) {
  showError(error.message);
  if (error instanceof ApiError && error.status === 401) askForKey();
}

function askForKey() {
  $("key-panel").hidden = false;
  $("api-key").focus();
}

function selectTab(tab) {
  for (const button of document.querySelectorAll("[role=tab]")) {
    const selected = button === tab;
    button.setAttribute("aria-selected", String(selected));
    $(button.getAttribute("aria-controls")).hidden = !selected;
  }
}

// Time to first output, tokens/s, usage and cold-start timings of the last reply. Tokens/s is measured
// between the first and last output chunk when the reply streamed token by token; output that came in one
// piece (a tool call is sent once it is whole) only has the request's total time.
function showStats(stats) {
  if (!stats) {
    $("stats").textContent = "";
    return;
  }
  const { usage, started, firstToken, outputChunks, ended, finish, headers } = stats;
  const parts = [];
  if (firstToken) parts.push(`first output ${((firstToken - started) / 1000).toFixed(2)} s`);
  if (usage) {
    const tokens = usage.completion_tokens;
    parts.push(`${usage.prompt_tokens} prompt + ${tokens} completion tokens`);
    const streaming = (ended - firstToken) / 1000;
    if (firstToken && tokens > 1 && outputChunks * 2 >= tokens && streaming > 0) {
      parts.push(`${((tokens - 1) / streaming).toFixed(1)} tokens/s`);
    } else {
      parts.push(`${((ended - started) / 1000).toFixed(2)} s in all`);
    }
  }
  if (finish) parts.push(`finish: ${finish}`);
  const cold = headers && headers.get("x-cold-start");
  if (cold) parts.push(`cold start: ${cold}`);
  else if (headers) parts.push("model was warm");
  const restored = headers && headers.get("x-prefix-from-volume");
  if (restored) parts.push(`${restored} prompt tokens restored from the volume`);
  $("stats").textContent = parts.join(" · ");
}

function showSnippet(text) {
  const pre = $("snippet");
  pre.textContent = text;
  pre.hidden = false;
  if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {}); // the text stays shown either way
}

function currentRequest(chat) {
  const embeddingsShown = !$("embeddings-panel").hidden;
  if (embeddingsShown) {
    return { path: "/v1/embeddings", method: "embeddings.create", body: embeddingsBody(embedUi()) };
  }
  const draft = $("message").value.trim();
  const body = draft ? chat.bodyWith(draft) : chat.body();
  return { path: "/v1/chat/completions", method: "chat.completions.create", body };
}

function embedUi() {
  return { model: $("embed-model"), texts: $("embed-texts"), table: $("similarity"), stats: $("embed-stats") };
}

function copyAs(kind, chat) {
  try {
    const { path, method, body } = currentRequest(chat);
    const withKey = Boolean(apiKey.get());
    showSnippet(kind === "curl" ? curlSnippet(location.origin, path, body, withKey)
      : pythonSnippet(location.origin, method, body, withKey));
  } catch (error) {
    handle(error);
  }
}

function start() {
  const chat = new Chat({
    model: $("chat-model"), system: $("system"), temperature: $("temperature"), maxTokens: $("max-tokens"),
    tools: $("tools"), toolChoice: $("tool-choice"), exampleTool: $("example-tool"), transcript: $("transcript"),
    send: $("send"), stop: $("stop"),
  }, { showError: handle, clearError, onStats: showStats });
  chat.setUpTools();

  const models = new ModelList({
    chatPicker: $("chat-model"), embedPicker: $("embed-model"), table: $("models"),
    onChange: () => {
      const card = models.card($("chat-model").value);
      $("chat-model-state").textContent = card ? stateText(card) : "no chat model";
    },
  });
  const refresh = () => models.refresh().catch(handle);
  $("chat-model").addEventListener("change", () => models.onChange());

  for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => selectTab(tab));
  $("change-key").addEventListener("click", askForKey);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey.set($("api-key").value.trim());
    $("key-panel").hidden = true;
    clearError();
    refresh();
  });

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message").value.trim();
    if (!text) return;
    $("message").value = "";
    chat.send(text).then(refresh);
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => chat.stop());
  $("clear").addEventListener("click", () => chat.clear());
  $("embed").addEventListener("click", () => {
    clearError();
    compare(embedUi()).catch(handle).then(refresh);
  });
  $("copy-curl").addEventListener("click", () => copyAs("curl", chat));
  $("copy-python").addEventListener("click", () => copyAs("python", chat));

  refresh();
  setInterval(() => {
    if ($("key-panel").hidden) refresh(); // not while the user types a key
  }, MODEL_REFRESH_MS);
}

start();
