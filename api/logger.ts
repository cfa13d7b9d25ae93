// The logging surface our modules need; pino's Logger satisfies it, and tests can pass
// anything with these three methods.
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
