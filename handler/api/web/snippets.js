// The current request as a shell command or a Python program, for pasting into a terminal or a script.

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

export function curlSnippet(origin, path, body, withKey) {
  const lines = [`curl ${shellQuote(origin + path)}`, "  -H 'Content-Type: application/json'"];
  if (withKey) lines.push("  -H \"Authorization: Bearer $API_KEY\"");
  if (body.stream) lines.push("  -N");
  lines.push(`  -d ${shellQuote(JSON.stringify(body, null, 2))}`);
  return lines.join(" \\\n");
}

function pythonLiteral(value, indent) {
  const pad = " ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((item) => `${pad}    ${pythonLiteral(item, indent + 4)}`).join(",\n")},\n${pad}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([key, item]) => `${pad}    ${JSON.stringify(key)}: ${pythonLiteral(item, indent + 4)}`)
    .join(",\n")},\n${pad}}`;
}

export function pythonSnippet(origin, method, body, withKey) {
  const { stream, ...rest } = body;
  const args = Object.entries(rest).map(([key, value]) => `    ${key}=${pythonLiteral(value, 4)},`);
  const key = withKey ? 'os.environ["API_KEY"]' : '"not-needed"';
  const call = `client.${method}(\n${args.join("\n")}${stream ? "\n    stream=True," : ""}\n)`;
  const use = method === "embeddings.create"
    ? "print([item.embedding[:4] for item in result.data])"
    : stream
      ? "for chunk in result:\n    if chunk.choices:\n        print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)\nprint()"
      : "print(result.choices[0].message)";
  return [
    "import os", "", "from openai import OpenAI", "",
    `client = OpenAI(base_url=${JSON.stringify(origin + "/v1")}, api_key=${key})`,
    `result = ${call}`, use,
  ].join("\n");
}
