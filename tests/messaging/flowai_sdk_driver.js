// Drives the published flowai-js SDK (github.com/flow-ai/flowai-js, unpacked from its npm pack
// tarball at test time, never committed) against a flowbox server: one widget session end to end.
// Prints one JSON line per step; the Python test (test_flowai_sdk.py) asserts on them.
//
// env: SDK (path to the SDK's lib/), BASE (server URL), CLIENT_ID, TOKEN (the project's REST token),
//      IMAGE (a PNG file to upload)
const fs = require('fs')
const { LiveClient, Message, Originator, EventAttachment, FileAttachment } = require(process.env.SDK)

const base = process.env.BASE
const errors = []
const out = (step, data) => console.log(JSON.stringify({ step, ...data }))

const client = new LiveClient({ clientId: process.env.CLIENT_ID, endpoint: base, origin: 'http://widget.test', silent: true })
client.on(LiveClient.ERROR, err => errors.push(err.message))

// The next event of a kind (optionally one that passes a test), or a timeout: generous, because a fresh
// server's first message loads the embedding model, which takes long on a busy machine.
function next(event, test = () => true, ms = 120000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { client.removeListener(event, on); reject(new Error(`timeout waiting for ${event}`)) }, ms)
    function on(value) {
      if (!test(value)) return
      clearTimeout(timer)
      client.removeListener(event, on)
      resolve(value)
    }
    client.on(event, on)
  })
}

const texts = reply => reply.messages.map(m => m.responses.map(r => r.payload.text).join(' '))

async function say(speech, traceId, extra = {}) {
  const delivered = next(LiveClient.MESSAGE_DELIVERED, m => m.traceId === traceId)
  const received = next(LiveClient.REPLY_RECEIVED)
  const message = new Message({ speech, traceId, originator: new Originator({ name: 'Jane', profile: { fullName: 'Jane Doe' } }), ...extra })
  client.send(message)
  return { delivered: await delivered, reply: await received }
}

async function main() {
  let connected = next(LiveClient.CONNECTED)
  client.start()
  await connected
  const threadId = client.threadId
  out('connected', { threadId, secret: typeof client.secret === 'string' })

  // Before the user says anything, a human agent pauses the bot on the thread (REST, the project's
  // token), reads its status; the widget's history is empty, not an error; then the bot is resumed.
  const pauseUrl = `${base}/rest/v1/pause/${encodeURIComponent(threadId)}`
  const auth = { Authorization: `Bearer ${process.env.TOKEN}` }
  const pause = await fetch(pauseUrl, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' } })
  const status = await (await fetch(`${pauseUrl}?sync=true`, { headers: auth })).json()
  let history = next(LiveClient.RECEIVED_HISTORY)
  client.history()
  const empty = await history
  const resume = await fetch(pauseUrl, { method: 'DELETE', headers: auth })
  out('paused', { pause: pause.status, status, history: empty.history, resume: resume.status })

  const metadata = new Message({}).metadata
  metadata.addParam('room', 'kitchen')  // a plain value, as the SDK's own examples send
  let { delivered, reply } = await say('Hello', 1, { metadata })
  out('hello', { delivered: { traceId: delivered.traceId, speech: delivered.speech, threadId: delivered.threadId }, texts: texts(reply), threadId: reply.threadId })

  const event = await say('', 2, { attachment: new EventAttachment('INTRO') })
  out('event', { texts: texts(event.reply), speech: event.delivered.speech })

  client.sendUserTypingActivity({ originator: { name: 'Jane' } })
  client.noticed(undefined, true)
  // "noticed" goes by the socket, the check by HTTP: asked again until the socket's frame is handled
  let unnoticed
  for (const deadline = Date.now() + 60000; ; await new Promise(resolve => setTimeout(resolve, 50))) {
    const checked = next(LiveClient.CHECKED_UNNOTICED_MESSAGES)
    client.checkUnnoticed()
    unnoticed = (await checked).unnoticed
    if (!unnoticed || Date.now() > deadline) break
  }
  out('noticed', { unnoticed })

  // A human agent answers over REST: pushed to the widget's socket.
  const pushed = next(LiveClient.REPLY_RECEIVED, r => r.originator.role === 'moderator')
  const rest = await fetch(`${base}/rest/v1/messages/${encodeURIComponent(threadId)}`, {
    method: 'POST', headers: { Authorization: `Bearer ${process.env.TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ payload: { type: 'text', speech: 'Anna here, how can I help?', originator: { name: 'Anna', role: 'moderator' } } }),
  })
  const agent = await pushed
  out('moderator', { status: rest.status, texts: texts(agent), name: agent.originator.name })
  const checked = next(LiveClient.CHECKED_UNNOTICED_MESSAGES)
  client.checkUnnoticed()
  out('unnoticed', { unnoticed: (await checked).unnoticed })

  history = next(LiveClient.RECEIVED_HISTORY)
  client.history()
  const result = await history
  out('history', { threadId: result.threadId, entries: result.history.map(e => [e.originator.role, e.messages.map(m => m.fallback)]) })

  // A file goes by thread.upload; the IMAGE step answers on the socket.
  const uploaded = next(LiveClient.MESSAGE_DELIVERED, m => m.type === 'media')
  const picture = next(LiveClient.REPLY_RECEIVED, r => r.originator.role === 'bot')
  client.send(new Message({ traceId: 3, attachment: new FileAttachment(fs.createReadStream(process.env.IMAGE)) }))
  const media = await uploaded
  out('upload', { mediaType: media.mediaType, mimetype: media.mimetype, url: media.url, texts: texts(await picture) })

  // Merging is not public in the SDK either: no mergerKey is valid, and the SDK reports it.
  const merged = next(LiveClient.ERROR)
  client.merger('no-such-key')
  out('merger', { error: (await merged).message })
  errors.pop()

  // Into a slot, then reconnect (a new socket.info, the stored secret) and finish it.
  out('weather', { texts: texts((await say('what is the weather like', 4)).reply) })
  const disconnected = next(LiveClient.DISCONNECTED)
  client.stop()
  await disconnected
  connected = next(LiveClient.CONNECTED)
  client.start(threadId)
  await connected
  out('reconnected', { threadId: client.threadId, texts: texts((await say('Amsterdam', 5)).reply) })
  client.stop()
  out('done', { errors })
}

main().then(() => process.exit(0), err => { out('failed', { error: String(err && err.stack || err), errors }); process.exit(1) })
