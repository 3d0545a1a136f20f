"""Hearth run wrapper for Python.

Makes `result` a builtin (and `import hearth_result` / `from hearth_result import result`
work), then runs the user's script as `__main__`. Results go to the file `result` next to
this wrapper: a per-run directory with an unguessable name that only the agent creates.
Output is never parsed, so nothing the script prints can forge a result.
"""
import builtins
import json
import os
import runpy
import sys
import traceback
import types

_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "result")
_state = {}


def _save():
    with open(_FILE, "w") as f:
        json.dump(_state, f)


def _error_of(exc, tb=None):
    if isinstance(exc, BaseException):
        lines = traceback.format_exception(type(exc), exc, tb or exc.__traceback__)
        return {"name": type(exc).__name__, "message": str(exc), "stack": "".join(lines)}
    return {"name": "Error", "message": str(exc)}


class _Result:
    def set(self, value):
        # Raises to the caller for values JSON cannot hold.
        _state["result"] = json.loads(json.dumps(value, allow_nan=False))
        _save()

    def error(self, err):
        # The value as given (an exception becomes {name, message, stack}); raises to the
        # caller for values JSON cannot hold. The run then exits 1 unless the script
        # exits with a code of its own.
        if isinstance(err, BaseException):
            _state["error"] = _error_of(err)
        else:
            _state["error"] = json.loads(json.dumps(err, allow_nan=False))
        _save()


result = _Result()
_module = types.ModuleType("hearth_result")
_module.result = result
_module.set = result.set
_module.error = result.error
sys.modules["hearth_result"] = _module
builtins.result = result


def _main():
    target, mode = sys.argv[1], sys.argv[2]
    sys.argv = [target] + sys.argv[3:]
    sys.path[0] = "/workspace" if mode == "code" else os.path.dirname(target)
    try:
        runpy.run_path(target, run_name="__main__")
        if "error" in _state:
            sys.exit(1)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        # Drop the wrapper's and runpy's frames so the stack starts in user code.
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != target:
            tb = tb.tb_next
        tb = tb or exc.__traceback__
        _state["error"] = _error_of(exc, tb)
        _save()
        traceback.print_exception(type(exc), exc, tb)
        sys.exit(1)


_main()
