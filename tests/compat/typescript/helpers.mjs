// Shared setup: a client for the server that tests/support/daytona_server.py started.
import { Daytona } from '@daytonaio/sdk';

export function client() {
  return new Daytona({ apiKey: process.env.DAYTONA_API_KEY, apiUrl: process.env.DAYTONA_API_URL });
}

/** Creates a sandbox, runs `body` with it, and deletes it whatever happens. */
export async function withSandbox(daytona, params, body) {
  const sandbox = await daytona.create(params);
  try {
    return await body(sandbox);
  } finally {
    await daytona.delete(sandbox).catch(() => {});
  }
}

/** Raw request to the API, for shapes the SDK hides. */
export async function api(method, path, body) {
  const response = await fetch(`${process.env.DAYTONA_API_URL}${path}`, {
    method,
    headers: { Authorization: `Bearer ${process.env.DAYTONA_API_KEY}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: response.status, body: json };
}
