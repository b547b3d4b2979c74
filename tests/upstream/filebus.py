"""Stands in for the `filebus` module when the original's own test suite
(test_filebus.py of filebus 0.3.5, run by tests/upstream.rs) is pointed at
this project.

The suite starts every participant as `sys.executable filebus.__file__
ARGS...`. Run that way, this file replaces itself with the program chosen for
the participant's role: the path in FILEBUS_UPSTREAM_PRODUCER or
FILEBUS_UPSTREAM_CONSUMER, so that any mix of implementations can be tested
without touching the suite. PYTHONPATH, which put this file in the suite's
way, is removed from the program's environment so that the original's
`filebus` command imports its real module. When FILEBUS_UPSTREAM_LOG is set, it appends one
line per launch, "ROLE PROGRAM", so the harness can check what really ran.
Imported, it defines nothing: the suite uses only `__file__`.
"""

import os
import sys

if __name__ == "__main__":
    args = sys.argv[1:]
    roles = [arg for arg in args if arg in ("producer", "consumer")]
    if len(roles) != 1:
        sys.exit("filebus shim: expected one of producer, consumer in %r" % args)
    program = os.environ["FILEBUS_UPSTREAM_" + roles[0].upper()]
    log = os.environ.get("FILEBUS_UPSTREAM_LOG")
    if log:
        with open(log, "a") as f:
            f.write("%s %s\n" % (roles[0], program))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    os.execve(program, [program] + args, env)
