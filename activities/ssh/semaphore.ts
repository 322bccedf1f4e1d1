/**
 * Counts concurrent channels on one connection. The limit can only go down: when the server refuses a channel,
 * the pool learns the server's real MaxSessions and stays below it for the rest of the connection's life.
 */
export class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(private limit: number) {}

  /** Channels currently held. */
  get inUse(): number {
    return this.active;
  }

  /** Callers waiting for a slot. */
  get waiting(): number {
    return this.waiters.length;
  }

  get capacity(): number {
    return this.limit;
  }

  /** Waits for a free slot; the returned function frees it (calling it twice frees it once). */
  async acquire(): Promise<() => void> {
    while (this.active >= this.limit) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active--;
      this.waiters.shift()?.();
    };
  }

  /** Lowers the limit (never below 1); holders above it finish normally, newcomers wait. */
  lower(limit: number): void {
    this.limit = Math.max(1, Math.min(this.limit, limit));
  }
}
