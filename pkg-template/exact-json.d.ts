/** A JSON value as `parseExact` returns it: unsafe integers become `bigint`. */
export type ExactJsonValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | ExactJsonValue[]
  | { [key: string]: ExactJsonValue };

/** True when this engine passes `context.source` to `JSON.parse` revivers. */
export declare const hasSourceText: boolean;

/**
 * Parses JSON text like `JSON.parse`, except that an integer literal outside
 * `Number.MIN_SAFE_INTEGER..MAX_SAFE_INTEGER` becomes an exact `bigint`.
 */
export declare function parseExact(text: string): ExactJsonValue;

/** The engine-independent fallback of `parseExact` (exported for tests). */
export declare function parseExactFallback(text: string): ExactJsonValue;
