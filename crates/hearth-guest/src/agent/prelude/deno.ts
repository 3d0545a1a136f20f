// Hearth run prelude for Deno (loaded with --preload before the user's module). Defines
// the global `result`; results go to the file `result` next to this prelude (a per-run
// directory with an unguessable name, the only file outside /workspace the run may
// write); output is never parsed, so nothing the script prints can forge a result.
const FILE = new URL("./result", import.meta.url).pathname;
const state: Record<string, unknown> = {};
const save = () => Deno.writeTextFileSync(FILE, JSON.stringify(state));
const toError = (e: unknown) =>
  e !== null && typeof e === "object" && "message" in e
    ? {
      name: String((e as Error).name ?? "Error"),
      message: String((e as Error).message),
      stack: (e as Error).stack == null ? undefined : String((e as Error).stack),
    }
    : { name: "Error", message: String(e) };
// Throws to the caller for values JSON cannot hold (BigInt, cycles).
const toJson = (value: unknown) => {
  const json = JSON.stringify(value);
  return json === undefined ? null : JSON.parse(json);
};
const result = Object.freeze({
  set(value: unknown) {
    state.result = toJson(value);
    save();
  },
  // The value as given (an Error becomes {name, message, stack}); the run then exits 1
  // unless the script exits with a code of its own.
  error(err: unknown) {
    state.error = err instanceof Error ? toError(err) : toJson(err);
    save();
    if (!Deno.exitCode) Deno.exitCode = 1;
  },
});
Object.defineProperty(globalThis, "result", { value: result, enumerable: false });
// Observe uncaught errors without preventing Deno's own report and non-zero exit. A
// throw at the top level of the main module arrives as an unhandled rejection.
globalThis.addEventListener("error", (ev) => {
  state.error = toError((ev as ErrorEvent).error);
  save();
});
globalThis.addEventListener("unhandledrejection", (ev) => {
  state.error = toError((ev as PromiseRejectionEvent).reason);
  save();
});
