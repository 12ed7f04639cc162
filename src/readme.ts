// SPDX-License-Identifier: MIT
// Regenerated README sections: `facedet eval --readme FILE` and `facedet bench --readme FILE` write
// their tables between `<!-- name:start -->` and `<!-- name:end -->`, so numbers are never edited by hand.
import fs from 'node:fs';

export function replaceReadmeSection(file: string, name: string, content: string): void {
  const text = fs.readFileSync(file, 'utf8');
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from < 0 || to < from) throw new Error(`${file} has no "${start}" ... "${end}" section`);
  fs.writeFileSync(file, `${text.slice(0, from + start.length)}\n${content.trim()}\n${text.slice(to)}`);
}
