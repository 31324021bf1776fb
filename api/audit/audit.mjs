// GraphQL over HTTP conformance: runs graphql-http's server audits against a running server.
//
//   POSTLOAN_API_URL=http://127.0.0.1:8000/graphql POSTLOAN_API_TOKEN=<jwt> node audit.mjs
//
// Every request carries the token (the API answers 401 without one). Prints one line per audit
// and a JSON summary on the last line; exits 1 when any MUST audit fails, 2 on a usage error.
import { serverAudits } from 'graphql-http';

const url = process.env.POSTLOAN_API_URL;
const token = process.env.POSTLOAN_API_TOKEN;
if (!url || !token) {
  console.error('set POSTLOAN_API_URL and POSTLOAN_API_TOKEN');
  process.exit(2);
}

const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};

const results = await Promise.all(serverAudits({ url, fetchFn }).map(({ fn }) => fn()));
const summary = { ok: 0, warn: 0, error: 0, mustFailures: [], shouldFailures: [] };
for (const result of results) {
  const level = result.name.split(' ')[0];
  if (result.status === 'ok') {
    summary.ok += 1;
    console.log(`ok    ${result.id} ${result.name}`);
    continue;
  }
  summary[result.status] += 1;
  const detail = result.reason + (result.response ? ` (HTTP ${result.response.status})` : '');
  console.log(`${result.status.padEnd(5)} ${result.id} ${result.name}: ${detail}`);
  if (level === 'MUST') summary.mustFailures.push(result.id);
  if (level === 'SHOULD') summary.shouldFailures.push(result.id);
}
console.log(JSON.stringify(summary));
process.exit(summary.mustFailures.length ? 1 : 0);
