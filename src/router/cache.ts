/**
 * A bounded least-recently-used map. A Map keeps insertion order, so re-inserting on a hit moves an entry to the
 * young end and the oldest is always first.
 */
export class Lru<K, V> {
  private readonly map = new Map<K, V>();
  /**
   * The most recently used key, when known: using it again changes no order, so a key used over and over (one
   * prepared statement run again and again) costs a lookup, not a delete and an insert.
   */
  private newest: K | undefined = undefined;
  hits = 0;
  misses = 0;

  constructor(readonly capacity: number) {}

  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.moveToNewest(key, v);
    return v;
  }

  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    this.newest = key;
    if (this.map.size > this.capacity) this.delete(this.map.keys().next().value as K);
  }

  /** Membership without counting a hit or refreshing the entry. */
  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Marks `key` as just used (no-op when absent). */
  touch(key: K): void {
    if (key === this.newest) return;
    const v = this.map.get(key);
    if (v === undefined) return;
    this.moveToNewest(key, v);
  }

  private moveToNewest(key: K, v: V): void {
    if (key === this.newest) return;
    this.map.delete(key);
    this.map.set(key, v);
    this.newest = key;
  }

  delete(key: K): boolean {
    if (key === this.newest) this.newest = undefined;
    return this.map.delete(key);
  }

  clear(): void {
    this.map.clear();
    this.newest = undefined;
  }

  /** Keys from least to most recently used. */
  keys(): IterableIterator<K> {
    return this.map.keys();
  }

  get size(): number {
    return this.map.size;
  }
}

/**
 * A bounded cache for the per-statement hot path: a hit is one Map lookup, with no reordering. Entries live in a
 * young generation; when it fills, it becomes the old one (the previous old one is dropped) and hits there are
 * promoted. Statements in steady use therefore survive, and memory stays within twice the capacity.
 */
export class HotCache<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();
  hits = 0;
  misses = 0;

  constructor(readonly capacity: number) {}

  get(key: K): V | undefined {
    let v = this.young.get(key);
    if (v !== undefined) {
      this.hits++;
      return v;
    }
    v = this.old.get(key);
    if (v === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.set(key, v);
    return v;
  }

  set(key: K, value: V): void {
    if (this.young.size >= this.capacity) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, value);
  }

  get size(): number {
    return this.young.size + this.old.size;
  }
}
