import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clientAddress, createTrustedProxies, normalizeAddress } from './client-address.ts';
import { byApiKey, byClientAddress, byUser, firstKey, maskIpv6 } from './keys.ts';

const proxies = createTrustedProxies(['10.0.0.0/8', '192.168.1.1', 'fd00::/8', '::1']);

/** [what, remoteAddress, X-Forwarded-For, expected client] */
const corpus: [string, string | undefined, string | string[] | undefined, string | undefined][] = [
  ['no header, untrusted peer', '203.0.113.7', undefined, '203.0.113.7'],
  ['no header, trusted peer: the proxy itself is the client', '10.1.2.3', undefined, '10.1.2.3'],
  ['spoofed header from an untrusted peer is ignored', '203.0.113.7', '1.1.1.1', '203.0.113.7'],
  [
    'spoofed chain of "trusted" hops from an untrusted peer',
    '203.0.113.7',
    '10.0.0.1, 10.0.0.2',
    '203.0.113.7',
  ],
  ['one trusted proxy', '10.0.0.1', '198.51.100.4', '198.51.100.4'],
  ['client spoofs, trusted proxy appends the real peer', '10.0.0.1', '1.1.1.1, 198.51.100.4', '198.51.100.4'],
  ['two trusted hops', '10.0.0.1', '198.51.100.4, 10.9.9.9', '198.51.100.4'],
  ['trusted hops written as single address', '192.168.1.1', '198.51.100.4, 10.9.9.9', '198.51.100.4'],
  ['untrusted 192.168.1.2 stops the walk', '10.0.0.1', '198.51.100.4, 192.168.1.2', '192.168.1.2'],
  ['all hops trusted: the leftmost is the client', '10.0.0.1', '10.0.0.5, 10.0.0.6', '10.0.0.5'],
  [
    'repeated header lines read right to left',
    '10.0.0.1',
    ['1.1.1.1', '198.51.100.4, 10.2.2.2'],
    '198.51.100.4',
  ],
  ['repeated lines walked across', '10.0.0.1', ['198.51.100.4', '10.2.2.2'], '198.51.100.4'],
  ['IPv6 peer and client', 'fd00::1', '2001:DB8:0:0::7', '2001:db8::7'],
  ['IPv6 loopback proxy', '::1', '2001:db8::7', '2001:db8::7'],
  ['IPv4-mapped peer matches an IPv4 CIDR', '::ffff:10.0.0.1', '198.51.100.4', '198.51.100.4'],
  ['IPv4-mapped client is written as IPv4', '10.0.0.1', '::ffff:198.51.100.4', '198.51.100.4'],
  ['IPv4-mapped untrusted peer', '::ffff:203.0.113.7', '1.1.1.1', '203.0.113.7'],
  ['bracketed IPv6 with port', '10.0.0.1', '[2001:db8::7]:4711', '2001:db8::7'],
  ['IPv4 with port', '10.0.0.1', '198.51.100.4:4711', '198.51.100.4'],
  ['spaces around entries', '10.0.0.1', '   198.51.100.4  ,  10.0.0.2 ', '198.51.100.4'],
  ['garbage entry stops the walk at the last trusted hop', '10.0.0.1', 'evil, not-an-ip', '10.0.0.1'],
  ['garbage behind a trusted hop', '10.0.0.1', 'garbage, 10.0.0.2', '10.0.0.2'],
  ['garbage left of the client is never reached', '10.0.0.1', 'garbage, 198.51.100.4', '198.51.100.4'],
  ['empty header', '10.0.0.1', '', '10.0.0.1'],
  ['only commas', '10.0.0.1', ',,,', '10.0.0.1'],
  ['leading comma', '10.0.0.1', ',198.51.100.4', '198.51.100.4'],
  ['unknown (RFC 7239 style)', '10.0.0.1', 'unknown', '10.0.0.1'],
  ['octal-looking IPv4 is not an address', '10.0.0.1', '010.0.0.1', '10.0.0.1'],
  ['IPv6 with zone', 'fe80::1%eth0', undefined, 'fe80::1'],
  ['no peer address', undefined, '198.51.100.4', undefined],
  ['garbage peer address', 'nonsense', '198.51.100.4', undefined],
  ['an overlong entry', '10.0.0.1', `${'1'.repeat(10_000)}`, '10.0.0.1'],
  ['CRLF and NUL inside an entry', '10.0.0.1', '1.2.3.4\r\n, 198.51.100.4\u0000', '10.0.0.1'],
];

