"""Speed under load: the demo's workload alone and beside one competing CPU-bound process.

Run: ``python benchmarks/load.py`` (prints a table of wall times and slow-down ratios).

Each cell is a fresh process sampling ``ring * bar`` (shipped energy models) with annealed HMC
and reverse diffusion at the demo's batch, with torch's default thread count (2 on a 2-core
machine) unless the row says otherwise. Rows: the OpenMP environment of the process —
recompose's default (``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep), torch's own default
(variables unset: libgomp spins ``GOMP_SPINCOUNT`` = 300,000 times, then sleeps), always
spinning (``ACTIVE``), a short spin, and one thread. The competitor is a Python busy loop,
started before the timed process and killed after it. Target: beside one competing process on
2 cores, at most 2.5× the time alone.
"""

import os
import subprocess
import sys
import time

WORKLOAD = r"""
import time, recompose as rc
A, B = rc.pretrained("ring"), rc.pretrained("bar")
start = time.perf_counter()
rc.sample(A * B, 500, "hmc", num_levels=20, num_steps=5, seed=0)
rc.sample(A * B, 500, "reverse", num_levels=50, seed=0)
print(time.perf_counter() - start)
"""
BUSY = "while True: pass"


ROWS = {  # label -> OpenMP environment of the timed process (None: unset)
    "OMP_WAIT_POLICY=PASSIVE (recompose's default)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "unset (torch's default)": {"OMP_WAIT_POLICY": None},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "GOMP_SPINCOUNT=10000": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"},
    "OMP_NUM_THREADS=1": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
}


def timed(settings: dict, competitor: bool) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env |= {k: v for k, v in settings.items() if v is not None}
    if settings.get("OMP_WAIT_POLICY", "") is None:  # recompose sets PASSIVE only if unset:
        env["OMP_WAIT_POLICY"] = ""  # an empty value is "set" for it and ignored by libgomp
    other = subprocess.Popen([sys.executable, "-c", BUSY]) if competitor else None
    try:
        time.sleep(0.5 if competitor else 0)
        out = subprocess.run([sys.executable, "-c", WORKLOAD], env=env, capture_output=True,
                             text=True, check=True)
        return float(out.stdout.split()[-1])
    finally:
        if other is not None:
            other.kill()
            other.wait()


def main() -> None:
    rows = ["| OpenMP setting | alone (s) | beside 1 busy process (s) | slow-down | "
            "alone vs recompose's default |", "|---|---|---|---|---|"]
    base = None
    for label, settings in ROWS.items():
        alone = min(timed(settings, False) for _ in range(2))
        loaded = min(timed(settings, True) for _ in range(2))
        base = base or alone
        rows.append(f"| {label} | {alone:.1f} | {loaded:.1f} | {loaded / alone:.2f}× | "
                    f"{alone / base:.2f} |")
    print(f"{os.cpu_count()} cores; ring * bar, 500 chains: HMC T = 20, K = 5 + reverse T = 50")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
