"""Quick local load: pre-sign N unique events, drive `ciolake serve` with wrk, count what landed.

Usage: .venv/bin/python bench/quick_load.py [--events 20000] [--connections 64] [--seconds 15]
Prints events/s answered 200 (fsync on), Delta commits and data files per table.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ciolake.events.samples import sample_event, schema_by_name, schema_keys  # noqa: E402
from ciolake.lake.inventory import summarize  # noqa: E402
from ciolake.verify import sign  # noqa: E402
from tests.support import TEST_KEY, start_server, wait_until_committed  # noqa: E402

LUA = """
local requests = {}
local index = 0
init = function(args)
  for line in io.lines("%s") do
    local ts, sig, body = line:match("^(%%d+)\\t(%%x+)\\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", "/webhooks/customerio",
      {["Content-Type"] = "application/json", ["X-CIO-Timestamp"] = ts, ["X-CIO-Signature"] = sig}, body)
  end
end
request = function()
  index = index %% #requests + 1
  return requests[index]
end
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ciolake-quick-"))
    rng = random.Random(1)
    keys = schema_keys()
    now = int(time.time())
    lines = []
    for i in range(args.events):
        event = sample_event(schema_by_name(keys[i % len(keys)][0]), rng=rng, timestamp=now)
        body = json.dumps(event, separators=(",", ":"))
        lines.append(f"{now}\t{sign(body.encode(), TEST_KEY, now)}\t{body}")
    (workdir / "requests.tsv").write_text("\n".join(lines) + "\n")
    (workdir / "load.lua").write_text(LUA % (workdir / "requests.tsv"))
    server = start_server(workdir / "data")
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
             "-s", str(workdir / "load.lua"), server.url],
            capture_output=True, text=True, check=True,
        ).stdout
        wait_until_committed(server, timeout=120)
    finally:
        server.stop()
    print(out)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    print(f"answered/s: {rate:.0f} (non-2xx: {non2xx.group(1) if non2xx else 0})")
    for summary in summarize(str(workdir / "data" / "tables")):
        print(f"{summary.name:16} rows={summary.rows:>8} commits={summary.version:>4} files={summary.files:>5}")
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
