// SPDX-License-Identifier: MIT
// Facts about the machine and the runtimes, recorded beside every benchmark figure.
import fs from 'node:fs';
import os from 'node:os';
import sharp from 'sharp';

export interface MachineFacts {
  cpu: string;
  /** Logical CPUs the process may use. */
  cpus: number;
  /** Physical cores (from /proc/cpuinfo), when known. */
  physicalCores: number | null;
  /** SIMD extensions that matter for these kernels. */
  simd: string[];
  memoryGiB: number;
  os: string;
  node: string;
  sharp: string;
  libvips: string;
  libtorch: string | null;
  onnxruntime: string | null;
  python: Record<string, unknown> | null;
}

function cpuInfo(): { physicalCores: number | null; simd: string[] } {
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
    const wanted = ['avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx_vnni', 'amx_tile'];
    return { physicalCores: cores.size || null, simd: wanted.filter((f) => flags.includes(f)) };
  } catch {
    return { physicalCores: null, simd: [] };
  }
}

export function machineFacts(
  runtimes: Pick<MachineFacts, 'libtorch' | 'onnxruntime' | 'python'>,
): MachineFacts {
  const { physicalCores, simd } = cpuInfo();
  return {
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    cpus: os.availableParallelism(),
    physicalCores,
    simd,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    sharp: sharp.versions.sharp ?? 'unknown',
    libvips: sharp.versions.vips,
    ...runtimes,
  };
}

/** The 1-minute load average: above the core count, timings are disturbed by other work. */
export function load1(): number {
  return Math.round(os.loadavg()[0]! * 100) / 100;
}
