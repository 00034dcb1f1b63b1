// The chat tab: a conversation streamed from /v1/chat/completions, Stop, tool calls answered by hand.

import { readEvents, request } from "./api.js";

const EXAMPLE_TOOLS = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
      required: ["city"],
    },
  },
}];

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function prettyArguments(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text; // still streaming, or not JSON: show what came
  }
}

// One assistant reply as it streams: text, reasoning (collapsible), tool calls (formatted JSON).
class ReplyView {
  constructor(transcript) {
    this.node = element("div", "message assistant");
    this.node.append(element("div", "role", "assistant"));
    this.reasoning = element("details", "reasoning");
    this.reasoning.append(element("summary", "", "Reasoning"));
    this.reasoningText = element("div", "text");
    this.reasoning.append(this.reasoningText);
    this.reasoning.hidden = true;
    this.text = element("div", "text content");
    this.calls = element("div", "tool-calls");
    this.node.append(this.reasoning, this.text, this.calls);
    transcript.append(this.node);
  }

  show(message) {
    if (message.reasoning_content) {
      this.reasoning.hidden = false;
      this.reasoningText.textContent = message.reasoning_content;
    }
    this.text.textContent = message.content || "";
    this.calls.replaceChildren(...(message.tool_calls || []).map((call) => {
      const block = element("div", "tool-call");
      block.append(element("div", "tool-name", `tool call: ${call.function.name || ""}`));
      block.append(element("pre", "", prettyArguments(call.function.arguments || "")));
      return block;
    }));
  }

  note(text) {
    this.node.append(element("div", "note", text));
  }
}

// Accumulates streamed deltas into one assistant message.
function applyDelta(message, delta) {
  if (delta.content) message.content = (message.content || "") + delta.content;
  if (delta.reasoning_content) message.reasoning_content = (message.reasoning_content || "") + delta.reasoning_content;
  for (const part of delta.tool_calls || []) {
    message.tool_calls = message.tool_calls || [];
    const call = message.tool_calls[part.index] ||= { id: "", type: "function", function: { name: "", arguments: "" } };
    if (part.id) call.id = part.id;
    if (part.function && part.function.name) call.function.name += part.function.name;
    if (part.function && part.function.arguments) call.function.arguments += part.function.arguments;
  }
}

export class Chat {
  // showError takes an Error (an ApiError with status 401 also asks for the key).
  constructor(ui, { showError, clearError, onStats }) {
    Object.assign(this, { ui, showError, clearError, onStats });
    this.messages = [];
    this.controller = null;
  }

  setUpTools() {
    const { tools, toolChoice, exampleTool } = this.ui;
    exampleTool.addEventListener("click", () => {
      tools.value = JSON.stringify(EXAMPLE_TOOLS, null, 2);
      this.refreshToolChoice();
    });
    tools.addEventListener("input", () => this.refreshToolChoice());
    this.refreshToolChoice();
  }

  toolList() {
    const text = this.ui.tools.value.trim();
    if (!text) return [];
    const parsed = JSON.parse(text);
    if (!Array.isArray(parsed)) throw new Error("Tools must be a JSON array of tool definitions.");
    return parsed;
  }

  refreshToolChoice() {
    let names = [];
    try {
      names = this.toolList().map((tool) => tool.function && tool.function.name).filter(Boolean);
    } catch {
      // half-typed JSON: keep the choices as they are
      return;
    }
    const chosen = this.ui.toolChoice.value;
    const options = ["auto", "none", "required", ...names.map((name) => `function:${name}`)];
    this.ui.toolChoice.replaceChildren(...options.map((value) => new Option(value, value)));
    if (options.includes(chosen)) this.ui.toolChoice.value = chosen;
  }

