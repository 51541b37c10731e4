// The errors of the client: one class per kind of answer, so callers test
// with instanceof and never compare codes or statuses. The mapping from the
// API's codes to classes lives here and nowhere else (errorFor).

/**
 * MutexdError is the base of every error this package throws: an answer
 * from the server (`status` is its HTTP status, `code` its "error" field),
 * or a failure to reach it (`status` 0, `code` "unreachable").
 */
export class MutexdError extends Error {
  /** The API's error code ("timeout", "not_holder", "invalid_ttl", ...). */
  readonly code: string;
  /** The HTTP status; 0 when no answer came. */
  readonly status: number;
  /** The X-Request-Id the server answered with, for its logs; "" if none. */
  readonly requestId: string;
  /** The Retry-After header in milliseconds; 0 when absent. */
  readonly retryAfterMs: number;
  /** The queue length a 423 timeout reports; 0 otherwise. */
  readonly waiters: number;

  constructor(message: string, init: ErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code ?? "error";
    this.status = init.status ?? 0;
    this.requestId = init.requestId ?? "";
    this.retryAfterMs = init.retryAfterMs ?? 0;
    this.waiters = init.waiters ?? 0;
  }
}

/** The fields an error is built from. */
export interface ErrorInit {
  code?: string;
  status?: number;
  requestId?: string;
  retryAfterMs?: number;
  waiters?: number;
  cause?: unknown;
}

/** 423 timeout: the lock was not granted within the acquire's wait (at once for wait 0). */
export class TimeoutError extends MutexdError {}
/** 409 aborted: the wait was aborted because the holder of an on_error=stop key failed. */
export class AbortedError extends MutexdError {}
/** 409 not_holder: the token is not the live lease any more (expired, released, force-released, or wrong). */
export class NotHolderError extends MutexdError {}
/** 409 superseded: a later acquire with the same request_id took this one's place in the queue. */
export class SupersededError extends MutexdError {}
/** 409 lease_ended: the acquire was sent again with its request_id after the lease it had been granted ended. */
export class LeaseEndedError extends MutexdError {}
/** 409 limit_mismatch: the acquire's limit differs from the one the key's holders and waiters use. */
export class LimitMismatchError extends MutexdError {}
/** 409 drained: an operator emptied the key's queue. */
export class DrainedError extends MutexdError {}
/** 404 not_held: a force-release found nobody holding the key. */
export class NotHeldError extends MutexdError {}
/** 429 too_many_waiters: the server's waiter limit is reached; retry later. */
export class TooManyWaitersError extends MutexdError {}
/** 429 too_many_keys: the server's active-key limit is reached; retry later. */
export class TooManyKeysError extends MutexdError {}
/** 429 too_many_subscribers: too many event streams are open. */
export class TooManySubscribersError extends MutexdError {}
/**
 * 503 (unavailable, too_many_requests, fences_exhausted), or the server
 * could not be reached at all (code "unreachable", status 0), after the
 * retries were spent.
 */
export class UnavailableError extends MutexdError {}
/** 401 unauthorized: a bearer token is required and none or a wrong one was sent. */
export class UnauthorizedError extends MutexdError {}
/** 403 forbidden: this call needs an admin token. */
export class ForbiddenError extends MutexdError {}
/**
 * Any 400 (invalid_key, invalid_ttl, invalid_parameter, ...) or 413, or a
 * parameter the client refused to send.
 */
export class InvalidRequestError extends MutexdError {}
/** 404 not_found, 405 method_not_allowed: the URL does not lead to a mutexd API (a wrong base path?). */
export class NotFoundError extends MutexdError {}
/** 500 internal, or an answer that is not mutexd's (a proxy's page, a malformed body). */
export class ServerError extends MutexdError {}
/**
 * The lease can no longer be proven live: a renewal was refused, or none
 * succeeded before its deadline minus the safety margin. `mutex` rejects
 * with it after the task settles; the task's own error, if any, is `cause`.
 */
export class LeaseLostError extends MutexdError {}

type ErrorClass = new (message: string, init?: ErrorInit) => MutexdError;

const byCode: Record<string, ErrorClass> = {
  timeout: TimeoutError,
  aborted: AbortedError,
  not_holder: NotHolderError,
  superseded: SupersededError,
  lease_ended: LeaseEndedError,
  limit_mismatch: LimitMismatchError,
  drained: DrainedError,
  not_held: NotHeldError,
  too_many_waiters: TooManyWaitersError,
  too_many_keys: TooManyKeysError,
  too_many_subscribers: TooManySubscribersError,
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  method_not_allowed: NotFoundError,
};

const byStatus: Record<number, ErrorClass> = {
  400: InvalidRequestError,
  401: UnauthorizedError,
  403: ForbiddenError,
  404: NotFoundError,
  413: InvalidRequestError,
  431: InvalidRequestError,
  503: UnavailableError,
};

/**
 * The status an error code has on a plain answer: a streaming acquire
 * reports its outcome inside a 200 stream, and the error still carries the
 * status the same failure has everywhere else.
 */
export const statusOfCode: Record<string, number> = {
  timeout: 423,
  aborted: 409,
  not_holder: 409,
  superseded: 409,
  lease_ended: 409,
  limit_mismatch: 409,
  drained: 409,
  too_many_waiters: 429,
  too_many_keys: 429,
  unavailable: 503,
  too_many_requests: 503,
  fences_exhausted: 503,
  internal: 500,
};

/** errorFor builds the typed error for an API error answer. */
export function errorFor(status: number, code: string, message: string, init: ErrorInit = {}): MutexdError {
  const cls = byCode[code] ?? byStatus[status] ?? ServerError;
  const text = `${message.replace(/\.$/, "")} (${status} ${code})`;
  return new cls(text, { ...init, code, status });
}
