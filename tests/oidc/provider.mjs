// A real OpenID Provider for tests/test_enroll_oidc.py: panva/oidc-provider (an OpenID
// Certified implementation), issuing RFC 9068 JWT access tokens to confidential clients
// through the client_credentials grant, for one resource indicator (the CA).
//
// usage: node provider.mjs PORT KEYS.json CLIENTS.json
//   KEYS.json: a private JWK Set (the test makes the keys); CLIENTS.json: client metadata.
// Prints "listening ISSUER" once it accepts connections.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, keysFile, clientsFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const RESOURCE = process.env.OIDC_RESOURCE || 'https://ca.mtlskit.test';

const provider = new Provider(issuer, {
  jwks: JSON.parse(readFileSync(keysFile, 'utf8')),
  clients: JSON.parse(readFileSync(clientsFile, 'utf8')),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) throw new Error(`unknown resource ${resourceIndicator}`);
        return {
          scope: 'enroll',
          audience: RESOURCE,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: process.env.OIDC_ALG || 'ES256' } },
        };
      },
    },
  },
  extraTokenClaims: (ctx, token) => ({ workload: token.clientId }),
});
provider.proxy = false;

provider.listen(Number(port), '127.0.0.1').on('listening', () => {
  console.log(`listening ${issuer}`);
});