  // The request body for the conversation so far (also what the copy buttons show).
  body() {
    const { model, system, temperature, maxTokens, toolChoice } = this.ui;
    const messages = system.value.trim() ? [{ role: "system", content: system.value }] : [];
    messages.push(...this.messages);
    const body = { model: model.value, messages, stream: true, stream_options: { include_usage: true } };
    if (temperature.value !== "") body.temperature = Number(temperature.value);
    if (maxTokens.value !== "") body.max_tokens = Number(maxTokens.value);
    const tools = this.toolList();
    if (tools.length) {
      body.tools = tools;
      const choice = toolChoice.value;
      body.tool_choice = choice.startsWith("function:")
        ? { type: "function", function: { name: choice.slice("function:".length) } }
        : choice;
    }
    return body;
  }

  bodyWith(text) {
    this.messages.push({ role: "user", content: text });
    try {
      return this.body();
    } finally {
      this.messages.pop();
    }
  }

  addUserMessage(text) {
    this.messages.push({ role: "user", content: text });
    const node = element("div", "message user");
    node.append(element("div", "role", "user"), element("div", "text", text));
    this.ui.transcript.append(node);
  }

  async send(text) {
    if (this.controller) return;
    this.clearError();
    let body;
    try {
      body = text ? this.bodyWith(text) : this.body();
    } catch (error) {
      this.showError(new Error(`The tools are not valid JSON: ${error.message}`));
      return;
    }
    if (text) this.addUserMessage(text);
    await this.stream(body);
  }

  async stream(body) {
    const view = new ReplyView(this.ui.transcript);
    const message = { role: "assistant", content: "" };
    this.controller = new AbortController();
    this.busy(true);
    const started = performance.now();
    let firstToken = null;
    let usage = null;
    let finish = null;
    let response = null;
    let outputChunks = 0;
    try {
      response = await request("/v1/chat/completions", { method: "POST", body, signal: this.controller.signal });
      await readEvents(response, (chunk) => {
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          if (delta.content || delta.reasoning_content || delta.tool_calls) {
            firstToken ??= performance.now();
            outputChunks += 1;
          }
          applyDelta(message, delta);
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        view.show(message);
        this.ui.transcript.scrollTop = this.ui.transcript.scrollHeight;
      });
    } catch (error) {
      if (error.name === "AbortError") {
        view.note("stopped");
        finish = "stopped";
      } else {
        view.note("failed");
        this.showError(error);
        finish = "error";
      }
    } finally {
      this.controller = null;
      this.busy(false);
    }
    view.node.dataset.finish = finish || "";
    if (finish === "error" && !message.content && !message.tool_calls) {
      view.node.remove();
      return;
    }
    this.messages.push(message);
    if (message.tool_calls && finish !== "stopped") this.askForResults(view, message);
    this.onStats({
      usage, started, firstToken, outputChunks, ended: performance.now(), finish, headers: response && response.headers,
    });
  }

  askForResults(view, message) {
    const pending = new Map();
    for (const call of message.tool_calls) {
      const form = element("form", "tool-result");
      const input = element("textarea");
      input.rows = 2;
      input.placeholder = `Result of ${call.function.name} (JSON or text)`;
      const button = element("button", "", "Send result");
      button.type = "submit";
      form.append(input, button);
      pending.set(call.id, input);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.answer(call, input.value, pending, view);
      });
      view.calls.append(form);
    }
  }

  async answer(call, result, pending, view) {
    if (!pending.has(call.id)) return;
    this.messages.push({ role: "tool", tool_call_id: call.id, content: result });
    pending.delete(call.id);
    const done = element("div", "message tool");
    done.append(element("div", "role", `tool (${call.function.name})`), element("div", "text", result));
    this.ui.transcript.append(done);
    if (!pending.size) {
      view.calls.querySelectorAll("form").forEach((form) => form.remove());
      await this.send(null);
    }
  }

  stop() {
    if (this.controller) this.controller.abort();
  }

  clear() {
    this.stop();
    this.messages = [];
    this.ui.transcript.replaceChildren();
    this.onStats(null);
  }

  busy(yes) {
    this.ui.send.disabled = yes;
    this.ui.stop.disabled = !yes;
  }
}
