// Builds the editor page into dist/: index.html, assets/editor.js and
// assets/editor.css. The weft binary embeds dist/ when it is compiled
// (crates/gateway/src/editor.rs), so this runs before cargo (`make web`).
import { build } from 'esbuild'
import { copyFile, mkdir, rm } from 'node:fs/promises'

const out = new URL('./dist/', import.meta.url)
await rm(out, { recursive: true, force: true })
await mkdir(new URL('./assets/', out), { recursive: true })

await build({
  entryPoints: ['src/main.js'],
  outfile: 'dist/assets/editor.js',
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  legalComments: 'linked',
  logLevel: 'warning',
})
await copyFile(new URL('./src/index.html', import.meta.url), new URL('./index.html', out))
await copyFile(new URL('./src/style.css', import.meta.url), new URL('./assets/editor.css', out))
