/** Where a running step shows how it is doing: each new line replaces the last; end() leaves the last one standing. */
export interface ProgressLine {
  show(line: string): void;
  end(): void;
}

const CLEAR_LINE = '\r\x1b[2K';

/**
 * Deploy output on a terminal: step lines scroll as usual, and the running step's progress (one line for its backend)
 * is redrawn in place below them, cut to the terminal's width so that it never wraps; when the step ends its last
 * progress line stays. A log file or CI gets no progress lines at all, only the step lines (see main.ts).
 */
export class TerminalProgress {
  private live: string | undefined;

  constructor(
    private readonly write: (text: string) => void,
    private readonly columns: () => number = () => 80,
  ) {}

  /** A permanent line, printed above the progress line. */
  readonly log = (line: string): void => {
    this.write(`${this.live === undefined ? '' : CLEAR_LINE}${line}\n${this.live ?? ''}`);
  };

  /** The progress line of a step that starts now. */
  line(): ProgressLine {
    return {
      show: (line) => {
        this.live = this.fit(line);
        this.write(`${CLEAR_LINE}${this.live}`);
      },
      end: () => {
        if (this.live !== undefined) this.write('\n');
        this.live = undefined;
      },
    };
  }

  private fit(line: string): string {
    const width = Math.max(20, this.columns() - 1);
    return line.length <= width ? line : `${line.slice(0, width - 1)}…`;
  }
}
