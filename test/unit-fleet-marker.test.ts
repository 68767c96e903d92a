import t from 'tap'
import { FleetMarker } from '../src/cluster/fleet-marker'

/*
 * The fleet marker's answers to "how long until a missing record is believed
 * again" and "has the loss been restored" (src/cluster/fleet-marker.ts; its
 * trust rules are tested in test/fence.test.ts).
 */

t.test('while a loss is being restored a missing record is never believed; after the restore, for doubtMs', async (t) => {
  let now = 1_000
  let losses = 0
  const marker = new FleetMarker(() => { losses++ }, 5_000, () => now)
  t.equal(marker.check('m1'), true)
  t.equal(marker.doubtLeft(), 0, 'believed from the start')
  await marker.settled(10_000) // nothing lost: resolves at once
  t.equal(marker.check(null), false)
  t.equal(losses, 1)
  t.equal(marker.restoring, true)
  t.equal(marker.doubtLeft(), Infinity, 'until restored, never')
  const settled = marker.settled(60_000)
  marker.adopt('m2')
  await settled
  t.equal(marker.restoring, false, 'a waiter wakes when the restore lands')
  t.equal(marker.doubtLeft(), 5_000)
  now += 3_000
  t.equal(marker.doubtLeft(), 2_000)
  t.equal(marker.check('m2'), false, 'still in doubt')
  now += 2_000
  t.equal(marker.doubtLeft(), 0)
  t.equal(marker.check('m2'), true)
})
