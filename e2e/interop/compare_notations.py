"""Holds keeper-operator's notation resolver against the official Python SDK's answers.

Usage: compare_notations.py STATE_DIR TABLE OPERATOR_BIN

Reads STATE_DIR/notations-python.json (written by python_sdk_test.py from TABLE) and resolves
every notation of TABLE with `OPERATOR_BIN keeper get` against the same test server and app.
Values are compared after normalising JSON (the SDK writes `{"a": 1}`, the operator `{"a":1}`).
One deliberate difference is allowed: where the SDK answers no value at all (a property no
value has), the operator refuses (an empty secret is never written), so [] matches an error.
Prints one line per notation and a summary; exits non-zero on any mismatch.
"""

import json
import os
import subprocess
import sys


def normalise(value):
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if isinstance(parsed, (dict, list)):
        return json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    return value


def ours(state_dir, operator_bin, text):
    result = subprocess.run(
        [operator_bin, "keeper", "--config", os.path.join(state_dir, "config.b64"),
         "--ca-file", os.path.join(state_dir, "ca.pem"), "get", text],
        capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return {"values": result.stdout.splitlines()}


def same(sdk, mine):
    if "error" in sdk or "error" in mine:
        return ("error" in sdk and "error" in mine) or (sdk.get("values") == [] and "error" in mine)
    return [normalise(v) for v in sdk["values"]] == [normalise(v) for v in mine["values"]]


def main():
    state_dir, table, operator_bin = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(os.path.join(state_dir, "notations-python.json")) as f:
        sdk_answers = json.load(f)
    with open(table) as f:
        notations = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    failed = 0
    for text in notations:
        sdk, mine = sdk_answers[text], ours(state_dir, operator_bin, text)
        if same(sdk, mine):
            outcome = "error" if "error" in mine else f"{len(mine['values'])} value(s)"
            print(f"ok - notations: {text} ({outcome} on both sides)", flush=True)
        else:
            failed += 1
            # Only the shape goes to the log: these are test values, but keep the habit.
            print(f"FAILED - notations: {text}: SDK {shape(sdk)}, operator {shape(mine)}", flush=True)
    print(f"notations: {len(notations) - failed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


def shape(answer):
    if "error" in answer:
        return f"error ({answer['error']})"
    return f"{len(answer['values'])} value(s) of lengths {[len(v) for v in answer['values']]}"


if __name__ == "__main__":
    main()
