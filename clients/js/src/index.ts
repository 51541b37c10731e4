// mutexd: the client of the mutexd lock server. `mutex(key, task, { onError })`
// is the in-process keyed mutex, held across processes; `acquire`, `inspect`
// and `list` are the low-level calls.

export {
  acquire,
  Client,
  createMutex,
  DEFAULT_URL,
  defaultClient,
  inspect,
  list,
  mutex,
  type AcquireOptions,
  type ClientOptions,
  type LockInfo,
  type LockList,
  type MutexFn,
  type MutexOptions,
  type OnError,
  type TaskContext,
} from "./client.js";
export {
  AbortedError,
  ForbiddenError,
  InvalidRequestError,
  LeaseLostError,
  MutexdError,
  NotFoundError,
  NotHeldError,
  NotHolderError,
  SupersededError,
  LeaseEndedError,
  LimitMismatchError,
  DrainedError,
  ServerError,
  TimeoutError,
  TooManyKeysError,
  TooManySubscribersError,
  TooManyWaitersError,
  UnauthorizedError,
  UnavailableError,
} from "./errors.js";
export { Lease, safetyMarginMs, type Duration, type Outcome, type Previous } from "./lease.js";
export { type RetryPolicy } from "./transport.js";
