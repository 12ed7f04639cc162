// SPDX-License-Identifier: MIT
// Facts about the machine and the runtimes, recorded beside every benchmark figure.
import fs from 'node:fs';
import os from 'node:os';
import sharp from 'sharp';
import { cpuInfo } from '../cpu';

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
  /** libjpeg-turbo's version in the addon's JPEG fast path, when the run used it (absent in older reports). */
  jpeg?: string | null;
  /** Little CMS's version in the fast path, which converts JPEGs with an ICC profile (absent: it did not). */
  lcms?: string;
  /**
   * Whether every engine's detector decoded with the fast path (its own module since; before, only the
   * LibTorch engines' did: absent).
   */
  jpegAllEngines?: boolean;
  onnxruntime: string | null;
  python: Record<string, unknown> | null;
}

export function machineFacts(
  runtimes: Pick<MachineFacts, 'libtorch' | 'jpeg' | 'lcms' | 'jpegAllEngines' | 'onnxruntime' | 'python'>,
): MachineFacts {
  const { physicalCores, flags } = cpuInfo();
  const wanted = ['avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx_vnni', 'amx_tile'];
  const simd = wanted.filter((f) => flags.includes(f));
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

/** CPU time used on the whole machine and by the given processes up to one instant (Linux /proc). */
export interface CpuSnapshot {
  at: number;
  /** Clock ticks (USER_HZ) the machine's CPUs were busy, and those the hypervisor stole. */
  busy: number;
  steal: number;
  /** Clock ticks used by the given processes (all their threads). */
  ours: number;
}

/** How much CPU other processes used between two snapshots, in CPUs (1 = one CPU all the time). */
export interface CpuShare {
  others: number;
  steal: number;
}

const USER_HZ = 100;

function processTicks(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

/** A snapshot of CPU time, or undefined where /proc is not there. */
export function cpuSnapshot(pids: readonly number[]): CpuSnapshot | undefined {
  let line: string | undefined;
  try {
    line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  } catch {
    return undefined;
  }
  if (!line?.startsWith('cpu ')) return undefined;
  // user nice system idle iowait irq softirq steal (guest time is already counted in user)
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  return {
    at: performance.now(),
    busy: (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0),
    steal: steal ?? 0,
    ours: pids.reduce((t, pid) => t + processTicks(pid), 0),
  };
}

/** The CPU that processes other than ours used (and the hypervisor stole) between two snapshots. */
export function cpuShare(from: CpuSnapshot, to: CpuSnapshot): CpuShare {
  const seconds = Math.max(1e-3, (to.at - from.at) / 1000);
  const round = (x: number) => Math.round(Math.max(0, x) * 100) / 100;
  return {
    others: round((to.busy - from.busy - (to.ours - from.ours)) / USER_HZ / seconds),
    steal: round((to.steal - from.steal) / USER_HZ / seconds),
  };
}
