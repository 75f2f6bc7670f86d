/**
 * The fence check every store runs inside a fenced write's transaction (see `Fence` in
 * store.ts): the lease must still be held with the fence's token and not have lapsed.
 *
 * Tokens alone decide who is current: a lease's token rises with every new holder, and also
 * when its holder takes it again after it lapsed or was released, so a token that is still the
 * lease's and not lapsed names exactly one term of one holder. The lapse is judged by the
 * writing process's clock (`now`), as `acquireLease` judges it by the caller's: a term is over
 * for writes at the moment another process could take the lease.
 */
import { RoostError, invalidOption } from '../errors.js';
import type { Fence, Lease } from './store.js';

/** Why a fence did not hold. */
export type FenceFailure = 'no_lease' | 'superseded' | 'released' | 'lapsed';

/** Returns `fence` when it is `{ name: string, token: integer }`, else throws `ROOST_ERR_INVALID_OPTION`. */
export function checkFence(fence: unknown): Fence {
  if (typeof fence !== 'object' || fence === null) throw invalidOption('fence', 'an object { name, token }', fence);
  const { name, token } = fence as Record<string, unknown>;
  if (typeof name !== 'string' || name.length === 0) throw invalidOption('fence.name', 'a lease name (a non-empty string)', name);
  if (typeof token !== 'number' || !Number.isSafeInteger(token) || token < 1) throw invalidOption('fence.token', 'a lease token (an integer from 1)', token);
  return fence as Fence;
}

/**
 * Throws `ROOST_ERR_FENCED` unless `current` (the lease row as the transaction sees it, locked
 * where the store has row locks; null when there is none) holds `fence` at `now`.
 */
export function assertFence(fence: Fence, current: Pick<Lease, 'holder' | 'token' | 'until'> | null, now: number): void {
  if (current !== null && current.token === fence.token && current.until > now) return;
  const failure: FenceFailure =
    current === null ? 'no_lease' : current.token !== fence.token ? 'superseded' : current.until === 0 ? 'released' : 'lapsed';
  const why = {
    no_lease: 'there is no such lease',
    superseded: `a newer term holds it, with token ${current?.token}`,
    released: 'it was released',
    lapsed: 'it lapsed',
  }[failure];
  throw new RoostError('ROOST_ERR_FENCED', `lease ${fence.name}: token ${fence.token} no longer holds it (${why}); the write was refused`, {
    field: 'fence',
    details: {
      lease: fence.name,
      token: fence.token,
      currentToken: current?.token ?? null,
      currentHolder: current?.holder ?? null,
      until: current?.until ?? null,
      failure,
    },
  });
}
