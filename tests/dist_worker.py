"""Run by ``torchrun`` from tests/test_distributed.py: joins the process group once, then runs
each mdlsae command of a JSON list in turn (rank 0 saves each one's stdout), optionally
killing one rank (SIGKILL, no clean-up) when it reaches a chosen phase.

    torchrun --nproc-per-node N tests/dist_worker.py PLAN.json
    PLAN: {"commands": [[argv...], ...], "out": DIR, "kill": {"rank": 1, "at": "scan"|"write"}}
"""

import contextlib
import io
import json
import os
import signal
import sys
from pathlib import Path

from mdlsae import cli, distributed


def die(*_, **__):
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    plan = json.loads(Path(sys.argv[1]).read_text())
    distributed.init(required=True)
    kill = plan.get("kill")
    if kill and distributed.rank() == kill["rank"]:
        if kill["at"] == "scan":  # inside the measuring pass
            import mdlsae.measure.dl as dl

            dl.select_quantize = die
        else:  # copying its chunks into rank 0's temporary output
            import shutil

            shutil.copyfileobj = die
    for i, argv in enumerate(plan["commands"]):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = cli.main(argv)
        if distributed.is_main():
            Path(plan["out"], f"{i}.out").write_text(buf.getvalue())
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
