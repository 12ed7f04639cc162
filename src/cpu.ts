// SPDX-License-Identifier: MIT
// What the CPU can do, from /proc/cpuinfo (Linux; elsewhere nothing is known).
import fs from 'node:fs';

export interface CpuInfo {
  /** Physical cores, when known. */
  physicalCores: number | null;
  /** The first CPU's feature flags, as the kernel names them (avx512_bf16, amx_bf16, ...). */
  flags: string[];
}

let cached: CpuInfo | undefined;

export function cpuInfo(): CpuInfo {
  if (cached) return cached;
  try {
    const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const cores = new Set<string>();
    let physical = '';
    for (const line of text.split('\n')) {
      const [key, value] = line.split(':').map((s) => s.trim());
      if (key === 'physical id') physical = value ?? '';
      if (key === 'core id') cores.add(`${physical}/${value}`);
    }
    const flags = /^flags\s*:(.*)$/m.exec(text)?.[1]?.trim().split(/\s+/) ?? [];
    cached = { physicalCores: cores.size || null, flags };
  } catch {
    cached = { physicalCores: null, flags: [] };
  }
  return cached;
}

/**
 * Whether the CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16), which precision 'bf16' needs:
 * without it oneDNN would emulate bf16 with float32 instructions, slower than float32 itself.
 */
export function cpuHasBf16(): boolean {
  const { flags } = cpuInfo();
  return flags.includes('avx512_bf16') || flags.includes('amx_bf16');
}
