'use strict';
// Hearth run prelude for Node (loaded with --require before the user's script).
// Defines the global `result` and records what it is given in the file `result` next to
// this prelude: a per-run directory with an unguessable name that only the agent creates.
// Output is never parsed, so nothing the script prints can forge a result.
(() => {
  const fs = require('fs');
  const path = require('path');
  const file = path.join(__dirname, 'result');
  const state = {};
  const save = () => fs.writeFileSync(file, JSON.stringify(state));
  const toError = (e) =>
    e !== null && typeof e === 'object' && 'message' in e
      ? {
          name: String(e.name ?? 'Error'),
          message: String(e.message),
          stack: e.stack == null ? undefined : String(e.stack),
        }
      : { name: 'Error', message: String(e) };
  // Throws to the caller for values JSON cannot hold (BigInt, cycles).
  const toJson = (value) => {
    const json = JSON.stringify(value);
    return json === undefined ? null : JSON.parse(json);
  };
  const result = Object.freeze({
    set(value) {
      state.result = toJson(value);
      save();
    },
    // The value as given (an Error becomes {name, message, stack}); the run then exits
    // 1 unless the script exits with a code of its own.
    error(err) {
      state.error = err instanceof Error ? toError(err) : toJson(err);
      save();
      if (!process.exitCode) process.exitCode = 1;
    },
  });
  Object.defineProperty(globalThis, 'result', { value: result, enumerable: false });
  // The monitor observes uncaught exceptions (and unhandled rejections) without changing
  // Node's own handling: it still prints the stack and exits non-zero.
  process.on('uncaughtExceptionMonitor', (err) => {
    state.error = toError(err);
    try {
      save();
    } catch (_) {}
  });
})();
