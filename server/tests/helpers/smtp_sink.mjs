#!/usr/bin/env node
// A real SMTP server for the tests (npm smtp-server, from the Nodemailer
// project), on loopback. It prints `listening <port>` once, then each message
// it accepted as one JSON line: {"from", "to", "secure", "user", "data"}
// (`secure`: the session was encrypted; `data`: the message as received).
//
// Flags: --port N (default 0: any free port); --cert FILE --key FILE (offers
// STARTTLS with them); --tls (TLS from the first byte instead); --no-starttls
// (does not offer STARTTLS); --user NAME --pass PASSWORD (requires AUTH).
import fs from 'node:fs';
import { SMTPServer } from 'smtp-server';

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const value = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

const user = value('--user');
const pass = value('--pass');
const cert = value('--cert');
const key = value('--key');
const options = {
  secure: flag('--tls'),
  hideSTARTTLS: flag('--no-starttls') || !cert,
  authOptional: !user,
  authMethods: ['PLAIN', 'LOGIN'],
  // AUTH only over an encrypted session, as real servers do.
  allowInsecureAuth: false,
  disabledCommands: user ? [] : ['AUTH'],
  logger: false,
  onAuth(auth, session, done) {
    if (auth.username === user && auth.password === pass) return done(null, { user: auth.username });
    return done(new Error('Invalid username or password'));
  },
  onData(stream, session, done) {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      process.stdout.write(
        JSON.stringify({
          from: session.envelope.mailFrom && session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          secure: session.secure,
          user: session.user || null,
          data: Buffer.concat(chunks).toString('utf8'),
        }) + '\n',
      );
      done();
    });
  },
};
if (cert) {
  options.cert = fs.readFileSync(cert);
  options.key = fs.readFileSync(key);
}
const server = new SMTPServer(options);
server.on('error', (e) => process.stderr.write(`smtp sink: ${e.message}\n`));
server.listen(Number(value('--port') || 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.server.address().port}\n`);
});
