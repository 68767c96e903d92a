import { setFlagsFromString } from 'node:v8'

/**
 * Turns off V8's allocation-site pretenuring for this process. V8 watches the
 * object and array literals of each allocation site; when most of those alive
 * at one scavenge survive it, the site is "tenured" for good and its objects
 * are allocated in the old generation from then on. A relay's per-message
 * objects die within microseconds, but the sites that make them (most in ws's
 * receiver and sender) were tenured in every run: they likely see phases
 * where they do not die young (the empty array a ws receiver keeps until its
 * connection's next message survives for every connection while pairs join;
 * a frame waits in a slow reader's write queue). Once tenured, every relay
 * allocates there: measured with bench/gc.ts (500 pairs, 5k/10k/15k
 * msg/s, 8 s each), about 250 bytes of each message promoted straight to die in
 * the old generation, and 2–7 mark-compacts of up to ~50 ms per sweep where
 * the floor has 0–1; without pretenuring, 7 bytes and none, like the floor.
 * Long-lived state here is made at the rate of joins, not of messages, and
 * still reaches the old generation the usual way (two scavenges). Set before
 * the first connection; the flag is read at each scavenge. Set by the
 * process entry (src/server.ts), not by a plugin: it is a setting of the whole
 * process, which an app embedding buildApp decides for itself.
 */
export function keepRelayGarbageYoung (): void {
  setFlagsFromString('--no-allocation-site-pretenuring')
}
