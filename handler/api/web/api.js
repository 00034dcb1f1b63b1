// Calls to this function's API: the API key (sessionStorage), OpenAI-shaped errors made readable,
// and server-sent events read from a fetch body (so a stream can be aborted with its request).

const KEY_NAME = "serverless-gguf-api-key";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_NAME) || "",
  set: (key) => sessionStorage.setItem(KEY_NAME, key),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function headers(extra) {
  const all = { ...extra };
  const key = apiKey.get();
  if (key) all.Authorization = `Bearer ${key}`;
  return all;
}

function explain(status, message, retryAfter, hadKey) {
  const wait = retryAfter ? ` Retry in ${retryAfter} s.` : "";
  switch (status) {
    case 401:
      return hadKey ? `The API key was refused (401): ${message}` : `This function needs an API key (401): ${message}`;
    case 404:
      return `Not found (404): ${message}`;
    case 429:
      return `The server is busy: its queue is full (429).${wait} ${message}`;
    case 503:
      return `The server cannot take this now (503).${wait} ${message}`;
    default:
      return `Request failed (${status}): ${message}`;
  }
}

async function errorOf(response) {
  let message = response.statusText || "no details";
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not JSON: keep the status text
  }
  const retryAfter = response.headers.get("Retry-After");
  return new ApiError(response.status, explain(response.status, message, retryAfter, Boolean(apiKey.get())),
    retryAfter);
}

export async function request(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function postJson(path, body) {
  return (await request(path, { method: "POST", body })).json();
}

// Calls onEvent(parsed JSON) for every `data:` event until [DONE]; an error event ends the stream with an ApiError.
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = event.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim())
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const parsed = JSON.parse(data);
      if (parsed.error) throw new ApiError(0, `The generation failed: ${parsed.error.message}`);
      onEvent(parsed);
    }
  }
}
