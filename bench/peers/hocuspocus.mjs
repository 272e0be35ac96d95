// A Hocuspocus node for weft-bench: HOST, PORT; with REDIS_PORT, the Redis
// extension against 127.0.0.1:REDIS_PORT (two such nodes form a cluster).
// No persistence extension: Hocuspocus keeps documents in memory only.
import { Server } from '@hocuspocus/server'
import { Redis } from '@hocuspocus/extension-redis'

const extensions = []
if (process.env.REDIS_PORT) {
  const redis = new Redis({
    host: '127.0.0.1',
    port: Number(process.env.REDIS_PORT),
    identifier: `bench-${process.env.NODE_NAME || 'node'}`
  })
  // Listen only once both Redis connections are ready: a document loaded
  // earlier subscribes before ioredis's ready check, which then fails
  // ("Connection in subscriber mode") and the node never hears its peer.
  const ready = (client) => client.status === 'ready'
    ? Promise.resolve()
    : new Promise((resolve) => client.once('ready', resolve))
  const timeout = new Promise((resolve, reject) =>
    setTimeout(() => reject(new Error('redis not ready within 10 s')), 10000).unref())
  await Promise.race([Promise.all([ready(redis.pub), ready(redis.sub)]), timeout])
  extensions.push(redis)
}

const server = new Server({
  address: process.env.HOST || '127.0.0.1',
  port: Number(process.env.PORT),
  quiet: true,
  extensions
})
await server.listen()
