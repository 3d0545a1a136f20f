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
  const result = Object.freeze({
    set(value) {
      // Throws to the caller for values JSON cannot hold (BigInt, cycles).
      const json = JSON.stringify(value);
      state.result = json === undefined ? null : JSON.parse(json);
      save();
    },
    error(err) {
      state.error = toError(err);
      save();
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
