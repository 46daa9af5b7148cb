/**
 * Every error the project raises on purpose carries a stable `code` (SCREAMING_SNAKE, never
 * reworded once shipped) so callers, tests and operators can branch on it, and a message that
 * says what was wrong and what to do about it.
 */
export class GanError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GanError';
    this.code = code;
  }
}

/** Raised for bad user input: flags, config files, data files. */
export class ConfigError extends GanError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'ConfigError';
  }
}

/** Raised when a data source cannot be read or is malformed. */
export class DataError extends GanError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'DataError';
  }
}

/** Raised for frames and peers that break the wire protocol. */
export class ProtocolError extends GanError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'ProtocolError';
  }
}
