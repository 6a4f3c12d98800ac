// One room's delivered stream: what was recovered after a reconnect and
// what arrives live merge into each message exactly once, in seq order.

const RECENT_IDS = 10_000;

/**
 * A room's position and the ids it delivered lately. `accept` says
 * whether a message is new (and moves the position past it); `joined`
 * takes a `joined` frame and returns its history's new messages and
 * whether messages were lost in between (a gap).
 */
export class Merge {
  /** @param {number} [recentIds] how many delivered ids to remember */
  constructor(recentIds = RECENT_IDS) {
    /** @type {{ epoch: string, seq: number } | null} */
    this.position = null;
    this.limit = recentIds;
    /** @type {Set<string>} delivered ids, oldest first */
    this.recent = new Set();
  }

  /**
   * Whether `m` is new: not delivered before by id, and past the position
   * in its epoch. A new one moves the position.
   * @param {{ id: string, seq?: number, epoch?: string }} m
   */
  accept(m) {
    if (typeof m.id !== 'string' || this.recent.has(m.id)) return false;
    const positioned = typeof m.seq === 'number' && m.seq > 0 && typeof m.epoch === 'string';
    const p = this.position;
    if (positioned && p && p.epoch === m.epoch && m.seq <= p.seq) return false;
    if (positioned) this.position = { epoch: /** @type {string} */ (m.epoch), seq: /** @type {number} */ (m.seq) };
    this.remember(m.id);
    return true;
  }

  /**
   * The `since` to rejoin with: the last position delivered, or null.
   */
  since() {
    return this.position ? { ...this.position } : null;
  }

  /**
   * Takes a `joined` answer: its history's new messages (in order) and
   * whether some were lost: asked `since` and not `recovered`, or a new
   * epoch under a known position.
   * @param {{ history?: any[], epoch?: string, seq?: number, recovered?: boolean }} f
   * @param {boolean} rejoined whether the join asked `since`
   */
  joined(f, rejoined) {
    const before = this.position;
    const gap = rejoined && (f.recovered !== true || (!!before && typeof f.epoch === 'string' && f.epoch !== before.epoch));
    if (gap) this.position = null;
    const fresh = [];
    for (const m of Array.isArray(f.history) ? f.history : []) {
      if (m && this.accept(m)) fresh.push(m);
    }
    // The room's position when joined: live messages come after it.
    if (typeof f.epoch === 'string' && typeof f.seq === 'number') {
      const p = this.position;
      if (!p || p.epoch !== f.epoch || f.seq > p.seq) this.position = { epoch: f.epoch, seq: f.seq };
    }
    return { messages: fresh, gap };
  }

  /** @param {string} id */
  remember(id) {
    this.recent.add(id);
    if (this.recent.size > this.limit) {
      const oldest = this.recent.values().next().value;
      if (oldest !== undefined) this.recent.delete(oldest);
    }
  }
}
