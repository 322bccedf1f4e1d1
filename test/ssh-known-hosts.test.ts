import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  appendKnownHost, checkHostKey, formatKnownHostsLine, hashKnownHostsName, parseKnownHosts, readKnownHosts, sshFingerprint,
} from '../activities/ssh';

let dir: string;
const keys: Record<'ed25519' | 'ecdsa' | 'rsa' | 'other', { line: string; blob: Buffer; path: string }> = {} as never;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'katafleet-known-hosts-'));
  for (const [name, type] of [['ed25519', 'ed25519'], ['ecdsa', 'ecdsa'], ['rsa', 'rsa'], ['other', 'ed25519']] as const) {
    const path = join(dir, name);
    execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-f', path]);
    const [keyType, base64] = readFileSync(`${path}.pub`, 'utf8').split(' ');
    keys[name] = { line: `${keyType} ${base64}`, blob: Buffer.from(base64, 'base64'), path: `${path}.pub` };
  }
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('known_hosts', () => {
  it('computes fingerprints exactly as ssh-keygen -l prints them', () => {
    for (const key of Object.values(keys)) {
      const printed = execFileSync('ssh-keygen', ['-l', '-f', key.path], { encoding: 'utf8' }).split(' ')[1];
      expect(sshFingerprint(key.blob)).toBe(printed);
    }
  });

  it('finds plain entries by name, by [host]:port, and through wildcards and negation', () => {
    const entries = parseKnownHosts([
      '# comment', '',
      `node-1,10.0.0.1 ${keys.ed25519.line}`,
      `[10.0.0.2]:2222 ${keys.ecdsa.line} root@node-2`,
      `10.0.1.*,!10.0.1.9 ${keys.rsa.line}`,
    ].join('\n'));
    expect(checkHostKey(entries, '10.0.0.1', 22, keys.ed25519.blob)).toMatchObject({ verdict: 'known', entry: { line: 3 } });
    expect(checkHostKey(entries, '10.0.0.2', 2222, keys.ecdsa.blob)).toMatchObject({ verdict: 'known' });
    expect(checkHostKey(entries, '10.0.0.2', 22, keys.ecdsa.blob)).toEqual({ verdict: 'unknown' });
    expect(checkHostKey(entries, '10.0.1.7', 22, keys.rsa.blob)).toMatchObject({ verdict: 'known' });
    expect(checkHostKey(entries, '10.0.1.9', 22, keys.rsa.blob)).toEqual({ verdict: 'unknown' });
  });

  it('finds entries hashed by ssh-keygen -H, for port 22 and other ports', () => {
    const file = join(dir, 'hashed');
    writeFileSync(file, `10.0.0.5 ${keys.ed25519.line}\n[10.0.0.6]:2200 ${keys.rsa.line}\n`);
    execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
    const entries = parseKnownHosts(readFileSync(file, 'utf8'));
    expect(entries.every((e) => e.hosts.startsWith('|1|'))).toBe(true);
    expect(checkHostKey(entries, '10.0.0.5', 22, keys.ed25519.blob).verdict).toBe('known');
    expect(checkHostKey(entries, '10.0.0.6', 2200, keys.rsa.blob).verdict).toBe('known');
    expect(checkHostKey(entries, '10.0.0.6', 22, keys.rsa.blob).verdict).toBe('unknown');
  });

  it('matches a hashed entry whatever the case of the address, so a changed key on a mixed-case host name is a mismatch, never unknown (+ TOFU)', () => {
    const file = join(dir, 'hashed-mixed-case');
    writeFileSync(file, `worker-3.example.internal ${keys.ed25519.line}\n[worker-4.example.internal]:2222 ${keys.ed25519.line}\n`);
    execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
    const entries = parseKnownHosts(readFileSync(file, 'utf8'));
    expect(entries.every((e) => e.hosts.startsWith('|1|'))).toBe(true);
    expect(checkHostKey(entries, 'Worker-3.example.internal', 22, keys.other.blob).verdict).toBe('mismatch');
    expect(checkHostKey(entries, 'WORKER-3.EXAMPLE.INTERNAL', 22, keys.ed25519.blob).verdict).toBe('known');
    expect(checkHostKey(entries, 'Worker-4.Example.Internal', 2222, keys.other.blob).verdict).toBe('mismatch');
    expect(checkHostKey(parseKnownHosts(`worker-3.example.internal ${keys.ed25519.line}\n`), 'Worker-3.example.internal', 22, keys.other.blob).verdict).toBe('mismatch');
  });

  it('writes hashed names that ssh-keygen -F finds', () => {
    const file = join(dir, 'ours-hashed');
    writeFileSync(file, `${hashKnownHostsName('[10.0.0.7]:2201')} ${keys.ecdsa.line}\n`);
    const found = execFileSync('ssh-keygen', ['-F', '[10.0.0.7]:2201', '-f', file], { encoding: 'utf8' });
    expect(found).toContain(keys.ecdsa.line);
  });

  it('reports a changed key with the known key of the same type', () => {
    const entries = parseKnownHosts(`10.0.0.1 ${keys.rsa.line}\n10.0.0.1 ${keys.ed25519.line}\n`);
    const verdict = checkHostKey(entries, '10.0.0.1', 22, keys.other.blob);
    expect(verdict.verdict).toBe('mismatch');
    expect(verdict.verdict === 'mismatch' && verdict.expected.map((e) => e.line)).toEqual([2]);
  });

  it('refuses a key marked @revoked even when another line lists it', () => {
    const entries = parseKnownHosts(`10.0.0.1 ${keys.ed25519.line}\n@revoked * ${keys.ed25519.line}\n`);
    expect(checkHostKey(entries, '10.0.0.1', 22, keys.ed25519.blob)).toMatchObject({ verdict: 'revoked', entry: { line: 2 } });
  });

  it('skips malformed lines and lines whose key type disagrees with the key', () => {
    const entries = parseKnownHosts(`garbage\n10.0.0.1 ssh-rsa ${keys.ed25519.line.split(' ')[1]}\n10.0.0.1 ${keys.ed25519.line}\n`);
    expect(entries.map((e) => e.line)).toEqual([3]);
  });

  it('appends trust-on-first-use lines that OpenSSH reads back, on a new line', async () => {
    const file = join(dir, 'tofu');
    writeFileSync(file, `10.0.0.1 ${keys.rsa.line}`);
    await appendKnownHost(file, '10.0.0.9', 2222, keys.ed25519.blob);
    expect(readFileSync(file, 'utf8')).toBe(`10.0.0.1 ${keys.rsa.line}\n${formatKnownHostsLine('10.0.0.9', 2222, keys.ed25519.blob)}\n`);
    expect(execFileSync('ssh-keygen', ['-F', '[10.0.0.9]:2222', '-f', file], { encoding: 'utf8' })).toContain(keys.ed25519.line);
    const { entries } = await readKnownHosts(file);
    expect(checkHostKey(entries, '10.0.0.9', 2222, keys.ed25519.blob).verdict).toBe('known');
  });

  it('reads a missing file as empty, and says so', async () => {
    expect(await readKnownHosts(join(dir, 'missing'))).toEqual({ exists: false, entries: [] });
  });
});
