// The TypeScript MCP SDK as a client-credentials caller: it starts without a token, follows the
// 401 to the protected resource metadata, gets a token from the IdP, then lists tools and hosts.
// Usage: node ts_client.mjs MCP_URL ISSUER CLIENT_ID CLIENT_SECRET SCOPE  -> JSON on stdout
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [mcpUrl, issuer, clientId, clientSecret, scope] = process.argv.slice(2);
const authProvider = new ClientCredentialsProvider({ clientId, clientSecret, scope, expectedIssuer: issuer });
const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider });
const client = new Client({ name: 'ts-sdk-test', version: '0' });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const hosts = await client.callTool({ name: 'ssh_list_hosts', arguments: { response_format: 'json' } });
console.log(JSON.stringify({ tools, hosts: hosts.structuredContent.hosts.map((h) => h.name) }));
await client.close();
