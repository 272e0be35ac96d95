// A bad configuration fails at start-up with a message that names the
// setting, and a non-zero exit, before anything listens.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'

import { WEFT_BIN, freePort } from '../lib/harness.mjs'

/** Runs `weft serve ARGS` and resolves with its exit code and output (bounded). */
function runWeft (args, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(WEFT_BIN, ['serve', ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let output = ''
    child.stdout.on('data', (chunk) => { output += chunk })
    child.stderr.on('data', (chunk) => { output += chunk })
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`weft ${args.join(' ')} did not exit within 10 s; it should refuse to start:\n${output}`))
    }, 10_000)
    child.on('error', reject)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })
}

const scratch = () => fs.mkdtempSync(path.join(os.tmpdir(), 'weft-startup-'))

const cases = [
  { name: 'unparseable listen address', args: ['--listen', 'not-an-address'], names: '--listen' },
  { name: 'unparseable duration', args: ['--shutdown-grace', 'soon'], names: '--shutdown-grace' },
  { name: 'message limit out of range', args: ['--max-message-bytes', '1'], names: '--max-message-bytes' },
  { name: 'heartbeat timeout not above interval', args: ['--heartbeat-interval', '10s', '--heartbeat-timeout', '5s'], names: '--heartbeat-timeout' },
  { name: 'unsupported store scheme', args: ['--store', 'mysql://localhost/weft'], names: '--store' },
  { name: 'store directory that cannot be created', args: ['--store', 'sqlite:///proc/weft-no/weft.db'], names: '--store' },
  { name: 'broadcast batching window too long', args: ['--broadcast-batch-window', '5s'], names: '--broadcast-batch-window' },
  { name: 'broadcast batching threshold of zero', args: ['--broadcast-batch-min-sessions', '0'], names: '--broadcast-batch-min-sessions' },
  { name: 'TLS certificate that does not exist', args: ['--tls-cert', '/nonexistent/weft/cert.pem', '--tls-key', '/nonexistent/weft/key.pem'], names: '--tls-cert' },
  { name: 'Kafka SASL without a mechanism', args: ['--kafka-brokers', '127.0.0.1:9', '--kafka-security-protocol', 'sasl_ssl', '--kafka-sasl-username', 'weft', '--kafka-sasl-password', 'secret'], names: '--kafka-sasl-mechanism' },
  { name: 'Kafka CA file that does not exist', args: ['--kafka-brokers', '127.0.0.1:9', '--kafka-security-protocol', 'ssl', '--kafka-ssl-ca', '/nonexistent/weft/ca.pem'], names: '--kafka-ssl-ca' },
  { name: 'history retention shorter than the version interval', args: ['--history-retention', '5s', '--version-interval', '1m'], names: '--history-retention' },
  { name: 'history compaction interval of zero', args: ['--history-compact-interval', '0s'], names: '--history-compact-interval' },
  { name: 'environment twin is validated too', args: [], env: { WEFT_SNAPSHOT_DEBOUNCE: 'often' }, names: 'snapshot-debounce' }
]

for (const c of cases) {
  test(`start-up refuses: ${c.name}`, async () => {
    const dir = scratch()
    try {
      const port = await freePort()
      const base = ['--listen', `127.0.0.1:${port}`, '--store', `sqlite://${dir}/weft.db`]
      const { code, output } = await runWeft([...base, ...c.args], c.env)
      assert.notEqual(code, 0, `exit code must be non-zero:\n${output}`)
      assert.ok(output.includes(c.names), `the message names ${c.names}:\n${output}`)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
}

test('start-up refuses a listen address already in use, naming --listen', async () => {
  const dir = scratch()
  const net = await import('node:net')
  const holder = net.createServer()
  await new Promise((resolve) => holder.listen(0, '127.0.0.1', resolve))
  try {
    const { port } = holder.address()
    const { code, output } = await runWeft(['--listen', `127.0.0.1:${port}`, '--store', `sqlite://${dir}/weft.db`])
    assert.notEqual(code, 0, output)
    assert.match(output, /--listen/, output)
  } finally {
    holder.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