describe('clientAddress', () => {
  for (const [what, remoteAddress, forwardedFor, expected] of corpus) {
    it(what, () => {
      assert.equal(clientAddress({ remoteAddress, forwardedFor, trustedProxies: proxies }), expected);
    });
  }

  it('trusts nobody by default: X-Forwarded-For is ignored', () => {
    assert.equal(clientAddress({ remoteAddress: '10.0.0.1', forwardedFor: '198.51.100.4' }), '10.0.0.1');
  });

  it('takes CIDRs as strings too', () => {
    const got = clientAddress({
      remoteAddress: '10.0.0.1',
      forwardedFor: '1.2.3.4',
      trustedProxies: ['10.0.0.0/8'],
    });
    assert.equal(got, '1.2.3.4');
  });

  it('huge headers: bounded hops, bounded time, no crash', () => {
    const trustedChain = Array.from(
      { length: 200_000 },
      (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    );
    const many = `198.51.100.4, ${trustedChain.join(', ')}`;
    const started = performance.now();
    // Past maxHops the walk stops on a trusted hop rather than reading the whole header.
    const got = clientAddress({ remoteAddress: '10.0.0.1', forwardedFor: many, trustedProxies: proxies });
    assert.ok(got?.startsWith('10.'));
    assert.equal(
      clientAddress({ remoteAddress: '10.0.0.1', forwardedFor: many, trustedProxies: proxies, maxHops: 1e6 }),
      '198.51.100.4',
    );
    const junk = clientAddress({
      remoteAddress: '10.0.0.1',
      forwardedFor: 'x'.repeat(5_000_000),
      trustedProxies: proxies,
    });
    assert.equal(junk, '10.0.0.1');
    const lines = Array.from({ length: 10_000 }, () => '');
    assert.equal(
      clientAddress({ remoteAddress: '10.0.0.1', forwardedFor: lines, trustedProxies: proxies }),
      '10.0.0.1',
    );
    assert.ok(performance.now() - started < 2000);
  });

  it('random garbage never throws', () => {
    const alphabet = '0123456789abcdef:.,[]% \t\u00ff\u{1F600}xX-/';
    for (let i = 0; i < 5000; i++) {
      let s = '';
      const n = Math.floor(Math.random() * 60);
      for (let j = 0; j < n; j++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
      const got = clientAddress({ remoteAddress: '10.0.0.1', forwardedFor: s, trustedProxies: proxies });
      assert.equal(typeof got, 'string');
    }
  });

  it('refuses a bad trusted-proxy list at configuration time', () => {
    // An empty, signed or spaced prefix is no /0 (that would trust every address).
    const malformed = ['10.0.0.1/', '::1/', '10.0.0.0/+8', '10.0.0.0/ 8', '10.0.0.0/8.0', '10.0.0.0/0x8'];
    for (const bad of ['10.0.0.0/33', 'nonsense', '10.0.0.0/8/8', '::/129', '10.0.0.0/x', ...malformed]) {
      assert.throws(() => createTrustedProxies([bad]), { code: 'INVALID_ARGUMENT' }, bad);
    }
  });

  it('normalizes one client to one spelling', () => {
    assert.equal(normalizeAddress('2001:0DB8:0000::0001'), '2001:db8::1');
    assert.equal(normalizeAddress('0:0:0:0:0:ffff:c633:6404'), '198.51.100.4');
    assert.equal(normalizeAddress('::ffff:198.51.100.4'), '198.51.100.4');
  });
});

describe('rate limit keys', () => {
  const request = (remoteAddress: string, headers: Record<string, string> = {}) => ({
    remoteAddress,
    headers,
  });

  it('by address: trusted proxies honoured, IPv6 grouped per /64', () => {
    const key = byClientAddress({ trustedProxies: ['10.0.0.0/8'] });
    assert.equal(key(request('10.0.0.1', { 'x-forwarded-for': '198.51.100.4' })), 'ip:198.51.100.4');
    assert.equal(key(request('203.0.113.9', { 'x-forwarded-for': '198.51.100.4' })), 'ip:203.0.113.9');
    assert.equal(key(request('2001:db8:1:2:aaaa::1')), 'ip:2001:db8:1:2:0:0:0:0/64');
    assert.equal(key(request('2001:db8:1:2:bbbb::9')), key(request('2001:db8:1:2:cccc::7')));
    assert.equal(byClientAddress({ ipv6Prefix: 128 })(request('2001:db8::1')), 'ip:2001:db8::1');
  });

  it('maskIpv6 clears the bits past the prefix', () => {
    assert.equal(maskIpv6('2001:db8:abcd:ef12::1', 36), '2001:db8:a000:0:0:0:0:0/36');
    assert.equal(maskIpv6('::1', 0), '0:0:0:0:0:0:0:0/0');
    assert.equal(maskIpv6('fe80::', 10), 'fe80:0:0:0:0:0:0:0/10');
  });

  it('by API key: hashed, never the secret itself', () => {
    const key = byApiKey()(request('1.2.3.4', { 'x-api-key': 'sk_live_secret' }));
    assert.ok(key?.startsWith('apikey:'));
    assert.ok(!key?.includes('sk_live_secret'));
    assert.equal(byApiKey()(request('1.2.3.4')), undefined);
  });

  it('firstKey: user, else API key, else address', () => {
    type R = { remoteAddress: string; headers: Record<string, string>; user?: string };
    const key = firstKey<R>(
      byUser((r) => r.user),
      byApiKey(),
      byClientAddress(),
    );
    assert.equal(key({ ...request('1.2.3.4'), user: 'u1' }), 'user:u1');
    assert.match(key(request('1.2.3.4', { 'x-api-key': 'k' })) ?? '', /^apikey:/);
    assert.equal(key(request('1.2.3.4')), 'ip:1.2.3.4');
  });
});
