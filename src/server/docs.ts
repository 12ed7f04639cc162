// SPDX-License-Identifier: MIT
// GET /docs: Swagger UI from the swagger-ui-dist package's own files (no CDN), over /openapi.json.
import fs from 'node:fs';
import path from 'node:path';
import type Router from '@koa/router';
import type { AppState } from './types';

const ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'index.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'application/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
  'favicon-16x16.png': 'image/png',
};

const PAGE = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>facedet-native API</title>
    <link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="/docs/index.css" />
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="/docs/swagger-initializer.js" charset="UTF-8"></script>
  </body>
</html>
`;

const INITIALIZER = `window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
  });
};
`;

function assetDir(): string {
  return path.dirname(require.resolve('swagger-ui-dist/package.json'));
}

export function docsRoutes(router: Router<AppState>): void {
  const cache = new Map<string, Buffer>();
  const dir = assetDir();

  router.get('/docs', async (ctx) => {
    ctx.state.route = '/docs';
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = PAGE;
  });
  router.get('/docs/swagger-initializer.js', async (ctx) => {
    ctx.state.route = '/docs/{asset}';
    ctx.type = 'application/javascript; charset=utf-8';
    ctx.body = INITIALIZER;
  });
  router.get('/docs/:asset', async (ctx, next) => {
    const name = ctx.params.asset ?? '';
    const type = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
    if (!type) return next(); // 404 from the error middleware
    ctx.state.route = '/docs/{asset}';
    let body = cache.get(name);
    if (!body) {
      body = await fs.promises.readFile(path.join(dir, name));
      cache.set(name, body);
    }
    ctx.type = type;
    ctx.set('Cache-Control', 'public, max-age=86400');
    ctx.body = body;
  });
}
