/** Edits (insert, delete, replace, swap two neighbours) that turn `a` into `b`. */
function distance(a: string, b: string): number {
  const rows: number[][] = [Array.from({ length: b.length + 1 }, (_, index) => index)];
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    const above = rows[i - 1] ?? [];
    for (let j = 1; j <= b.length; j++) {
      let best = Math.min((above[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (above[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, (rows[i - 2]?.[j - 2] ?? 0) + 1);
      row[j] = best;
    }
    rows.push(row);
  }
  return rows[a.length]?.[b.length] ?? 0;
}

/**
 * The candidate the user most likely meant by `word` (a typo, another case, a part of the name), or undefined when
 * none is near: within a third of the word's length in edits (at least 1), or containing it (4 letters or more).
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const typed = word.toLowerCase();
  let best: { candidate: string; score: number } | undefined;
  for (const candidate of candidates) {
    const name = candidate.toLowerCase();
    const edits = distance(typed, name);
    const near = edits <= Math.max(1, Math.round(typed.length / 3)) || (typed.length >= 4 && name.includes(typed));
    if (near && (best === undefined || edits < best.score)) best = { candidate, score: edits };
  }
  return best?.candidate;
}

/** ' (did you mean X?)', or '' when nothing is near. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const found = closest(word, candidates);
  return found === undefined || found === word ? '' : ` (did you mean ${found}?)`;
}
