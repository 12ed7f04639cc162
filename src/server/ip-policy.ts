// SPDX-License-Identifier: MIT
// Which IP addresses the URL fetcher may connect to. An address is allowed only when it is public:
// every loopback, private, link-local, unspecified, multicast, broadcast, shared (CGNAT), reserved,
// documentation and benchmarking range is refused, IPv4 and IPv6 alike. IPv6 addresses that carry an
// IPv4 address (IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by that
// IPv4 address. IPv6 outside global unicast 2000::/3 is refused (default deny), and so are the
// special-purpose blocks inside it (Teredo, documentation, ORCHID, ...).
// Only dotted-decimal IPv4 (as resolvers and the WHATWG URL parser write it) and standard IPv6 text
// are read here; anything else is not an address and is never allowed.

/** The range an address falls in; only `public` is allowed. */
export type AddressRange =
  | 'public'
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'cgnat'
  | 'link-local'
  | 'multicast'
  | 'broadcast'
  | 'reserved'
  | 'documentation'
  | 'benchmarking'
  | 'teredo';

export interface AddressClassification {
  family: 4 | 6;
  range: AddressRange;
  /** Whether a connection to the address is allowed by the default policy (`range === 'public'`). */
  allowed: boolean;
  /** For IPv6 that embeds an IPv4 address: how, and the IPv4 address that was judged instead. */
  embedded?: { kind: 'ipv4-mapped' | 'nat64' | '6to4'; address: string };
}

interface Cidr {
  bytes: Uint8Array;
  bits: number;
  range: AddressRange;
}

/** Dotted-decimal IPv4, four parts, no leading zeros; undefined otherwise. */
export function parseIPv4(text: string): Uint8Array | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i] as string;
    if (!/^(0|[1-9]\d{0,2})$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

/** IPv6 text (`::` compression, a dotted IPv4 tail and a `%zone` suffix allowed); undefined otherwise. */
export function parseIPv6(text: string): Uint8Array | undefined {
  let rest = text;
  const zone = rest.indexOf('%');
  if (zone !== -1) {
    if (zone === rest.length - 1) return undefined;
    rest = rest.slice(0, zone);
  }
  // A dotted IPv4 tail stands for the last two groups.
  let tail: Uint8Array | undefined;
  const lastColon = rest.lastIndexOf(':');
  if (lastColon !== -1 && rest.indexOf('.', lastColon) !== -1) {
    tail = parseIPv4(rest.slice(lastColon + 1));
    if (!tail) return undefined;
    rest = rest.slice(0, lastColon + 1) + '0:0';
  }
  const halves = rest.split('::');
  if (halves.length > 2) return undefined;
  const groups = (half: string): number[] | undefined => {
    if (half === '') return [];
    const out: number[] = [];
    for (const group of half.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return undefined;
      out.push(parseInt(group, 16));
    }
    return out;
  };
  const head = groups(halves[0] as string);
  const back = halves.length === 2 ? groups(halves[1] as string) : [];
  if (!head || !back) return undefined;
  let all: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - back.length;
    if (missing < 1) return undefined;
    all = [...head, ...new Array<number>(missing).fill(0), ...back];
  } else {
    all = head;
  }
  if (all.length !== 8) return undefined;
  const bytes = new Uint8Array(16);
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  if (tail) bytes.set(tail, 12);
  return bytes;
}

function cidr(text: string, range: AddressRange): Cidr {
  const [address = '', bits = ''] = text.split('/');
  const bytes = parseIPv4(address) ?? parseIPv6(address);
  if (!bytes) throw new Error(`bad CIDR ${text}`);
  return { bytes, bits: Number(bits), range };
}

function inCidr(bytes: Uint8Array, block: Cidr): boolean {
  if (bytes.length !== block.bytes.length) return false;
  let bits = block.bits;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((bytes[i] as number) & mask) !== ((block.bytes[i] as number) & mask)) return false;
  }
  return true;
}

