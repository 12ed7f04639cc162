// SPDX-License-Identifier: MIT
// The PyTorch baseline process (scripts/bench_pytorch.py): one JSON request per line on its stdin, one
// JSON reply per line on its stdout. It stays up for the whole benchmark so its timings interleave
// with ours.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

export interface PythonReply {
  ok: boolean;
  error?: string;
  [key: string]: unknown;
}

export class PythonBaseline {
  private readonly waiting: ((reply: PythonReply) => void)[] = [];
  private stderr = '';
  private exited: string | undefined;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      let reply: PythonReply;
      try {
        reply = JSON.parse(line) as PythonReply;
      } catch {
        reply = { ok: false, error: `unexpected output: ${line.slice(0, 200)}` };
      }
      this.waiting.shift()?.(reply);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4000);
    });
    const fail = (why: string) => {
      this.exited ??= why;
      for (const resolve of this.waiting.splice(0)) resolve({ ok: false, error: this.describe() });
    };
    child.on('error', (error) => fail(error.message));
    child.on('exit', (code, signal) => fail(`exited with ${signal ?? `code ${code}`}`));
  }

  /** The process id of the Python process (undefined if it could not start). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  static start(python: string, packageRoot: string): PythonBaseline {
    const script = path.join(packageRoot, 'scripts', 'bench_pytorch.py');
    // OpenBLAS on one thread unless the caller says otherwise: the baseline's best setting here. Eager
    // PyTorch runs some convolutions through BLAS, and OpenBLAS's threads then busy-wait beside
    // PyTorch's OpenMP threads on the same CPUs: measured on 2 CPUs under steady runs, MobileNet0.25 512²
    // network 48 ms with its default threads, 9.9 ms with one (ResNet50 512²: 161 and 158 ms).
    const env = { ...process.env, OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? '1' };
    const child = spawn(python, ['-u', script], { stdio: ['pipe', 'pipe', 'pipe'], env });
    return new PythonBaseline(child);
  }

  private describe(): string {
    const tail = this.stderr.trim().split('\n').slice(-3).join(' | ');
    return `the PyTorch baseline process ${this.exited ?? 'failed'}${tail ? `: ${tail}` : ''}`;
  }

  request(message: Record<string, unknown>): Promise<PythonReply> {
    if (this.exited) return Promise.resolve({ ok: false, error: this.describe() });
    return new Promise<PythonReply>((resolve) => {
      this.waiting.push(resolve);
      this.child.stdin.write(JSON.stringify(message) + '\n');
    });
  }

  /** Like request(), but throws the process's error. */
  async call(message: Record<string, unknown>): Promise<PythonReply> {
    const reply = await this.request(message);
    if (!reply.ok) throw new Error(reply.error ?? 'PyTorch baseline error');
    return reply;
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end(JSON.stringify({ op: 'quit' }) + '\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await done;
    clearTimeout(timer);
  }
}