// First match wins (more specific blocks first where they overlap).
// prettier-ignore
const IPV4_BLOCKS: readonly Cidr[] = [
  cidr('255.255.255.255/32', 'broadcast'),
  cidr('0.0.0.0/8', 'unspecified'),        // "this network"; 0.0.0.0 connects to the local host
  cidr('10.0.0.0/8', 'private'),
  cidr('100.64.0.0/10', 'cgnat'),          // shared address space, RFC 6598
  cidr('127.0.0.0/8', 'loopback'),
  cidr('169.254.0.0/16', 'link-local'),    // cloud metadata endpoints live here
  cidr('172.16.0.0/12', 'private'),
  cidr('192.0.0.0/24', 'reserved'),        // IETF protocol assignments (DS-Lite, ...)
  cidr('192.0.2.0/24', 'documentation'),   // TEST-NET-1
  cidr('192.88.99.0/24', 'reserved'),      // former 6to4 relay anycast
  cidr('192.168.0.0/16', 'private'),
  cidr('198.18.0.0/15', 'benchmarking'),
  cidr('198.51.100.0/24', 'documentation'), // TEST-NET-2
  cidr('203.0.113.0/24', 'documentation'), // TEST-NET-3
  cidr('224.0.0.0/4', 'multicast'),
  cidr('240.0.0.0/4', 'reserved'),
];

// prettier-ignore
const IPV6_BLOCKS: readonly Cidr[] = [
  cidr('::/128', 'unspecified'),
  cidr('::1/128', 'loopback'),
  cidr('::/96', 'reserved'),               // IPv4-compatible (deprecated), never routed
  cidr('64:ff9b:1::/48', 'private'),       // local-use NAT64, RFC 8215
  cidr('100::/64', 'reserved'),            // discard-only
  cidr('2001::/32', 'teredo'),             // tunnels to hosts behind NAT; refused outright
  cidr('2001:2::/48', 'benchmarking'),
  cidr('2001:db8::/32', 'documentation'),
  cidr('2001::/23', 'reserved'),           // IETF protocol assignments (ORCHID, AMT, ...)
  cidr('3fff::/20', 'documentation'),
  cidr('5f00::/16', 'reserved'),           // SRv6 SIDs
  cidr('fc00::/7', 'private'),             // unique local
  cidr('fe80::/10', 'link-local'),
  cidr('fec0::/10', 'reserved'),           // site-local (deprecated)
  cidr('ff00::/8', 'multicast'),
];

const IPV4_MAPPED = cidr('::ffff:0:0/96', 'reserved');
const NAT64 = cidr('64:ff9b::/96', 'reserved');
const SIX_TO_FOUR = cidr('2002::/16', 'reserved');
const GLOBAL_UNICAST = cidr('2000::/3', 'public');

function classifyIPv4Bytes(bytes: Uint8Array): AddressRange {
  return IPV4_BLOCKS.find((block) => inCidr(bytes, block))?.range ?? 'public';
}

function result(
  family: 4 | 6,
  range: AddressRange,
  embedded?: AddressClassification['embedded'],
): AddressClassification {
  return embedded
    ? { family, range, allowed: range === 'public', embedded }
    : { family, range, allowed: range === 'public' };
}

/** The range of an IP address (IPv4 dotted decimal or IPv6 text); undefined when it is not one. */
export function classifyAddress(address: string): AddressClassification | undefined {
  const v4 = parseIPv4(address);
  if (v4) return result(4, classifyIPv4Bytes(v4));
  const v6 = parseIPv6(address);
  if (!v6) return undefined;
  const embed = (kind: 'ipv4-mapped' | 'nat64' | '6to4', bytes: Uint8Array) =>
    result(6, classifyIPv4Bytes(bytes), { kind, address: bytes.join('.') });
  if (inCidr(v6, IPV4_MAPPED)) return embed('ipv4-mapped', v6.subarray(12, 16));
  if (inCidr(v6, NAT64)) return embed('nat64', v6.subarray(12, 16));
  if (inCidr(v6, SIX_TO_FOUR)) return embed('6to4', v6.subarray(2, 6));
  const block = IPV6_BLOCKS.find((b) => inCidr(v6, b));
  if (block) return result(6, block.range);
  return result(6, inCidr(v6, GLOBAL_UNICAST) ? 'public' : 'reserved');
}

/** Whether the default policy allows connecting to `address` (false for anything not an IP address). */
export function isPublicAddress(address: string): boolean {
  return classifyAddress(address)?.allowed ?? false;
}

/**
 * The bytes of an address as hex: equal for equal addresses however they are written (an IPv4-mapped
 * IPv6 address has the key of its IPv4 address; a zone is ignored). Undefined for a non-address.
 */
export function addressKey(address: string): string | undefined {
  let bytes = parseIPv4(address) ?? parseIPv6(address);
  if (bytes?.length === 16 && inCidr(bytes, IPV4_MAPPED)) bytes = bytes.subarray(12, 16);
  return bytes ? Buffer.from(bytes).toString('hex') : undefined;
}
